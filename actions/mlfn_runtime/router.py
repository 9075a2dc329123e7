"""The weighted alias router of OpenWhisk: a conductor action whose code is
templates/openwhisk/router.py.j2, run by the function's own image (which holds this
package), so the template only names `conduct` and the routes.

A conductor runs in steps (OpenWhisk's conductor actions): step 1 picks one version by
weight and returns `{"action", "params", "state"}`, so the platform runs that version with
the caller's parameters; step 2 gets the version's result back (with the state) and passes
it through as `{"params": result}`, or `{"error": ...}` when the version failed."""
from __future__ import annotations

import random
from typing import Iterable, Optional

STATE_KEY = "$mlfn_router"


def pick(routes: Iterable, rng: Optional[random.Random] = None) -> str:
    """One target of `routes` ([(target, weight 0..100), ...] summing to 100), chosen with
    probability weight/100. ValueError when the weights do not sum to 100."""
    routes = list(routes)
    r = (rng or random).randrange(100)
    acc = 0
    for target, weight in routes:
        acc += weight
        if r < acc:
            return target
    raise ValueError(f"the route weights sum to {acc}, not 100: {routes}")


def conduct(args: dict, routes: Iterable, rng: Optional[random.Random] = None) -> dict:
    """One conductor step for `args` (what the platform passed the conductor action)."""
    if args.pop(STATE_KEY, None):
        if "error" in args:
            return {"error": args["error"]}
        return {"params": args}
    try:
        action = pick(routes, rng)
    except ValueError as e:
        return {"error": f"mlfn router: {e}"}
    return {"action": action, "params": args, "state": {STATE_KEY: 1}}
