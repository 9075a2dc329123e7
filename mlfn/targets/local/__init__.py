"""The embedded local target: an OpenWhisk-compatible controller on 127.0.0.1:3233 that runs
actions as Docker containers on this machine (`mlfn local up`).

It speaks OpenWhisk's REST API with OpenWhisk standalone's well-known guest key, so `mlfn
deploy --target local` uses the same OpenWhisk target code as a real OpenWhisk (target.py),
and `wsk` (with `wsk property set --apihost http://127.0.0.1:3233 --auth <guest key>`) works
unchanged.

    daemon.py      up / down / status of the controller process (mlfn local ...)
    api.py         the REST API (HTTP handler and server)
    controller.py  entities, invocation, activation records
    pool.py        the action containers
    store.py       entities and activations on disk
    target.py      the Target for --target local
"""
