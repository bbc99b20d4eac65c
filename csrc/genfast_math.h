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

// log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1]: f - f^2/2 + f^3 P(f), P a degree-6 polynomial
// fitted (least squares, iteratively reweighted towards minimax) to relative error 1.1e-7 in
// float32 arithmetic (1.2 units in the last place at worst).
// P is evaluated by Estrin's scheme: a dependency chain of 5 operations instead of Horner's 12.
GF_HD float log1p_reduced(float f) {
  const float f2 = f * f, f4 = f2 * f2;
  const float p01 = 0.3333391077554092f + f * -0.2500133703811901f;
  const float p23 = 0.1996306203985553f + f * -0.16577585098801645f;
  const float p45 = 0.14914789008447227f + f * -0.14267484995439386f;
  const float p = (p01 + f2 * p23) + f4 * (p45 + f2 * 0.08700365408392521f);
  return f + f2 * (f * p - 0.5f);
}

// Splits a positive normal x into 2^e * (1 + f), 1 + f in [sqrt(1/2), sqrt(2)). Subtracting the
// bits of sqrt(1/2) makes the exponent field carry exactly at sqrt(2).
struct Reduced { float e, f; };
GF_HD Reduced reduce_normal_log_argument(float x) {
  constexpr uint32_t kSqrtHalfBits = 0x3f3504f3u;
  const int32_t shifted = int32_t(bits_of(x) - kSqrtHalfBits);
  const float m = float_of(uint32_t(shifted & 0x007fffff) + kSqrtHalfBits);
  return Reduced{float(shifted >> 23), m - 1.0f};
}

// The same for x in [0, 1]: x * 2^23 is exact and never subnormal, and 0 gives e = -150.
GF_HD Reduced reduce_unit_interval_log_argument(float x) {
  Reduced r = reduce_normal_log_argument(x * 8388608.0f);
  r.e -= 23.0f;
  return r;
}

GF_HD float log_reduced(Reduced r) { return r.e * kLn2Hi + (log1p_reduced(r.f) + r.e * kLn2Lo); }

// The logs below have no special-value selects beyond what their callers need: arguments are in
// range by construction or checked once by the caller. NaN gives an unspecified value.

// log(x) for x in [0, 1]; log(0) gives about -104, below BCE's clamp at -100.
GF_HD float log_unit_interval(float x) { return log_reduced(reduce_unit_interval_log_argument(x)); }

// log(1 - x) for x in [0, 1]. Where 1 - x lands in [sqrt(1/2), sqrt(2)), -x itself is the exact
// reduced argument, so the rounding of 1 - x never enters; elsewhere |log(1 - x)| >= 0.34 and that
// rounding is negligible.
GF_HD float log1m_unit_interval(float x) {
  Reduced r = reduce_unit_interval_log_argument(1.0f - x);
  r.f = r.e == 0.0f ? -x : r.f;
  return log_reduced(r);
}

// log(1 + e) for e in [0, 1] (softplus's log1p(exp(-|x|))): 1 + e is in [1, 2], so the reduction
// needs no exponent: where 1 + e >= sqrt(2), log(1 + e) = ln 2 + log1p((e - 1) / 2).
GF_HD float log_one_plus_unit_interval(float e) {
  const bool halve = e > 0.41421356f;
  const float f = halve ? (e - 1.0f) * 0.5f : e;
  const float ln2_hi = halve ? kLn2Hi : 0.0f;
  const float ln2_lo = halve ? kLn2Lo : 0.0f;
  return ln2_hi + (log1p_reduced(f) + ln2_lo);
}

// e^x = 2^n e^r with n = round(x / ln 2), |r| <= ln 2 / 2.
struct ExpSplit { float n, r; };
GF_HD ExpSplit split_exp_argument(float x) {
  constexpr float kLog2e = 1.44269504f;
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * kLog2e + kRoundMagic) - kRoundMagic;
  return ExpSplit{n, (x - n * kLn2Hi) - n * kLn2Lo};
}

