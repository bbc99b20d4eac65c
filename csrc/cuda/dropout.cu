// out = x * m, m in {0, 1/(1-p)}, keep-mask from Philox; one thread per block of 4 elements.
#include "../dispatch.h"
#include "common.cuh"

namespace gf::cuda {
namespace {

template <class S>
__global__ void forward_kernel(const S* __restrict__ x, S* __restrict__ out, bool* __restrict__ mask,
                               int64_t n, uint32_t keep_threshold, compute_t<S> scale,
                               const int64_t* __restrict__ seed_offset) {
  const uint64_t seed = uint64_t(seed_offset[0]), offset = uint64_t(seed_offset[1]);
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const Philox4 r = philox4x32_10(uint64_t(g), offset, seed);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * g + k;
      if (i < n) {
        const bool kept = keep(r.v[k], keep_threshold);
        mask[i] = kept;
        out[i] = from_compute<S>(dropout_apply(to_compute(x[i]), kept, scale));
      }
    }
  }
}

template <class S>
__global__ void backward_kernel(const S* __restrict__ grad_out, const bool* __restrict__ mask,
                                S* __restrict__ grad_x, int64_t n, compute_t<S> scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    grad_x[i] = from_compute<S>(dropout_apply(to_compute(grad_out[i]), mask[i], scale));
}

}  // namespace

void dropout_forward(DType dtype, int64_t n, uintptr_t x, uint32_t keep_threshold, double scale,
                     uintptr_t seed_offset, uintptr_t out, uintptr_t mask, int device, uintptr_t stream) {
  if (n == 0) return;
  DeviceGuard guard(device);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    forward_kernel<S><<<grid_for((n + 3) / 4), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const S*>(x), reinterpret_cast<S*>(out), reinterpret_cast<bool*>(mask), n,
        keep_threshold, compute_t<S>(scale), reinterpret_cast<const int64_t*>(seed_offset));
  });
  check(cudaGetLastError(), "dropout forward launch");
}

void dropout_backward(DType dtype, int64_t n, uintptr_t grad_out, uintptr_t mask, double scale,
                      uintptr_t grad_x, int device, uintptr_t stream) {
  if (n == 0) return;
  DeviceGuard guard(device);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    backward_kernel<S><<<grid_for(n), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const S*>(grad_out), reinterpret_cast<const bool*>(mask),
        reinterpret_cast<S*>(grad_x), n, compute_t<S>(scale));
  });
  check(cudaGetLastError(), "dropout backward launch");
}

}  // namespace gf::cuda
