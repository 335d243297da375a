"""``quant_core/native/frames_dot.c`` (``bars.exact_dot``): exact per-group sums of int64
products, held to Python's int arithmetic, including sums that leave 128 bits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.bars import exact_dot
from quant_core.native.frames_dot import group_dot

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
EXTREMES = st.sampled_from([-(2**63), 2**63 - 1, -(2**63) + 1, 0, 1, -1])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.one_of(INT64, EXTREMES), st.one_of(INT64, EXTREMES)), max_size=60),
    st.lists(st.integers(0, 60), max_size=6),
)
def test_group_sums_equal_python_ints(pairs, cuts) -> None:
    a = np.array([x for x, _ in pairs], dtype=np.int64)
    b = np.array([y for _, y in pairs], dtype=np.int64)
    firsts = sorted({0, *(c for c in cuts if c < len(pairs))}) if pairs else []
    bounds = [*firsts, len(pairs)]
    want = [sum(x * y for x, y in pairs[lo:hi]) for lo, hi in itertools.pairwise(bounds)]
    assert exact_dot(a, b, np.array(firsts, dtype=np.int64)) == want


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_sums_beyond_128_bits(value: int) -> None:
    """Ten thousand products of 2**126 overflow a 128-bit sum many times over."""
    a = np.full(10_000, value, dtype=np.int64)
    assert exact_dot(a, a, np.array([0, 3], dtype=np.int64)) == [
        3 * value * value,
        9_997 * value * value,
    ]


def test_bad_arguments_raise() -> None:
    a = np.arange(4, dtype=np.int64)
    with pytest.raises(ValueError, match="rows"):
        group_dot(a, a[:3].copy(), np.array([0], dtype=np.int64))
    with pytest.raises(ValueError, match="firsts"):
        group_dot(a, a, np.array([0, 5], dtype=np.int64))
    with pytest.raises(ValueError, match="firsts"):
        group_dot(a, a, np.array([1], dtype=np.int64))
    with pytest.raises(ValueError, match="firsts"):
        group_dot(a, a, np.array([0, 3, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="items of 8 bytes"):
        group_dot(a.astype(np.int32), a.astype(np.int32), np.array([0], dtype=np.int64))
