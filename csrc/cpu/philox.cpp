// Philox4x32-10 over runs of counters, one counter per SIMD lane (AVX2: 8, AVX-512: 16).
// mul_epu32 gives the 64-bit products of the even lanes, and of the odd lanes once shifted down;
// blending their halves back together gives each lane's high and low 32 bits.
#include "philox.h"

#include "../genfast_math.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GF_PHILOX_SIMD 1
#define GF_AVX2 __attribute__((target("avx2")))
#define GF_AVX512 __attribute__((target("avx512f")))
#endif

namespace gf::cpu {
namespace {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

void philox_scalar(uint64_t first, int begin, int groups, uint64_t seed, uint64_t offset, uint32_t* w0,
                   uint32_t* w1, uint32_t* w2, uint32_t* w3) {
  for (int j = begin; j < groups; ++j) {
    const Philox4 r = philox4x32_10(first + uint64_t(j), offset, seed);
    w0[j] = r.v[0];
    w1[j] = r.v[1];
    w2[j] = r.v[2];
    w3[j] = r.v[3];
  }
}

#if GF_PHILOX_SIMD
// The 32x32->64-bit products of every lane of a with m, as high and low 32-bit halves.
GF_AVX2 inline void mul_wide_avx2(__m256i a, __m256i m, __m256i* hi, __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(a, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}
GF_AVX2 inline __m256i carry_avx2(__m256i lo, __m256i base) {  // 1 where lo < base (unsigned)
  const __m256i sign = _mm256_set1_epi32(int(0x80000000u));
  const __m256i less = _mm256_cmpgt_epi32(_mm256_xor_si256(base, sign), _mm256_xor_si256(lo, sign));
  return _mm256_srli_epi32(less, 31);
}
GF_AVX2 inline __m256i xor3_avx2(__m256i a, __m256i b, __m256i c) {
  return _mm256_xor_si256(_mm256_xor_si256(a, b), c);
}
// AVX-512: the low halves in one multiplication, and a three-way XOR in one instruction.
GF_AVX512 inline void mul_wide_avx512(__m512i a, __m512i m, __m512i* hi, __m512i* lo) {
  const __m512i even = _mm512_mul_epu32(a, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  *lo = _mm512_mullo_epi32(a, m);
}
GF_AVX512 inline __m512i carry_avx512(__m512i lo, __m512i base) {
  return _mm512_maskz_set1_epi32(_mm512_cmplt_epu32_mask(lo, base), 1);
}
GF_AVX512 inline __m512i xor3_avx512(__m512i a, __m512i b, __m512i c) {
  return _mm512_ternarylogic_epi32(a, b, c, 0x96);
}

// The same body for both ISAs; P is the intrinsic prefix (_mm256 / _mm512), S the integer suffix.
// The round keys are the same for every lane and counter: computed once.
#define GF_PHILOX_LANES(V, LANES, P, S, LANE_INDEX, MUL_WIDE, CARRY, XOR3)                          \
  const V m0 = P##_set1_epi32(int(kM0)), m1 = P##_set1_epi32(int(kM1));                           \
  V round_k0[10], round_k1[10];                                                                   \
  for (int round = 0; round < 10; ++round) {                                                      \
    round_k0[round] = P##_set1_epi32(int(uint32_t(seed) + uint32_t(round) * kW0));                \
    round_k1[round] = P##_set1_epi32(int(uint32_t(seed >> 32) + uint32_t(round) * kW1));          \
  }                                                                                               \
  int j = 0;                                                                                      \
  for (; j + LANES <= groups; j += LANES) {                                                       \
    const uint64_t base = first + uint64_t(j);                                                    \
    const V base_lo = P##_set1_epi32(int(uint32_t(base)));                                        \
    V c0 = P##_add_epi32(base_lo, LANE_INDEX);                                                    \
    V c1 = P##_add_epi32(P##_set1_epi32(int(uint32_t(base >> 32))), CARRY(c0, base_lo));          \
    V c2 = P##_set1_epi32(int(uint32_t(offset))), c3 = P##_set1_epi32(int(uint32_t(offset >> 32))); \
    for (int round = 0; round < 10; ++round) {                                                    \
      V hi0, lo0, hi1, lo1;                                                                       \
      MUL_WIDE(c0, m0, &hi0, &lo0);                                                               \
      MUL_WIDE(c2, m1, &hi1, &lo1);                                                               \
      c0 = XOR3(hi1, c1, round_k0[round]);                                                        \
      c2 = XOR3(hi0, c3, round_k1[round]);                                                        \
      c1 = lo1;                                                                                   \
      c3 = lo0;                                                                                   \
    }                                                                                             \
    P##_storeu_##S(reinterpret_cast<V*>(w0 + j), c0);                                             \
    P##_storeu_##S(reinterpret_cast<V*>(w1 + j), c1);                                             \
    P##_storeu_##S(reinterpret_cast<V*>(w2 + j), c2);                                             \
    P##_storeu_##S(reinterpret_cast<V*>(w3 + j), c3);                                             \
  }                                                                                               \
  philox_scalar(first, j, groups, seed, offset, w0, w1, w2, w3);

GF_AVX2 void philox_avx2(uint64_t first, int groups, uint64_t seed, uint64_t offset, uint32_t* w0,
                         uint32_t* w1, uint32_t* w2, uint32_t* w3) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  GF_PHILOX_LANES(__m256i, 8, _mm256, si256, lanes, mul_wide_avx2, carry_avx2, xor3_avx2)
}

GF_AVX512 void philox_avx512(uint64_t first, int groups, uint64_t seed, uint64_t offset, uint32_t* w0,
                             uint32_t* w1, uint32_t* w2, uint32_t* w3) {
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  GF_PHILOX_LANES(__m512i, 16, _mm512, si512, lanes, mul_wide_avx512, carry_avx512, xor3_avx512)
}
#endif

}  // namespace

void philox_words(uint64_t first_group, int groups, uint64_t seed, uint64_t offset, uint32_t* word0,
                  uint32_t* word1, uint32_t* word2, uint32_t* word3) {
#if GF_PHILOX_SIMD
  static const int isa = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
  if (isa == 2) return philox_avx512(first_group, groups, seed, offset, word0, word1, word2, word3);
  if (isa == 1) return philox_avx2(first_group, groups, seed, offset, word0, word1, word2, word3);
#endif
  philox_scalar(first_group, 0, groups, seed, offset, word0, word1, word2, word3);
}

}  // namespace gf::cpu
