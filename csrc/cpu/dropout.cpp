// The seed's corruption, x * Dropout(p)(ones): out = x * m, m in {0, 1/(1-p)}, plus the keep-mask.
#include <cstring>

#include "../dispatch.h"
#include "parallel.h"
#include "philox.h"

namespace gf::cpu {
namespace {

template <class S>
GF_CPU_CLONES void forward_range(const S* x, S* out, uint8_t* mask, int64_t begin, int64_t end,
                                 uint32_t keep_threshold, compute_t<S> scale, uint64_t seed,
                                 uint64_t offset) {
  uint8_t kept[kBlock];  // bytes, not bool: bool loads do not vectorise
  uint32_t words[4][kBlock / 4];
  for (int64_t b = begin; b < end; b += kBlock) {
    const int count = int(std::min<int64_t>(kBlock, end - b));
    const int groups = (count + 3) / 4;
    philox_words(uint64_t(b / 4), groups, seed, offset, words[0], words[1], words[2], words[3]);
    // Element 4g + k keeps by word k of counter g: the four decisions of a counter packed into one
    // little-endian 32-bit store vectorise, where byte-by-byte interleaving does not.
    for (int g = 0; g < groups; ++g) {
      const uint32_t packed = uint32_t(keep(words[0][g], keep_threshold)) |
                              uint32_t(keep(words[1][g], keep_threshold)) << 8 |
                              uint32_t(keep(words[2][g], keep_threshold)) << 16 |
                              uint32_t(keep(words[3][g], keep_threshold)) << 24;
      std::memcpy(&kept[4 * g], &packed, sizeof packed);
    }
    for (int l = 0; l < count; ++l) {
      mask[b + l] = kept[l];
      out[b + l] = from_compute<S>(dropout_apply(to_compute(x[b + l]), kept[l] != 0, scale));
    }
  }
}

template <class S>
GF_CPU_CLONES void backward_range(const S* grad_out, const uint8_t* mask, S* grad_x, int64_t begin,
                                  int64_t end, compute_t<S> scale) {
  for (int64_t i = begin; i < end; ++i)
    grad_x[i] = from_compute<S>(dropout_apply(to_compute(grad_out[i]), mask[i] != 0, scale));
}

}  // namespace

void dropout_forward(DType dtype, int64_t n, uintptr_t x, uint32_t keep_threshold, double scale,
                     uintptr_t seed_offset, uintptr_t out, uintptr_t mask, int threads) {
  const auto* so = reinterpret_cast<const int64_t*>(seed_offset);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    parallel_chunks(n, kElementGrain, threads, [&](int64_t b, int64_t e) {
      forward_range<S>(reinterpret_cast<const S*>(x), reinterpret_cast<S*>(out),
                       reinterpret_cast<uint8_t*>(mask), b, e, keep_threshold, compute_t<S>(scale),
                       uint64_t(so[0]), uint64_t(so[1]));
    });
  });
}

void dropout_backward(DType dtype, int64_t n, uintptr_t grad_out, uintptr_t mask, double scale,
                      uintptr_t grad_x, int threads) {
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    parallel_chunks(n, kElementGrain, threads, [&](int64_t b, int64_t e) {
      backward_range<S>(reinterpret_cast<const S*>(grad_out), reinterpret_cast<const uint8_t*>(mask),
                        reinterpret_cast<S*>(grad_x), b, e, compute_t<S>(scale));
    });
  });
}

}  // namespace gf::cpu
