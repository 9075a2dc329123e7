import pytest

from mlfn.traffic import TrafficError, parse_splits


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
