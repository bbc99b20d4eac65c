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
                                   S* __restrict__ grad_y, compute_t<S> grad_scale) {
  using C = compute_t<S>;
  double lane_sum = 0.0;
  for (int64_t i = begin + (threadIdx.x & 31); i < end; i += 32) {
    const C xv = to_compute(x[i]);
    const C yv = to_compute(y[i]);
    C loss, gx, gy;
    if (grad_x && grad_y) {
      Term::loss_and_grads(xv, yv, &loss, &gx, &gy);
      grad_x[i] = from_compute<S>(gx * grad_scale);
      grad_y[i] = from_compute<S>(gy * grad_scale);
    } else if (grad_x) {
      Term::loss_and_grad_x(xv, yv, &loss, &gx);
      grad_x[i] = from_compute<S>(gx * grad_scale);
    } else {
      loss = Term::loss(xv, yv);
      if (grad_y) grad_y[i] = from_compute<S>(Term::grad_y(xv, yv) * grad_scale);
    }
    lane_sum += double(loss);
    if (elems) elems[i] = from_compute<S>(loss);
  }
#pragma unroll
  for (int width = 16; width > 0; width /= 2) lane_sum += __shfl_xor_sync(0xffffffffu, lane_sum, width);
  return lane_sum;
}

// What the host derives from the problem once: where the outputs go, and the gradients' scales.
struct LossOutputs {
  uintptr_t total, rows, elems;
  double total_divisor, grad_scale_a, grad_scale_b;
};

template <class TermA, class TermB, class S>
__global__ void __launch_bounds__(kThreads) fused_loss_kernel(LossProblem p, LossOutputs o) {
  using C = compute_t<S>;
  auto* row_totals = reinterpret_cast<double*>(p.workspace);
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  for (int64_t r = int64_t(blockIdx.x) * kWarps + warp; r < p.rows; r += int64_t(gridDim.x) * kWarps) {
    const int64_t a_begin = r * p.a.cols;
    const int64_t a_end = min(a_begin + p.a.cols, p.a.n);
    double total = p.a.weight * warp_segment_sum<TermA, S>(
        reinterpret_cast<const S*>(p.a.x), reinterpret_cast<const S*>(p.a.y), a_begin, a_end,
        reinterpret_cast<S*>(o.elems), reinterpret_cast<S*>(p.a.grad_x), reinterpret_cast<S*>(p.a.grad_y),
        C(o.grad_scale_a));
    if (p.b.cols > 0)
      total += p.b.weight * warp_segment_sum<TermB, S>(
          reinterpret_cast<const S*>(p.b.x), reinterpret_cast<const S*>(p.b.y), r * p.b.cols,
          (r + 1) * p.b.cols, nullptr, reinterpret_cast<S*>(p.b.grad_x), reinterpret_cast<S*>(p.b.grad_y),
          C(o.grad_scale_b));
    if (lane == 0) {
      if (o.total) row_totals[r] = total;
      if (o.rows) reinterpret_cast<S*>(o.rows)[r] = from_compute<S>(C(total));
    }
  }
  if (!o.total) return;

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
  if (threadIdx.x == 0) *reinterpret_cast<S*>(o.total) = from_compute<S>(C(partial[0] / o.total_divisor));
}

}  // namespace

void fused_loss(const LossProblem& p, int device, uintptr_t stream) {
  DeviceGuard guard(device);
  const LossOutputs outputs{p.out_total(), p.out_rows(), p.out_elems(), p.total_divisor(), p.grad_scale(p.a),
                            p.grad_scale(p.b)};
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((p.rows + kWarps - 1) / kWarps, 65535));
  dispatch_dtype(p.dtype, [&](auto dtype_tag) {
    using S = typename decltype(dtype_tag)::type;
    dispatch_terms(p.a.term, p.b.term, [&](auto tag_a, auto tag_b) {
      using TermA = typename decltype(tag_a)::type;
      using TermB = typename decltype(tag_b)::type;
      fused_loss_kernel<TermA, TermB, S><<<unsigned(blocks), kThreads, 0, as_stream(stream)>>>(p, outputs);
    });
  });
  check(cudaGetLastError(), "fused loss launch");
}

}  // namespace gf::cuda
