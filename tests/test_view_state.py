"""The view-state codec of the URL (dashboard.view_state): validated, canonical, reversible."""
from __future__ import annotations

import pytest

from dashboard import view_state as V


def test_round_trip_of_every_parameter():
    state = {"dataset": "demo", "k": 3, "color": "time", "times": [0, 4, 7], "time": 2, "map": 17,
             "sel": [3, 4, 5, 17, 20, 21], "target": 9, "panels": ["rate", "viscosity"], "bg": False,
             "compare": ["a", "b"], "view": "timeline"}
    text = V.serialise(state)
    assert text == ("?dataset=demo&k=3&color=time&times=0,4,7&time=2&map=17&sel=3-5,17,20-21&target=9"
                    "&panels=rate,viscosity&bg=0&compare=a,b&view=timeline")
    assert V.parse(text) == state
    assert V.canonical(text) == text


@pytest.mark.parametrize("query", ["?k=1", "?k=65", "?k=banana", "?k=HDBSCAN-abcdef", "?times=1,x", "?times=" + ",".join(
    map(str, range(9))), "?map=-1", "?map=1e9", "?sel=9-2", "?sel=a", "?bg=7", "?color=%3Cscript%3E",
    "?dataset=../etc", "?compare=a,../b", "?target=", "?unknown=1"])
def test_bad_values_are_dropped(query):
    assert V.parse(query) == {}


def test_result_ids_explicit_empty_times_and_updates():
    assert V.parse("?k=hdbscan-3f2a9c1b")["k"] == "hdbscan-3f2a9c1b"
    assert V.parse("?times=none") == {"times": []}
    assert V.update("?dataset=demo&k=3", k=None, times=[]) == "?dataset=demo&times=none"
    assert V.update("?dataset=demo", map=4) == "?dataset=demo&map=4"
    with pytest.raises(KeyError):
        V.update("", colour="time")
    assert V.shared("?dataset=x&k=3&map=4&sel=1-9&color=time", "demo") == {"dataset": "demo", "k": 3, "color": "time"}
    assert V.shared("?compare=a,b&map=4", None) == {"compare": ["a", "b"]}  # /compare's list survives a visit elsewhere


def test_ranges_and_range_checks():
    assert V.encode_ranges([5, 3, 4, 17, 4]) == "3-5,17"
    assert V.decode_ranges("3-5,17") == [3, 4, 5, 17]
    assert V.decode_ranges("0-200000") is None  # a link cannot ask for unbounded work
    assert V.index_or_none("7", 8) == 7 and V.index_or_none(8, 8) is None and V.index_or_none(None, 8) is None
    assert V.indices_below([3, "x", 99, 3, 1], 10, limit=3) == [3, 1]
    # a selection too long for a link is left out of it, not truncated silently
    assert "sel" not in V.serialise({"sel": list(range(0, 4000, 2))})
