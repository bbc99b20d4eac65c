// Row-structured fused losses on CUDA: one warp per row computes the row's sum (and the gradients
// when asked); the last block to finish adds the row sums in a fixed order, so the result is
// bit-identical run to run (no float atomics) and the whole loss is one kernel launch. The
// workspace (row sums, then the arrival counter) is freshly zeroed by the caller for each launch.
#include "../dispatch.h"
#include "common.cuh"

namespace gf::cuda {
namespace {

constexpr int kWarps = kThreads / 32;

template <class Term, class S>
__device__ double warp_segment_sum(const S* __restrict__ x, const S* __restrict__ y, int64_t begin,
                                   int64_t end, S* __restrict__ elems, S* __restrict__ grad_x,
                                   S* __restrict__ grad_y, compute_t<S> scale_x, compute_t<S> scale_y) {
  using C = compute_t<S>;
  double lane_sum = 0.0;
  for (int64_t i = begin + (threadIdx.x & 31); i < end; i += 32) {
    const C xv = to_compute(x[i]);
    const C yv = to_compute(y[i]);
    C loss, gx;
    if (grad_x) {
      Term::loss_and_grad_x(xv, yv, &loss, &gx);
      grad_x[i] = from_compute<S>(gx * scale_x);
    } else {
      loss = Term::loss(xv, yv);
    }
    lane_sum += double(loss);
    if (elems) elems[i] = from_compute<S>(loss);
    if (grad_y) grad_y[i] = from_compute<S>(Term::grad_y(xv, yv) * scale_y);
  }
#pragma unroll
  for (int width = 16; width > 0; width /= 2) lane_sum += __shfl_xor_sync(0xffffffffu, lane_sum, width);
  return lane_sum;
}

template <class TermA, class TermB, class S>
__global__ void __launch_bounds__(kThreads) fused_loss_kernel(LossProblem p) {
  using C = compute_t<S>;
  auto* row_totals = reinterpret_cast<double*>(p.workspace);
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  for (int64_t r = int64_t(blockIdx.x) * kWarps + warp; r < p.rows; r += int64_t(gridDim.x) * kWarps) {
    const int64_t a_begin = r * p.cols_a;
    const int64_t a_end = min(a_begin + p.cols_a, p.n_a);
    double total = warp_segment_sum<TermA, S>(
        reinterpret_cast<const S*>(p.x_a), reinterpret_cast<const S*>(p.y_a), a_begin, a_end,
        reinterpret_cast<S*>(p.out_elems), reinterpret_cast<S*>(p.grad_x_a),
        reinterpret_cast<S*>(p.grad_y_a), C(p.grad_scale_a), C(p.grad_scale_a));
    if (p.cols_b > 0)
      total += p.weight_b * warp_segment_sum<TermB, S>(
          reinterpret_cast<const S*>(p.x_b), reinterpret_cast<const S*>(p.y_b), r * p.cols_b,
          (r + 1) * p.cols_b, nullptr, reinterpret_cast<S*>(p.grad_x_b),
          reinterpret_cast<S*>(p.grad_y_b), C(p.grad_scale_b), C(p.grad_scale_b));
    if (lane == 0) {
      if (p.out_total) row_totals[r] = total;
      if (p.out_rows) reinterpret_cast<S*>(p.out_rows)[r] = from_compute<S>(C(total));
    }
  }
  if (!p.out_total) return;

  // The last block to arrive sums all row totals in a fixed order.
  __shared__ bool is_last;
  __shared__ double partial[kThreads];
  auto* counter = reinterpret_cast<unsigned*>(row_totals + p.rows);
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();  // acquire: see every other block's row totals
  double sum = 0.0;
  for (int64_t r = threadIdx.x; r < p.rows; r += kThreads) sum += __ldcg(row_totals + r);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) *reinterpret_cast<S*>(p.out_total) = from_compute<S>(C(partial[0] / p.total_divisor));
}

}  // namespace

void fused_loss(const LossProblem& p, int device, uintptr_t stream) {
  DeviceGuard guard(device);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((p.rows + kWarps - 1) / kWarps, 65535));
  dispatch_dtype(p.dtype, [&](auto dtype_tag) {
    using S = typename decltype(dtype_tag)::type;
    dispatch_terms(p.term_a, p.term_b, [&](auto tag_a, auto tag_b) {
      using TermA = typename decltype(tag_a)::type;
      using TermB = typename decltype(tag_b)::type;
      fused_loss_kernel<TermA, TermB, S><<<unsigned(blocks), kThreads, 0, as_stream(stream)>>>(p);
    });
  });
  check(cudaGetLastError(), "fused loss launch");
}

bool available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

std::string version() {
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
}

}  // namespace gf::cuda
