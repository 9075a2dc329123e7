"""The weighted pick of OpenWhisk alias conductors (mlfn_runtime.router)."""
import random

import pytest

from mlfn_runtime.router import STATE_KEY, conduct, pick

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
