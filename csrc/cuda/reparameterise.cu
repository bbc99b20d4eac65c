// z = mu + eps * exp(logvar / 2) with eps from Philox (and optionally dz/dlogvar), and its
// logvar-gradient with eps regenerated; one thread per block of 4 elements.
#include "../dispatch.h"
#include "common.cuh"

namespace gf::cuda {
namespace {

// Calls body(i, eps_i) for every element i < n: one thread per block of 4 elements, which share a
// Philox draw.
template <class Body>
__device__ void for_each_normal(int64_t n, const int64_t* __restrict__ seed_offset, Body&& body) {
  const uint64_t seed = uint64_t(seed_offset[0]), offset = uint64_t(seed_offset[1]);
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const Normal4 eps = normal4(uint64_t(g), seed, offset);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * g + k;
      if (i < n) body(i, eps.v[k]);
    }
  }
}

template <class S>
__global__ void forward_kernel(const S* __restrict__ mu, const S* __restrict__ logvar, S* __restrict__ z,
                               compute_t<S>* __restrict__ half_noise, int64_t n,
                               const int64_t* __restrict__ seed_offset) {
  using C = compute_t<S>;
  for_each_normal(n, seed_offset, [&](int64_t i, float eps) {
    const C noise = reparameterise_noise(to_compute(logvar[i]), C(eps));
    z[i] = from_compute<S>(to_compute(mu[i]) + noise);
    if (half_noise != nullptr) half_noise[i] = C(0.5) * noise;
  });
}

template <class S>
__global__ void backward_kernel(const S* __restrict__ grad_z, const S* __restrict__ logvar,
                                S* __restrict__ grad_logvar, int64_t n, const int64_t* __restrict__ seed_offset) {
  using C = compute_t<S>;
  for_each_normal(n, seed_offset, [&](int64_t i, float eps) {
    grad_logvar[i] =
        from_compute<S>(reparameterise_grad_logvar(to_compute(grad_z[i]), to_compute(logvar[i]), C(eps)));
  });
}

}  // namespace

void reparameterise_forward(DType dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, uintptr_t half_noise, int device, uintptr_t stream) {
  if (n == 0) return;
  DeviceGuard guard(device);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    forward_kernel<S><<<grid_for((n + 3) / 4), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const S*>(mu), reinterpret_cast<const S*>(logvar), reinterpret_cast<S*>(z),
        reinterpret_cast<compute_t<S>*>(half_noise), n, reinterpret_cast<const int64_t*>(seed_offset));
  });
  check(cudaGetLastError(), "reparameterise forward launch");
}

void reparameterise_backward(DType dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
                             uintptr_t seed_offset, uintptr_t grad_logvar, int device, uintptr_t stream) {
  if (n == 0) return;
  DeviceGuard guard(device);
  dispatch_dtype(dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    backward_kernel<S><<<grid_for((n + 3) / 4), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const S*>(grad_z), reinterpret_cast<const S*>(logvar), reinterpret_cast<S*>(grad_logvar),
        n, reinterpret_cast<const int64_t*>(seed_offset));
  });
  check(cudaGetLastError(), "reparameterise backward launch");
}

}  // namespace gf::cuda
