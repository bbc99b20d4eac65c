// z = mu + eps * exp(logvar / 2), eps ~ N(0, 1) from Philox; backward regenerates eps.
#include "../dispatch.h"
#include "parallel.h"
#include "philox.h"

namespace gf::cpu {
namespace {

// out = Map::apply(a, logvar, eps) over elements [begin, end); begin is a multiple of 4.
template <class Map, class S>
GF_CPU_CLONES void normal_map_range(const S* a, const S* logvar, S* out, int64_t begin, int64_t end,
                                    uint64_t seed, uint64_t offset) {
  using C = compute_t<S>;
  float eps[kBlock];
  uint32_t words[4][kBlock / 4];
  for (int64_t b = begin; b < end; b += kBlock) {
    const int count = int(std::min<int64_t>(kBlock, end - b));
    const int groups = (count + 3) / 4;
    philox_words(uint64_t(b / 4), groups, seed, offset, words[0], words[1], words[2], words[3]);
    for (int g = 0; g < groups; ++g)
      normals_of_words(words[0][g], words[1][g], words[2][g], words[3][g], &eps[4 * g]);
    for (int l = 0; l < count; ++l)
      out[b + l] = from_compute<S>(Map::apply(to_compute(a[b + l]), to_compute(logvar[b + l]), C(eps[l])));
  }
}

template <class Map>
void normal_map(DType dtype, int64_t n, uintptr_t a, uintptr_t logvar, uintptr_t seed_offset, uintptr_t out,
                int threads) {
  const auto* so = reinterpret_cast<const int64_t*>(seed_offset);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    parallel_chunks(n, kElementGrain, threads, [&](int64_t b, int64_t e) {
      normal_map_range<Map, S>(reinterpret_cast<const S*>(a), reinterpret_cast<const S*>(logvar),
                               reinterpret_cast<S*>(out), b, e, uint64_t(so[0]), uint64_t(so[1]));
    });
  });
}

}  // namespace

void reparameterise_forward(DType dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, int threads) {
  normal_map<ReparameteriseForward>(dtype, n, mu, logvar, seed_offset, z, threads);
}

void reparameterise_backward(DType dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
                             uintptr_t seed_offset, uintptr_t grad_logvar, int threads) {
  normal_map<ReparameteriseGradLogvar>(dtype, n, grad_z, logvar, seed_offset, grad_logvar, threads);
}

}  // namespace gf::cpu
