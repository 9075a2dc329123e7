"""The weighted alias router of OpenWhisk: the alias is a conductor action of the
function's own image, initialized with the init parameter MLFN_ALIAS_ROUTES (the versions
and their weights); no code is sent, so code actions stay off.

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


ALIAS_ROUTES_ENV = "MLFN_ALIAS_ROUTES"


def parse_routes(text: str) -> list:
    """The routes of MLFN_ALIAS_ROUTES: a JSON object {"/namespace/package/action": weight},
    weights whole numbers 0..100 summing to 100 -> [(action, weight), ...].
    ValueError (one sentence) when it is not."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"{ALIAS_ROUTES_ENV} is not JSON; send an object like "
                         '{"/ns/fn/v1": 90, "/ns/fn/v2": 10}') from None
    if not isinstance(data, dict):
        raise ValueError(f"{ALIAS_ROUTES_ENV} must be a JSON object of action path to weight")
    return check_routes(list(data.items()))


def check_routes(routes: list) -> list:
    """`routes` as [(action path, weight)] after checking them (ValueError names the problem)."""
    if not routes:
        raise ValueError(f"{ALIAS_ROUTES_ENV} names no action")
    out = []
    for route in routes:
        if not (isinstance(route, (list, tuple)) and len(route) == 2):
            raise ValueError(f"{ALIAS_ROUTES_ENV}: {route!r} is not an (action, weight) pair")
        action, weight = route
        if not isinstance(action, str) or not action.startswith("/") or len(action) > 512:
            raise ValueError(f"{ALIAS_ROUTES_ENV}: {action!r} is not an action path like /namespace/package/action")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise ValueError(f"{ALIAS_ROUTES_ENV}: the weight of {action} must be a whole number 0..100, not {weight!r}")
        out.append((action, weight))
    total = sum(w for _, w in out)
    if total != 100:
        raise ValueError(f"{ALIAS_ROUTES_ENV}: the weights sum to {total}, not 100")
    return out
