"""``GapTracker.observe_many`` (runs of ids: live bursts, REST pages) against ``observe``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.gaps import GapTracker


def state(g: GapTracker) -> tuple:
    series = {k: (s.next_id, s.last_ts_ms, s.missing, s.holds) for k, s in g._series.items()}
    return series, g.duplicates, g.gaps_opened, g.ids_repaired


runs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=120),  # first id
        st.integers(min_value=1, max_value=40),  # length
        st.booleans(),  # consecutive, or shuffled
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=400, deadline=None)
@given(runs, st.randoms(use_true_random=False), st.booleans())
def test_observe_many_equals_observe(batches, rng, seeded) -> None:
    one, many = GapTracker(), GapTracker()
    if seeded:
        one.seed("BTCUSDT", "aggTrade", 30, 5)
        many.seed("BTCUSDT", "aggTrade", 30, 5)
    for first, length, ordered in batches:
        ids = list(range(first, first + length))
        if not ordered:
            rng.shuffle(ids)
        ts = [1000 + i * 7 for i in ids]
        expected_keep, expected_gaps = [], []
        for i, t in zip(ids, ts, strict=True):
            seen = one.observe("BTCUSDT", "aggTrade", i, t)
            expected_keep.append(seen != "dup")
            if seen not in ("new", "dup"):
                expected_gaps.append(seen)
        keep, gaps = many.observe_many(
            "BTCUSDT", "aggTrade", np.array(ids, dtype=np.int64), np.array(ts, dtype=np.int64)
        )
        got = [True] * len(ids) if keep is None else keep.tolist()
        assert got == expected_keep
        assert gaps == expected_gaps
        assert state(many) == state(one)
