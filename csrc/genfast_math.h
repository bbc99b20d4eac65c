// Per-element math shared by the CPU and CUDA kernels.
//
// Everything here is branch-free (selects, not branches) so GCC vectorises the CPU loops without
// -ffast-math, and uses only +, -, *, /, sqrt and bit operations so that, compiled without FMA
// contraction (-ffp-contract=off, nvcc -fmad=false), CPU and GPU produce the same bits.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>

#if defined(__CUDACC__)
#define GF_HD __host__ __device__ __forceinline__
#else
#define GF_HD inline __attribute__((always_inline))
#endif

namespace gf {

// ---------------------------------------------------------------------------------------------
// Bit casts
GF_HD uint32_t bits_of(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

GF_HD float float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

GF_HD float f32_inf() { return float_of(0x7f800000u); }
GF_HD float f32_nan() { return float_of(0x7fc00000u); }

// ---------------------------------------------------------------------------------------------
// Storage types. Half and bfloat16 are converted with our own round-to-nearest-even code on both
// devices, so CPU and GPU agree bit for bit.
struct half_t { uint16_t bits; };
struct bfloat16_t { uint16_t bits; };

template <class S> struct compute_type { using type = float; };
template <> struct compute_type<double> { using type = double; };
template <class S> using compute_t = typename compute_type<S>::type;

GF_HD float to_compute(float x) { return x; }
GF_HD double to_compute(double x) { return x; }

GF_HD float to_compute(half_t h) {
  // Integer work only (no float subnormals, so flush-to-zero modes cannot change the result).
  const uint32_t sign = (uint32_t(h.bits) & 0x8000u) << 16;
  const uint32_t magnitude = uint32_t(h.bits) & 0x7fffu;
  // Normal: rebias the exponent by 127 - 15. Subnormal m * 2^-24: (0.5 + m * 2^-24) - 0.5, exact.
  float value = float_of((magnitude << 13) + (112u << 23));
  value = magnitude < 0x0400u ? float_of(0x3f000000u | magnitude) - 0.5f : value;
  value = magnitude >= 0x7c00u ? float_of((magnitude << 13) | 0x7f800000u) : value;
  return float_of(bits_of(value) | sign);
}

GF_HD float to_compute(bfloat16_t b) { return float_of(uint32_t(b.bits) << 16); }

template <class S> GF_HD S from_compute(compute_t<S> v);

template <> GF_HD float from_compute<float>(float v) { return v; }
template <> GF_HD double from_compute<double>(double v) { return v; }

template <> GF_HD half_t from_compute<half_t>(float v) {
  const uint32_t x = bits_of(v);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  // Normal range: rebias the exponent and round the 13 dropped bits to nearest even.
  const uint32_t rebiased = a - (112u << 23);
  const uint32_t normal = (rebiased + 0x0fffu + ((rebiased >> 13) & 1u)) >> 13;
  // Below 2^-14 the result is subnormal: adding 0.5 makes the FPU round to a multiple of 2^-24.
  const uint32_t subnormal = bits_of(float_of(a) + 0.5f) - 0x3f000000u;
  uint32_t h = a < 0x38800000u ? subnormal : normal;
  h = a >= 0x477ff000u ? 0x7c00u : h;                                     // overflow to inf
  h = a > 0x7f800000u ? (0x7e00u | ((a >> 13) & 0x3ffu)) : h;             // NaN stays NaN
  return half_t{uint16_t(h | sign)};
}

template <> GF_HD bfloat16_t from_compute<bfloat16_t>(float v) {
  const uint32_t x = bits_of(v);
  const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  const uint32_t nan = (x >> 16) | 0x0040u;
  return bfloat16_t{uint16_t((x & 0x7fffffffu) > 0x7f800000u ? nan : rounded)};
}

// ---------------------------------------------------------------------------------------------
// Elementary functions. float versions are our own polynomials; double versions use the
// platform's libm (for validation and gradcheck, not the hot path), so float64 results are not
// guaranteed bit-identical between CPU and CUDA.
constexpr float kLn2Hi = 0.693359375f;        // few mantissa bits: e * kLn2Hi is exact
constexpr float kLn2Lo = -2.12194440e-4f;     // ln 2 - kLn2Hi

// log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1]: f - f^2/2 + f^3 P(f), P a degree-7 polynomial
// fitted (least squares, iteratively reweighted towards minimax) to relative error 7e-9.
// P is evaluated by Estrin's scheme: a dependency chain of 6 operations instead of Horner's 14.
GF_HD float log1p_reduced(float f) {
  const float f2 = f * f, f4 = f2 * f2;
  const float p01 = 0.333333108617939f + f * -0.2500080166371401f;
  const float p23 = 0.20002493680018862f + f * -0.16624886338227585f;
  const float p45 = 0.14179159493105734f + f * -0.1312523840980686f;
  const float p67 = 0.12886477377265262f + f * -0.07867769150945725f;
  const float p = (p01 + f2 * p23) + f4 * (p45 + f2 * p67);
  return f + f2 * (f * p - 0.5f);
}

// Splits a positive x (subnormals included) into 2^e * (1 + f), 1 + f in [sqrt(1/2), sqrt(2)).
// Subtracting the bits of sqrt(1/2) makes the exponent field carry exactly at sqrt(2).
struct Reduced { float e, f; };
GF_HD Reduced reduce_log_argument(float x) {
  constexpr uint32_t kSqrtHalfBits = 0x3f3504f3u;
  const bool tiny = x < 1.17549435e-38f;  // scaled by 2^23 so that the exponent field is exact
  const int32_t shifted = int32_t(bits_of(tiny ? x * 8388608.0f : x) - kSqrtHalfBits);
  const int32_t exponent = (shifted >> 23) - (tiny ? 23 : 0);
  const float m = float_of(uint32_t(shifted & 0x007fffff) + kSqrtHalfBits);
  return Reduced{float(exponent), m - 1.0f};
}

GF_HD float log_reduced(Reduced r) { return r.e * kLn2Hi + (log1p_reduced(r.f) + r.e * kLn2Lo); }

// The logs below have no special-value selects: their callers' arguments are in range by
// construction or checked once by the caller. A zero argument of the log gives
// a value below -100 (what BCE's clamp needs); NaN gives an unspecified finite value.

// log(x) for x in [0, 1].
GF_HD float log_unit_interval(float x) { return log_reduced(reduce_log_argument(x)); }

// log(1 + d) for d >= -1. Where 1 + d lands in [sqrt(1/2), sqrt(2)), d itself is the exact
// reduced argument, so the rounding of 1 + d never enters; elsewhere |log(1 + d)| >= 0.34 and
// that rounding is negligible.
GF_HD float log_one_plus(float d) {
  Reduced r = reduce_log_argument(1.0f + d);
  r.f = r.e == 0.0f ? d : r.f;
  return log_reduced(r);
}

// log(1 - x) for x in [0, 1].
GF_HD float log1m_unit_interval(float x) { return log_one_plus(-x); }

GF_HD float exp_(float x) {
  constexpr float kLog2e = 1.44269504f;
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float clamped = x > 89.0f ? 89.0f : (x < -104.0f ? -104.0f : (x != x ? 0.0f : x));
  const float n = (clamped * kLog2e + kRoundMagic) - kRoundMagic;
  const float r = (clamped - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ln2/2
  // e^r by its Taylor series to r^7 (|r| <= ln2/2: truncation 5e-9), in Estrin's scheme.
  const float r2 = r * r, r4 = r2 * r2;
  const float p = ((1.0f + r) + r2 * (1.0f / 2 + r * (1.0f / 6))) +
                  r4 * ((1.0f / 24 + r * (1.0f / 120)) + r2 * (1.0f / 720 + r * (1.0f / 5040)));
  // 2^n in two factors keeps each in the normal range and rounds once into subnormals.
  const int32_t ni = int32_t(n);
  const int32_t half_n = ni / 2;
  const float scale_a = float_of(uint32_t(half_n + 127) << 23);
  const float scale_b = float_of(uint32_t(ni - half_n + 127) << 23);
  float result = (p * scale_a) * scale_b;
  result = x > 88.7228394f ? f32_inf() : result;
  result = x < -103.972084f ? 0.0f : result;
  result = x != x ? x : result;
  return result;
}

GF_HD double log_unit_interval(double x) { return ::log(x); }
GF_HD double log1m_unit_interval(double x) { return ::log1p(-x); }
GF_HD double log_one_plus(double x) { return ::log1p(x); }
GF_HD double exp_(double x) { return ::exp(x); }

// sin(2 pi u) and cos(2 pi u) for u in [0, 1), by quadrant reduction of 4u.
GF_HD void sincos_2pi(float u, float* sin_out, float* cos_out) {
  constexpr float kRoundMagic = 12582912.0f;
  const float t = 4.0f * u;
  const float q = (t + kRoundMagic) - kRoundMagic;
  const float a = (t - q) * 1.57079633f;  // in [-pi/4, pi/4]
  const float a2 = a * a;
  const float s = a * (1.0f - a2 * (1.0f / 6 - a2 * (1.0f / 120 - a2 * (1.0f / 5040 -
                  a2 * (1.0f / 362880)))));
  const float c = 1.0f - a2 * (1.0f / 2 - a2 * (1.0f / 24 - a2 * (1.0f / 720 - a2 * (1.0f / 40320 -
                  a2 * (1.0f / 3628800)))));
  const int32_t quadrant = int32_t(q) & 3;
  const float sq = quadrant == 0 ? s : (quadrant == 1 ? c : (quadrant == 2 ? -s : -c));
  const float cq = quadrant == 0 ? c : (quadrant == 1 ? -s : (quadrant == 2 ? -c : s));
  *sin_out = sq;
  *cos_out = cq;
}

GF_HD float sqrt_(float x) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(x);
#else
  return std::sqrt(x);
#endif
}

// ---------------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Element i of a stream draws from counter (i / 4, offset) with key seed, word i % 4.
struct Philox4 { uint32_t v[4]; };

GF_HD Philox4 philox4x32_10(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32);
  uint32_t c2 = uint32_t(counter_hi), c3 = uint32_t(counter_hi >> 32);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c1 = uint32_t(p1);
    c3 = uint32_t(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Four standard normals from one Philox block: Box-Muller on words (0, 1) and (2, 3).
struct Normal4 { float v[4]; };

GF_HD void box_muller(uint32_t a, uint32_t b, float* first, float* second) {
  constexpr float k2pow24inv = 5.96046448e-08f;  // 2^-24
  const float u1 = float((a >> 8) + 1u) * k2pow24inv;  // (0, 1]: log stays finite
  const float u2 = float(b >> 8) * k2pow24inv;         // [0, 1)
  const float radius = sqrt_(-2.0f * log_unit_interval(u1));
  float s, c;
  sincos_2pi(u2, &s, &c);
  *first = radius * c;
  *second = radius * s;
}

// Elements 4g .. 4g + 3 of a stream take these normals of counter g's words (w0, w1, w2, w3).
GF_HD void normals_of_words(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3, float* out4) {
  box_muller(w0, w1, &out4[0], &out4[1]);
  box_muller(w2, w3, &out4[2], &out4[3]);
}

GF_HD Normal4 normal4(uint64_t group, uint64_t seed, uint64_t offset) {
  const Philox4 r = philox4x32_10(group, offset, seed);
  Normal4 n;
  normals_of_words(r.v[0], r.v[1], r.v[2], r.v[3], n.v);
  return n;
}

// The reparameterisation z = mu + eps * exp(logvar / 2) and its logvar-gradient, both maps of
// (a, logvar, eps) with a = mu or the incoming gradient; eps is regenerated, never stored.
struct ReparameteriseForward {
  template <class T> GF_HD static T apply(T mu, T logvar, T eps) { return mu + eps * exp_(T(0.5) * logvar); }
};
struct ReparameteriseGradLogvar {
  template <class T> GF_HD static T apply(T grad_z, T logvar, T eps) {
    return grad_z * T(0.5) * eps * exp_(T(0.5) * logvar);
  }
};

// Dropout keeps element i when the top 24 bits of its Philox word fall below keep_threshold,
// keep_threshold = round((1 - p) * 2^24), computed once on the host.
GF_HD bool keep(uint32_t philox_word, uint32_t keep_threshold) { return (philox_word >> 8) < keep_threshold; }

// x * m with m = scale = 1/(1-p) where kept and 0 where dropped (NaN * 0 stays NaN, as x * mask).
template <class T> GF_HD T dropout_apply(T x, bool kept, T scale) { return x * (kept ? scale : T(0)); }

// ---------------------------------------------------------------------------------------------
// Loss terms: loss(x, y) for one element, its partial derivatives, and loss_and_grad_x, which
// computes the two together sharing their common work.
template <class T> GF_HD T clamp_log(T v) { return v < T(-100) ? T(-100) : v; }  // NaN passes

// torch.nn.functional.binary_cross_entropy: logs clamped at -100, gradient denominator at 1e-12.
// Where torch raises (a probability or target outside [0, 1]) the loss and both gradients are NaN,
// as they are for NaN inputs.
struct BceTerm {
  template <class T> GF_HD static bool in_domain(T p, T t) {
    return (p >= T(0)) & (p <= T(1)) & (t >= T(0)) & (t <= T(1));
  }
  // Values are computed before the domain select, never inside it: a call in a ?: operand is
  // evaluated conditionally, which stops the CPU loops from vectorising.
  template <class T> GF_HD static T unchecked_loss(T p, T t) {
    return (t - T(1)) * clamp_log(log1m_unit_interval(p)) - t * clamp_log(log_unit_interval(p));
  }
  template <class T> GF_HD static T unchecked_grad_x(T p, T t) {
    const T denom = (T(1) - p) * p;
    return (p - t) / (denom < T(1e-12) ? T(1e-12) : denom);
  }
  template <class T> GF_HD static T loss(T p, T t) {
    const T loss = unchecked_loss(p, t);
    return in_domain(p, t) ? loss : T(f32_nan());
  }
  template <class T> GF_HD static T grad_x(T p, T t) {
    const T grad = unchecked_grad_x(p, t);
    return in_domain(p, t) ? grad : T(f32_nan());
  }
  template <class T> GF_HD static T grad_y(T p, T t) {
    const T grad = clamp_log(log1m_unit_interval(p)) - clamp_log(log_unit_interval(p));
    return in_domain(p, t) ? grad : T(f32_nan());
  }
  // One domain test for both.
  template <class T> GF_HD static void loss_and_grad_x(T p, T t, T* loss_out, T* grad_out) {
    const bool inside = in_domain(p, t);
    const T loss = unchecked_loss(p, t);
    const T grad = unchecked_grad_x(p, t);
    *loss_out = inside ? loss : T(f32_nan());
    *grad_out = inside ? grad : T(f32_nan());
  }
};

// Binary cross-entropy on logits: (1 - t) x + softplus(-x), softplus(-x) = max(-x, 0) + log1p(e),
// e = exp(-|x|); d/dx = sigmoid(x) - t with sigmoid(x) = (x < 0 ? e : 1) / (1 + e).
struct BceLogitsTerm {
  template <class T> GF_HD static T exp_minus_abs(T x) { return exp_(x < T(0) ? x : -x); }
  template <class T> GF_HD static T loss_given(T x, T t, T e) {
    return (T(1) - t) * x + (x < T(0) ? -x : T(0)) + log_one_plus(e);  // NaN x: NaN from (1 - t) x
  }
  template <class T> GF_HD static T grad_given(T x, T t, T e) {
    return (x < T(0) ? e : T(1)) / (T(1) + e) - t;
  }
  template <class T> GF_HD static T loss(T x, T t) { return loss_given(x, t, exp_minus_abs(x)); }
  template <class T> GF_HD static T grad_x(T x, T t) { return grad_given(x, t, exp_minus_abs(x)); }
  template <class T> GF_HD static T grad_y(T x, T) { return -x; }
  template <class T> GF_HD static void loss_and_grad_x(T x, T t, T* loss_out, T* grad_out) {
    const T e = exp_minus_abs(x);
    *loss_out = loss_given(x, t, e);
    *grad_out = grad_given(x, t, e);
  }
};

// KL(N(mu, e^logvar) || N(0, 1)) per element: (e^logvar - logvar - 1 + mu^2) / 2.
struct KlTerm {
  template <class T> GF_HD static T loss(T mu, T logvar) {
    return T(0.5) * (exp_(logvar) - logvar - T(1) + mu * mu);
  }
  template <class T> GF_HD static T grad_x(T mu, T) { return mu; }
  template <class T> GF_HD static T grad_y(T, T logvar) { return T(0.5) * (exp_(logvar) - T(1)); }
  template <class T> GF_HD static void loss_and_grad_x(T mu, T logvar, T* loss_out, T* grad_out) {
    *loss_out = loss(mu, logvar);
    *grad_out = grad_x(mu, logvar);
  }
};

// An absent second segment.
struct NoTerm {
  template <class T> GF_HD static T loss(T, T) { return T(0); }
  template <class T> GF_HD static T grad_x(T, T) { return T(0); }
  template <class T> GF_HD static T grad_y(T, T) { return T(0); }
  template <class T> GF_HD static void loss_and_grad_x(T, T, T* loss_out, T* grad_out) {
    *loss_out = T(0);
    *grad_out = T(0);
  }
};

}  // namespace gf
