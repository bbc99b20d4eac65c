"""genfast's random draws written again, independently, in numpy: Philox4x32-10 (Salmon et al.,
SC'11), Box-Muller on float32 with the kernels' own polynomials for log, sin and cos (written from
the formulas documented in csrc/genfast_math.h, evaluated in the same order), and dropout's keep
rule. numpy's float32 arithmetic rounds every operation and never fuses, as the kernels, compiled
without FMA contraction, do: the tests compare bits."""

import numpy as np

MASK32 = np.uint64(0xFFFFFFFF)
F = np.float32


def philox4x32_10(counters: np.ndarray, offset: int, key: int) -> np.ndarray:
    """The four 32-bit words for each 64-bit counter in counters (with the high counter half
    `offset`) under `key`: an array of shape (len(counters), 4), uint32."""
    counters = counters.astype(np.uint64)
    c0, c1 = counters & MASK32, counters >> np.uint64(32)
    c2 = np.full_like(c0, offset & 0xFFFFFFFF)
    c3 = np.full_like(c0, offset >> 32)
    k0, k1 = key & 0xFFFFFFFF, key >> 32
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & MASK32,
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & MASK32)
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def words(n: int, seed: int, offset: int) -> np.ndarray:
    """Element i's Philox word: word i % 4 of counter i // 4."""
    return philox4x32_10(np.arange((n + 3) // 4), offset, seed).reshape(-1)[:n]


def _bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint32)


def _float(u: np.ndarray) -> np.ndarray:
    return u.astype(np.uint32).view(np.float32)


def log_float32(x: np.ndarray) -> np.ndarray:
    """log(x), x in (0, 1]: x 2^23 = 2^e (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)), then
    e ln2_hi + (log1p(f) + e ln2_lo) with e less 23, log1p(f) = f - f^2/2 + f^3 P(f), P of degree 6
    (Estrin)."""
    sqrt_half = np.uint32(0x3F3504F3)
    shifted = (_bits(x * F(8388608.0)) - sqrt_half).view(np.int32)
    e = ((shifted >> 23) - 23).astype(np.float32)
    f = _float((shifted.view(np.uint32) & np.uint32(0x007FFFFF)) + sqrt_half) - F(1)
    f2 = f * f
    f4 = f2 * f2
    p01 = F(0.3333391077554092) + f * F(-0.2500133703811901)
    p23 = F(0.1996306203985553) + f * F(-0.16577585098801645)
    p45 = F(0.14914789008447227) + f * F(-0.14267484995439386)
    p = (p01 + f2 * p23) + f4 * (p45 + f2 * F(0.08700365408392521))
    log1p_f = f + f2 * (f * p - F(0.5))
    return e * F(0.693359375) + (log1p_f + e * F(-2.12194440e-4))


def sincos_2pi(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sin and cos of 2 pi u, u in [0, 1): quadrant q of 4u, then Taylor series of a = (4u - q) pi/2."""
    magic = F(12582912.0)
    t = F(4) * u
    q = (t + magic) - magic
    a = (t - q) * F(1.57079633)
    a2 = a * a
    s = a * (F(1) - a2 * (F(1) / F(6) - a2 * (F(1) / F(120) - a2 * (F(1) / F(5040) - a2 * (F(1) / F(362880))))))
    c = F(1) - a2 * (F(1) / F(2) - a2 * (F(1) / F(24) - a2 * (F(1) / F(720) - a2 * (
        F(1) / F(40320) - a2 * (F(1) / F(3628800))))))
    quadrant = q.astype(np.int32) & 3
    sin = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [s, c, -s], -c)
    cos = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [c, -s, -c], s)
    return sin, cos


def normals(n: int, seed: int, offset: int) -> np.ndarray:
    """genfast's eps for n elements: Box-Muller on words (0, 1) and (2, 3) of each counter."""
    w = philox4x32_10(np.arange((n + 3) // 4), offset, seed)
    out = np.empty((len(w), 4), dtype=np.float32)
    for first in (0, 2):
        u1 = ((w[:, first] >> 8) + np.uint32(1)).astype(np.float32) * F(2.0**-24)  # (0, 1]
        u2 = (w[:, first + 1] >> 8).astype(np.float32) * F(2.0**-24)                # [0, 1)
        radius = np.sqrt(F(-2) * log_float32(u1))
        sin, cos = sincos_2pi(u2)
        out[:, first], out[:, first + 1] = radius * cos, radius * sin
    return out.reshape(-1)[:n]


def keep_mask(n: int, p: float, seed: int, offset: int) -> np.ndarray:
    """Dropout keeps element i when the top 24 bits of its word are below round((1 - p) 2^24)."""
    return (words(n, seed, offset) >> 8) < round((1.0 - p) * (1 << 24))
