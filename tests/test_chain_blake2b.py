"""chain (#14): the C BLAKE2b-256 of the session log's hash chain equals hashlib's."""

from __future__ import annotations

import hashlib
import random

import pytest

from quant_core.native import chain


def reference(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def test_every_length_up_to_300_and_around_block_edges() -> None:
    rng = random.Random(14)
    lengths = [*range(301), *(128 * k + d for k in range(2, 10) for d in (-1, 0, 1))]
    for n in lengths:
        data = rng.randbytes(n)
        assert chain.blake2b256(data) == reference(data), n
        prev = rng.randbytes(32)
        assert chain.chain(prev, data) == reference(prev + data), n


def test_large_inputs_and_split_points() -> None:
    rng = random.Random(7)
    for n in (1 << 16, (1 << 20) + 77, 5_000_003):
        data = rng.randbytes(n)
        assert chain.blake2b256(data) == reference(data)
    data = rng.randbytes(1000)
    # chain(a, b) must not depend on where the bytes are split (block boundaries straddled)
    for cut in (0, 1, 31, 32, 127, 128, 129, 255, 256, 999, 1000):
        assert chain.chain(data[:cut], data[cut:]) == reference(data), cut


def test_known_vector_and_buffer_types() -> None:
    # RFC 7693 lists BLAKE2b-512("abc"); hashlib is the reference for the 256-bit variant
    assert chain.blake2b256(b"").hex() == (
        "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
    )
    assert chain.blake2b256(bytearray(b"abc")) == reference(b"abc")
    assert chain.blake2b256(memoryview(b"xabcx")[1:4]) == reference(b"abc")
    with pytest.raises(TypeError):
        chain.blake2b256("abc")
