"""``IdRuns`` fed as the aggregator feeds it (each bar's ids sorted, as arrays, mostly past every
run held: the append path) behaves as a set of the same ids."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.id_runs import IdRuns


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 50),
    st.lists(st.lists(st.integers(0, 4), max_size=20), max_size=8),
    st.lists(st.integers(-5, 120), max_size=10),
)
def test_sorted_array_updates_equal_a_set(start, steps, late) -> None:
    runs, plain = IdRuns(), set()
    at = start
    for gaps in steps:  # ascending ids with gaps of 0-3 (0: repeat the last id in the call)
        ids = []
        for gap in gaps:
            at += gap
            ids.append(at)
        runs.update(np.unique(np.array(ids, dtype=np.int64)))
        plain.update(ids)
    runs.update(np.array(late, dtype=np.int64))  # unsorted, overlapping: the merge path
    plain.update(late)
    probe = np.arange(-6, at + 8, dtype=np.int64)
    assert runs.contains_many(probe).tolist() == [int(x) in plain for x in probe]
    assert len(runs) == len(plain)
    assert all(int(h) + 1 < int(lo) for h, lo in zip(runs.hi[:-1], runs.lo[1:], strict=True))