// e^r for |r| <= ln 2 / 2: 1 + r + r^2 Q(r), Q of degree 4 fitted like log1p_reduced's P to
// 1.1 units in the last place in float32 arithmetic, in Estrin's scheme.
GF_HD float exp_reduced(float r) {
  const float r2 = r * r;
  const float q01 = 0.49999993451405356f + r * 0.1666652068634461f;
  const float q23 = 0.04166838741718076f + r * 0.008368710183291946f;
  const float q = q01 + r2 * (q23 + r2 * 0.0013814611134016063f);
  return (1.0f + r) + r2 * q;
}

// e^x for x <= 0 (or NaN, returned as is). 2^n >= 2^-150 is applied as 2^(n + 64) * 2^-64: the
// first product is exact and the second rounds once into the subnormals, like the general exp_.
GF_HD float exp_nonpositive(float x) {
  const float clamped = x >= -104.0f ? x : -104.0f;  // NaN: -104, replaced below
  const ExpSplit s = split_exp_argument(clamped);
  const float scale = float_of(uint32_t(int32_t(s.n) + 127 + 64) << 23);
  const float result = (exp_reduced(s.r) * scale) * 5.42101086e-20f;  // 2^-64
  return x != x ? x : result;
}

GF_HD float exp_(float x) {
  const float clamped = x > 89.0f ? 89.0f : (x < -104.0f ? -104.0f : (x != x ? 0.0f : x));
  const ExpSplit s = split_exp_argument(clamped);
  const float p = exp_reduced(s.r);
  // 2^n in two factors keeps each in the normal range and rounds once into subnormals.
  const int32_t ni = int32_t(s.n);
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
GF_HD double log_one_plus_unit_interval(double x) { return ::log1p(x); }
GF_HD double exp_(double x) { return ::exp(x); }
GF_HD double exp_nonpositive(double x) { return ::exp(x); }

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

// The reparameterisation z = mu + s, s = eps * exp(logvar / 2). dz/dlogvar = s / 2: the forward
// pass keeps it (in the compute type) for a plain backward, and a backward that autograd
// differentiates further regenerates eps instead, which is never stored.
template <class T> GF_HD T reparameterise_noise(T logvar, T eps) { return eps * exp_(T(0.5) * logvar); }
template <class T> GF_HD T reparameterise_grad_logvar(T grad_z, T logvar, T eps) {
  return grad_z * T(0.5) * eps * exp_(T(0.5) * logvar);
}

// Dropout keeps element i when the top 24 bits of its Philox word fall below keep_threshold,
// keep_threshold = round((1 - p) * 2^24), computed once on the host.
GF_HD bool keep(uint32_t philox_word, uint32_t keep_threshold) { return (philox_word >> 8) < keep_threshold; }

// x * m with m = scale = 1/(1-p) where kept and 0 where dropped (NaN * 0 stays NaN, as x * mask).
template <class T> GF_HD T dropout_apply(T x, bool kept, T scale) { return x * (kept ? scale : T(0)); }

// ---------------------------------------------------------------------------------------------
// Loss terms: loss(x, y) for one element, its partial derivatives, and loss_and_grad_x and
// loss_and_grads, which compute the loss with one or both derivatives sharing their common work.
template <class T> GF_HD T clamp_log(T v) { return v < T(-100) ? T(-100) : v; }  // NaN passes

// torch.nn.functional.binary_cross_entropy: logs clamped at -100, gradient denominator at 1e-12.
// Where torch raises (a probability or target outside [0, 1]) the loss and both gradients are NaN,
// as they are for NaN inputs.
struct BceTerm {
  template <class T> GF_HD static bool in_domain(T p, T t) {
    return (p >= T(0)) & (p <= T(1)) & (t >= T(0)) & (t <= T(1));
  }
  // The same test on the bits: adding +0 turns -0 into +0, and then exactly the values in [0, 1]
  // have bits at most those of 1 (negatives and NaN have larger bits as unsigned integers).
  GF_HD static bool in_domain(float p, float t) {
    const uint32_t p_bits = bits_of(p + 0.0f), t_bits = bits_of(t + 0.0f);
    return (p_bits > t_bits ? p_bits : t_bits) <= 0x3f800000u;
  }
  // Values are computed before the domain select, never inside it: a call in a ?: operand is
  // evaluated conditionally, which stops the CPU loops from vectorising.
  template <class T> GF_HD static T loss_of_logs(T t, T log_1m, T log_p) { return (t - T(1)) * log_1m - t * log_p; }
  template <class T> GF_HD static T unchecked_loss(T p, T t) {
    return loss_of_logs(t, clamp_log(log1m_unit_interval(p)), clamp_log(log_unit_interval(p)));
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
  // The loss and grad_y share both logs.
  template <class T> GF_HD static void loss_and_grads(T p, T t, T* loss_out, T* grad_x_out, T* grad_y_out) {
    const bool inside = in_domain(p, t);
    const T log_1m = clamp_log(log1m_unit_interval(p)), log_p = clamp_log(log_unit_interval(p));
    const T loss = loss_of_logs(t, log_1m, log_p);
    const T grad_x = unchecked_grad_x(p, t);
    const T grad_y = log_1m - log_p;
    *loss_out = inside ? loss : T(f32_nan());
    *grad_x_out = inside ? grad_x : T(f32_nan());
    *grad_y_out = inside ? grad_y : T(f32_nan());
  }
};

// Binary cross-entropy on logits: (1 - t) x + softplus(-x), softplus(-x) = max(-x, 0) + log1p(e),
// e = exp(-|x|); d/dx = sigmoid(x) - t with sigmoid(x) = (x < 0 ? e : 1) / (1 + e).
struct BceLogitsTerm {
  template <class T> GF_HD static T exp_minus_abs(T x) { return exp_nonpositive(x < T(0) ? x : -x); }
  template <class T> GF_HD static T loss_given(T x, T t, T e) {
    // max(-x, 0) as -min(x, 0); NaN x: NaN from (1 - t) x.
    return ((T(1) - t) * x - (x < T(0) ? x : T(0))) + log_one_plus_unit_interval(e);
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
  template <class T> GF_HD static void loss_and_grads(T x, T t, T* loss_out, T* grad_x_out, T* grad_y_out) {
    loss_and_grad_x(x, t, loss_out, grad_x_out);
    *grad_y_out = grad_y(x, t);
  }
};

// KL(N(mu, e^logvar) || N(0, 1)) per element: (e^logvar - logvar - 1 + mu^2) / 2.
struct KlTerm {
  template <class T> GF_HD static T loss_given(T mu, T logvar, T e) { return T(0.5) * (e - logvar - T(1) + mu * mu); }
  template <class T> GF_HD static T grad_y_given(T e) { return T(0.5) * (e - T(1)); }
  template <class T> GF_HD static T loss(T mu, T logvar) { return loss_given(mu, logvar, exp_(logvar)); }
  template <class T> GF_HD static T grad_x(T mu, T) { return mu; }
  template <class T> GF_HD static T grad_y(T, T logvar) { return grad_y_given(exp_(logvar)); }
  template <class T> GF_HD static void loss_and_grad_x(T mu, T logvar, T* loss_out, T* grad_out) {
    *loss_out = loss(mu, logvar);
    *grad_out = grad_x(mu, logvar);
  }
  // The loss and grad_y share exp(logvar).
  template <class T> GF_HD static void loss_and_grads(T mu, T logvar, T* loss_out, T* grad_x_out, T* grad_y_out) {
    const T e = exp_(logvar);
    *loss_out = loss_given(mu, logvar, e);
    *grad_x_out = mu;
    *grad_y_out = grad_y_given(e);
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
  template <class T> GF_HD static void loss_and_grads(T, T, T* loss_out, T* grad_x_out, T* grad_y_out) {
    *loss_out = T(0);
    *grad_x_out = T(0);
    *grad_y_out = T(0);
  }
};

}  // namespace gf
