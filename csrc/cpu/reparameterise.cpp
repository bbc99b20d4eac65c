// z = mu + eps * exp(logvar / 2), eps ~ N(0, 1) from Philox, and optionally dz/dlogvar; the
// backward for higher derivatives regenerates eps.
#include "../dispatch.h"
#include "parallel.h"
#include "philox.h"

namespace gf::cpu {
namespace {

// The normals of elements [b, b + count) into eps; b is a multiple of 4.
GF_CPU_INLINE void normals_block(int64_t b, int count, uint64_t seed, uint64_t offset, float* eps) {
  uint32_t words[4][kBlock / 4];
  const int groups = (count + 3) / 4;
  philox_words(uint64_t(b / 4), groups, seed, offset, words[0], words[1], words[2], words[3]);
  for (int g = 0; g < groups; ++g) normals_of_words(words[0][g], words[1][g], words[2][g], words[3][g], &eps[4 * g]);
}

template <class S>
GF_CPU_CLONES void forward_range(const S* mu, const S* logvar, S* z, compute_t<S>* half_noise, int64_t begin,
                                 int64_t end, uint64_t seed, uint64_t offset) {
  using C = compute_t<S>;
  float eps[kBlock];
  C noise[kBlock];
  for (int64_t b = begin; b < end; b += kBlock) {
    const int count = int(std::min<int64_t>(kBlock, end - b));
    normals_block(b, count, seed, offset, eps);
    for (int l = 0; l < count; ++l) noise[l] = reparameterise_noise(to_compute(logvar[b + l]), C(eps[l]));
    for (int l = 0; l < count; ++l) z[b + l] = from_compute<S>(to_compute(mu[b + l]) + noise[l]);
    if (half_noise)
      for (int l = 0; l < count; ++l) half_noise[b + l] = C(0.5) * noise[l];
  }
}

template <class S>
GF_CPU_CLONES void backward_range(const S* grad_z, const S* logvar, S* grad_logvar, int64_t begin, int64_t end,
                                  uint64_t seed, uint64_t offset) {
  using C = compute_t<S>;
  float eps[kBlock];
  for (int64_t b = begin; b < end; b += kBlock) {
    const int count = int(std::min<int64_t>(kBlock, end - b));
    normals_block(b, count, seed, offset, eps);
    for (int l = 0; l < count; ++l)
      grad_logvar[b + l] = from_compute<S>(
          reparameterise_grad_logvar(to_compute(grad_z[b + l]), to_compute(logvar[b + l]), C(eps[l])));
  }
}

}  // namespace

void reparameterise_forward(DType dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, uintptr_t half_noise, int threads) {
  const auto* so = reinterpret_cast<const int64_t*>(seed_offset);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    parallel_chunks(n, kElementGrain, threads, [&](int64_t b, int64_t e) {
      forward_range<S>(reinterpret_cast<const S*>(mu), reinterpret_cast<const S*>(logvar), reinterpret_cast<S*>(z),
                       reinterpret_cast<compute_t<S>*>(half_noise), b, e, uint64_t(so[0]), uint64_t(so[1]));
    });
  });
}

void reparameterise_backward(DType dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
                             uintptr_t seed_offset, uintptr_t grad_logvar, int threads) {
  const auto* so = reinterpret_cast<const int64_t*>(seed_offset);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    parallel_chunks(n, kElementGrain, threads, [&](int64_t b, int64_t e) {
      backward_range<S>(reinterpret_cast<const S*>(grad_z), reinterpret_cast<const S*>(logvar),
                        reinterpret_cast<S*>(grad_logvar), b, e, uint64_t(so[0]), uint64_t(so[1]));
    });
  });
}

}  // namespace gf::cpu
