"""The weighted pick of OpenWhisk alias conductors (mlfn_runtime.router) and the
generated router action that names it (templates/openwhisk/router.py.j2)."""
import collections
import json
import random
from pathlib import Path

import jinja2
import pytest

from mlfn_runtime.router import STATE_KEY, conduct, pick

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "openwhisk"


def test_pick_follows_weights():
    rng = random.Random(7)
    n = 5000
    share = sum(pick([("v1", 80), ("v2", 20)], rng) == "v2" for _ in range(n)) / n
    assert abs(share - 0.2) < 0.03
    assert {pick([("v5", 100)], rng) for _ in range(50)} == {"v5"}
    assert {pick([("v1", 0), ("v2", 100)], rng) for _ in range(200)} == {"v2"}  # weight 0: never


def test_pick_refuses_weights_that_do_not_sum_to_100():
    with pytest.raises(ValueError, match="sum to 90, not 100"):
        for seed in range(200):  # some draw lands in the missing 10
            pick([("v1", 50), ("v2", 40)], random.Random(seed))


def test_conduct_picks_then_passes_the_result_through():
    rng = random.Random(3)
    step = conduct({"image": "x"}, [("/ns/fn/v1", 100)], rng)
    assert step == {"action": "/ns/fn/v1", "params": {"image": "x"}, "state": {STATE_KEY: 1}}
    assert conduct({"predictions": [1], STATE_KEY: 1}, [("/ns/fn/v1", 100)]) == {"params": {"predictions": [1]}}
    assert conduct({"error": "bad image", STATE_KEY: 1}, [("/ns/fn/v1", 100)]) == {"error": "bad image"}
    assert "mlfn router: the route weights sum to 0" in conduct({}, [("/ns/fn/v1", 0)])["error"]


def test_the_router_template_runs_conduct_with_its_routes():
    routes = [["/_/fn/v1", 80], ["/_/fn/v2", 20]]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), keep_trailing_newline=True)
    code = env.get_template("router.py.j2").render(function="fn", alias="canary", weights_text="v1=80 v2=20",
                                                   routes_json=json.dumps(routes))
    assert "def pick" not in code and "randrange" not in code  # the logic is the runtime's
    scope: dict = {}
    exec(compile(code, "router", "exec"), scope)
    random.seed(11)
    counts = collections.Counter(scope["main"]({"i": i})["action"] for i in range(2000))
    assert set(counts) == {"/_/fn/v1", "/_/fn/v2"} and 1500 < counts["/_/fn/v1"] < 1700
