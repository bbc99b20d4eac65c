// Row-structured fused losses (BCE, BCE with logits, KL, and the VAE loss BCE + beta KL): one
// pass computes the per-row sums and, when asked, the input gradients.
#include <atomic>
#include <new>
#include <type_traits>
#include <vector>

#include "../dispatch.h"
#include "parallel.h"

namespace gf::cpu {
namespace {

constexpr int kLanes = 16;   // independent partial sums: a fixed summation order that vectorises

// Each thread's scratch for the element losses of one chunk: kScratchElements values per segment,
// allocated on the thread's first loss and freed when the thread ends, whatever the sizes seen:
// a row wider than that is summed in pieces (a multiple of kLanes long, so in the same order).
constexpr int64_t kScratchElements = kElementGrain;
constexpr size_t kScratchBytes = 2 * kScratchElements * sizeof(double);
std::atomic<int64_t> scratch_bytes_held{0};

class ThreadScratch {
 public:
  ~ThreadScratch() {
    if (data_ == nullptr) return;
    ::operator delete(data_, std::align_val_t(64));
    scratch_bytes_held -= int64_t(kScratchBytes);
  }
  // Room for kScratchElements values of C for segment A, then as many for segment B.
  template <class C> C* segment(int which) {
    if (data_ == nullptr) {
      data_ = ::operator new(kScratchBytes, std::align_val_t(64));
      scratch_bytes_held += int64_t(kScratchBytes);
    }
    return static_cast<C*>(data_) + which * kScratchElements;
  }

 private:
  void* data_ = nullptr;
};
thread_local ThreadScratch thread_scratch;

// A segment's per-element outputs (each optional) and d(output)/d(term) for its gradients.
struct SegmentOut {
  void* elems;
  void* grad_x;
  void* grad_y;
  double grad_scale;
};

// Losses of count (<= kBlock) elements into loss, plus the requested per-element outputs.
template <class Term, class S>
GF_CPU_INLINE void segment_block(const S* x, const S* y, int count, compute_t<S>* loss, S* elems,
                                 S* grad_x, S* grad_y, compute_t<S> scale) {
  using C = compute_t<S>;
  C x_converted[kBlock], y_converted[kBlock], gx[kBlock], gy[kBlock];
  const C* xv = x_converted;
  const C* yv = y_converted;
  if constexpr (std::is_same_v<S, C>) {  // nothing to convert: read the inputs in place
    xv = x;
    yv = y;
  } else {
    for (int l = 0; l < count; ++l) x_converted[l] = to_compute(x[l]);
    for (int l = 0; l < count; ++l) y_converted[l] = to_compute(y[l]);
  }
  if (grad_x && grad_y) {
    for (int l = 0; l < count; ++l) Term::loss_and_grads(xv[l], yv[l], &loss[l], &gx[l], &gy[l]);
  } else if (grad_x) {
    for (int l = 0; l < count; ++l) Term::loss_and_grad_x(xv[l], yv[l], &loss[l], &gx[l]);
  } else {
    for (int l = 0; l < count; ++l) loss[l] = Term::loss(xv[l], yv[l]);
    if (grad_y)
      for (int l = 0; l < count; ++l) gy[l] = Term::grad_y(xv[l], yv[l]);
  }
  if (grad_x)
    for (int l = 0; l < count; ++l) grad_x[l] = from_compute<S>(gx[l] * scale);
  if (grad_y)
    for (int l = 0; l < count; ++l) grad_y[l] = from_compute<S>(gy[l] * scale);
  if (elems)
    for (int l = 0; l < count; ++l) elems[l] = from_compute<S>(loss[l]);
}

// Losses of the contiguous elements [begin, end) of a segment into loss[0, end - begin).
template <class Term, class S>
GF_CPU_INLINE void segment_losses(const S* x, const S* y, int64_t begin, int64_t end,
                                  compute_t<S>* loss, const SegmentOut& out) {
  using C = compute_t<S>;
  auto* elems = static_cast<S*>(out.elems);
  auto* grad_x = static_cast<S*>(out.grad_x);
  auto* grad_y = static_cast<S*>(out.grad_y);
  for (int64_t b = begin; b < end; b += kBlock) {
    const int count = int(std::min<int64_t>(kBlock, end - b));
    segment_block<Term, S>(x + b, y + b, count, loss + (b - begin), elems ? elems + b : nullptr,
                           grad_x ? grad_x + b : nullptr, grad_y ? grad_y + b : nullptr,
                           C(out.grad_scale));
  }
}

// Adds count losses to the partial sums: element j to lanes[j % kLanes].
template <class C>
GF_CPU_INLINE void add_to_lanes(const C* loss, int64_t count, double* lanes) {
  const int64_t full = count & ~int64_t(kLanes - 1);
  for (int64_t b = 0; b < full; b += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += double(loss[b + l]);
  for (int64_t j = full; j < count; ++j) lanes[j - full] += double(loss[j]);
}

GF_CPU_INLINE double sum_of_lanes(const double* lanes) {
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

// The sum of count losses in a fixed order: element j goes to partial sum j % kLanes; short rows
// (a 20-d latent's) use 4 partial sums, enough to hide the latency of the additions.
template <class C>
GF_CPU_INLINE double fixed_order_sum(const C* loss, int64_t count) {
  if (count < 4 * kLanes) {
    double partial[4] = {};
    const int64_t full = count & ~int64_t(3);
    for (int64_t j = 0; j < full; j += 4)
      for (int l = 0; l < 4; ++l) partial[l] += double(loss[j + l]);
    for (int64_t j = full; j < count; ++j) partial[j - full] += double(loss[j]);
    return (partial[0] + partial[1]) + (partial[2] + partial[3]);
  }
  double lanes[kLanes] = {};
  add_to_lanes(loss, count, lanes);
  return sum_of_lanes(lanes);
}

// fixed_order_sum of the losses of elements [begin, end) of a segment wider than the scratch,
// computed piece by piece into it: the same lanes in the same order, so the same bits.
template <class Term, class S>
GF_CPU_INLINE double piecewise_sum(const S* x, const S* y, int64_t begin, int64_t end, compute_t<S>* scratch,
                                   const SegmentOut& out) {
  static_assert(kScratchElements % kLanes == 0, "pieces must keep the lanes aligned");
  double lanes[kLanes] = {};
  for (int64_t piece = begin; piece < end; piece += kScratchElements) {
    const int64_t count = std::min(kScratchElements, end - piece);
    segment_losses<Term, S>(x, y, piece, piece + count, scratch, out);
    add_to_lanes(scratch, count, lanes);
  }
  return sum_of_lanes(lanes);
}

// Rows [row_begin, row_end): every element's loss first (long vectorised loops, however narrow
// the rows), then each row's sum; a chunk too wide for the scratch (one wide row) in pieces.
template <class TermA, class TermB, class S>
GF_CPU_CLONES void rows_range(const LossProblem& p, SegmentOut out_a, SegmentOut out_b, int64_t row_begin,
                              int64_t row_end, double* row_totals) {
  using C = compute_t<S>;
  const auto* x_a = reinterpret_cast<const S*>(p.a.x);
  const auto* y_a = reinterpret_cast<const S*>(p.a.y);
  const auto* x_b = reinterpret_cast<const S*>(p.b.x);
  const auto* y_b = reinterpret_cast<const S*>(p.b.y);
  C* losses_a = thread_scratch.segment<C>(0);
  C* losses_b = thread_scratch.segment<C>(1);
  const int64_t a_begin = row_begin * p.a.cols, a_end = std::min(row_end * p.a.cols, p.a.n);
  const int64_t b_begin = row_begin * p.b.cols, b_end = row_end * p.b.cols;
  if (a_end - a_begin > kScratchElements || b_end - b_begin > kScratchElements) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      const int64_t a_row = r * p.a.cols;
      double total = p.a.weight * piecewise_sum<TermA, S>(x_a, y_a, a_row, std::min(a_row + p.a.cols, p.a.n),
                                                           losses_a, out_a);
      if (p.b.cols > 0)
        total += p.b.weight * piecewise_sum<TermB, S>(x_b, y_b, r * p.b.cols, (r + 1) * p.b.cols, losses_b, out_b);
      row_totals[r] = total;
    }
    return;
  }
  segment_losses<TermA, S>(x_a, y_a, a_begin, a_end, losses_a, out_a);
  segment_losses<TermB, S>(x_b, y_b, b_begin, b_end, losses_b, out_b);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t a_row = r * p.a.cols;
    double total = p.a.weight * fixed_order_sum(losses_a + (a_row - a_begin), std::min(p.a.cols, p.a.n - a_row));
    if (p.b.cols > 0) total += p.b.weight * fixed_order_sum(losses_b + (r - row_begin) * p.b.cols, p.b.cols);
    row_totals[r] = total;
  }
}

}  // namespace

