"""The CPU's vectorised Philox4x32-10 against the Random123 known-answer vectors and a plain-Python
implementation, across the 2^32 carry of the counter."""

import random

import pytest

import numpy as np

import philox_reference
from genfast import _C

MASK = 0xFFFFFFFF


def philox4x32_10(counter: int, offset: int, key: int) -> list[int]:
    c = [counter & MASK, counter >> 32, offset & MASK, offset >> 32]
    k0, k1 = key & MASK, key >> 32
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & MASK, (p0 >> 32) ^ c[3] ^ k1, p0 & MASK]
        k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
    return c


@pytest.mark.parametrize("counter, offset, key, expected", [
    (0, 0, 0, [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    (2**64 - 1, 2**64 - 1, 2**64 - 1, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (0x85A308D3243F6A88, 0x0370734413198A2E, 0x299F31D0A4093822,
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
], ids=["zeros", "ones", "pi"])
def test_known_answers(counter, offset, key, expected):
    assert philox4x32_10(counter, offset, key) == expected
    assert philox_reference.philox4x32_10(np.array([counter], dtype=np.uint64), offset, key)[0].tolist() == expected
    assert [plane[0] for plane in _C._philox_words(counter, 1, key, offset)] == expected


def test_vector_lanes_match_the_scalar_definition():
    rng = random.Random(0)
    for first in [0, 2**32 - 5, 2**32 - 17, rng.getrandbits(64) >> 1]:
        groups = rng.randrange(1, 70)
        seed, offset = rng.getrandbits(64), rng.getrandbits(64)
        planes = _C._philox_words(first, groups, seed, offset)
        for j in range(groups):
            assert [planes[k][j] for k in range(4)] == philox4x32_10(first + j, offset, seed)
