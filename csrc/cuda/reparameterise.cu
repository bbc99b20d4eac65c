// z = mu + eps * exp(logvar / 2) with eps from Philox, and its logvar-gradient (eps regenerated);
// one thread per block of 4 elements.
#include "../dispatch.h"
#include "common.cuh"

namespace gf::cuda {
namespace {

template <class Map, class S>
__global__ void normal_map_kernel(const S* __restrict__ a, const S* __restrict__ logvar, S* __restrict__ out,
                                  int64_t n, const int64_t* __restrict__ seed_offset) {
  using C = compute_t<S>;
  const uint64_t seed = uint64_t(seed_offset[0]), offset = uint64_t(seed_offset[1]);
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const Normal4 eps = normal4(uint64_t(g), seed, offset);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * g + k;
      if (i < n) out[i] = from_compute<S>(Map::apply(to_compute(a[i]), to_compute(logvar[i]), C(eps.v[k])));
    }
  }
}

template <class Map>
void normal_map(DType dtype, int64_t n, uintptr_t a, uintptr_t logvar, uintptr_t seed_offset, uintptr_t out,
                int device, uintptr_t stream, const char* what) {
  if (n == 0) return;
  DeviceGuard guard(device);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    normal_map_kernel<Map, S><<<grid_for((n + 3) / 4), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const S*>(a), reinterpret_cast<const S*>(logvar), reinterpret_cast<S*>(out), n,
        reinterpret_cast<const int64_t*>(seed_offset));
  });
  check(cudaGetLastError(), what);
}

}  // namespace

void reparameterise_forward(DType dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, int device, uintptr_t stream) {
  normal_map<ReparameteriseForward>(dtype, n, mu, logvar, seed_offset, z, device, stream,
                                    "reparameterise forward launch");
}

void reparameterise_backward(DType dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
                             uintptr_t seed_offset, uintptr_t grad_logvar, int device, uintptr_t stream) {
  normal_map<ReparameteriseGradLogvar>(dtype, n, grad_z, logvar, seed_offset, grad_logvar, device, stream,
                                       "reparameterise backward launch");
}

}  // namespace gf::cuda