void fused_loss(const LossProblem& p, int threads) {
  const SegmentOut out_a{reinterpret_cast<void*>(p.out_elems()), reinterpret_cast<void*>(p.a.grad_x),
                         reinterpret_cast<void*>(p.a.grad_y), p.grad_scale(p.a)};
  const SegmentOut out_b{nullptr, reinterpret_cast<void*>(p.b.grad_x), reinterpret_cast<void*>(p.b.grad_y),
                         p.grad_scale(p.b)};
  std::vector<double> row_totals(size_t(p.rows));
  dispatch_dtype(p.dtype, [&](auto dtype_tag) {
    using S = typename decltype(dtype_tag)::type;
    using C = compute_t<S>;
    dispatch_terms(p.a.term, p.b.term, [&](auto tag_a, auto tag_b) {
      using TermA = typename decltype(tag_a)::type;
      using TermB = typename decltype(tag_b)::type;
      const int64_t cols = std::max<int64_t>(1, p.a.cols + p.b.cols);
      const int64_t rows_per_chunk = std::max<int64_t>(1, kElementGrain / cols);
      parallel_chunks(p.rows, rows_per_chunk, threads, [&](int64_t r0, int64_t r1) {
        rows_range<TermA, TermB, S>(p, out_a, out_b, r0, r1, row_totals.data());
      });
    });
    if (const uintptr_t out_rows = p.out_rows()) {
      for (int64_t r = 0; r < p.rows; ++r) reinterpret_cast<S*>(out_rows)[r] = from_compute<S>(C(row_totals[r]));
    }
    if (const uintptr_t out_total = p.out_total()) {
      double total = 0.0;
      for (int64_t r = 0; r < p.rows; ++r) total += row_totals[r];
      *reinterpret_cast<S*>(out_total) = from_compute<S>(C(total / p.total_divisor()));
    }
  });
}

int64_t fused_loss_scratch_bytes() { return scratch_bytes_held.load(); }

}  // namespace gf::cpu
