// z = mu + eps * exp(logvar / 2), eps ~ N(0, 1) from Philox; backward regenerates eps.
#include "../dispatch.h"
#include "parallel.h"

namespace gf::cpu {
namespace {

constexpr int kBlock = 256;  // elements per inner block, a multiple of the Philox block of 4

// eps for elements [first, first + count) of the stream; first is a multiple of 4.
GF_CPU_INLINE void fill_normals(float* eps, int64_t first, int count, uint64_t seed, uint64_t offset) {
  const int groups = (count + 3) / 4;
  for (int g = 0; g < groups; ++g) {
    const Normal4 n = normal4(uint64_t(first / 4 + g), seed, offset);
    for (int k = 0; k < 4; ++k) eps[4 * g + k] = n.v[k];
  }
}

template <class S>
GF_CPU_CLONES void forward_range(const S* mu, const S* logvar, S* z, int64_t begin, int64_t end,
                                 uint64_t seed, uint64_t offset) {
  using C = compute_t<S>;
  float eps[kBlock];
  for (int64_t b = begin; b < end; b += kBlock) {
    const int count = int(std::min<int64_t>(kBlock, end - b));
    fill_normals(eps, b, count, seed, offset);
    for (int l = 0; l < count; ++l) {
      const C m = to_compute(mu[b + l]);
      const C v = to_compute(logvar[b + l]);
      z[b + l] = from_compute<S>(m + C(eps[l]) * exp_(C(0.5) * v));
    }
  }
}

template <class S>
GF_CPU_CLONES void backward_range(const S* grad_z, const S* logvar, S* grad_logvar, int64_t begin,
                                  int64_t end, uint64_t seed, uint64_t offset) {
  using C = compute_t<S>;
  float eps[kBlock];
  for (int64_t b = begin; b < end; b += kBlock) {
    const int count = int(std::min<int64_t>(kBlock, end - b));
    fill_normals(eps, b, count, seed, offset);
    for (int l = 0; l < count; ++l) {
      const C g = to_compute(grad_z[b + l]);
      const C v = to_compute(logvar[b + l]);
      grad_logvar[b + l] = from_compute<S>(g * C(0.5) * C(eps[l]) * exp_(C(0.5) * v));
    }
  }
}

}  // namespace

void reparameterise_forward(int dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, int threads) {
  const auto* so = reinterpret_cast<const int64_t*>(seed_offset);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    parallel_chunks(n, kElementGrain, threads, [&](int64_t b, int64_t e) {
      forward_range<S>(reinterpret_cast<const S*>(mu), reinterpret_cast<const S*>(logvar),
                       reinterpret_cast<S*>(z), b, e, uint64_t(so[0]), uint64_t(so[1]));
    });
  });
}

void reparameterise_backward(int dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
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
