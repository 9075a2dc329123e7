import random

import pytest

from mlfn.traffic import TrafficError, parse_splits, pick, validate_weights


def test_parse_with_remainder():
    assert parse_splits(["v3=90", "v4"]) == {"v3": 90, "v4": 10}
    assert list(parse_splits(["v10=50", "v2=50"])) == ["v2", "v10"]


@pytest.mark.parametrize(
    "items, fragment",
    [
        (["v1=90", "v2=20"], "sum to 110"),
        (["v1=50", "v1=50"], "twice"),
        (["v1", "v2"], "Only one version"),
        (["v1=ten"], "whole number"),
        (["one=100"], "not a version name"),
        (["v1=101", "v2=-1"], "0 to 100"),
        ([], "at least one"),
    ],
)
def test_invalid_splits(items, fragment):
    with pytest.raises(TrafficError, match=fragment):
        parse_splits(items)


def test_pick_follows_weights():
    rng = random.Random(7)
    weights = validate_weights({"v1": 80, "v2": 20})
    n = 5000
    share = sum(pick(weights, rng) == "v2" for _ in range(n)) / n
    assert abs(share - 0.2) < 0.03
    assert {pick({"v5": 100}, rng) for _ in range(50)} == {"v5"}
