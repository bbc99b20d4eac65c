// The kernel entry points: raw pointers, sizes, the enums below and, for CUDA, the caller's stream.
// Implemented once for the CPU (csrc/cpu) and once for CUDA (csrc/cuda); the per-element math
// both use lives in genfast_math.h. bindings.cpp exports the enums and LossProblem to Python, so
// genfast/ops reads the codes from here instead of copying them.
#pragma once

#include <cstdint>

namespace gf {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };
enum class Term : int { None = 0, Bce = 1, BceLogits = 2, Kl = 3 };
enum class Reduction : int { None = 0, Sum = 1, Mean = 2 };

// Elements per row when a loss has no row structure of its own (per_element): fixed, so that
// the summation order, and so the result, depends neither on the shape nor on the thread count.
constexpr int64_t kFlatRowElements = 4096;

// One segment of a fused loss: term(x, y) over rows of `cols` elements. Gradient outputs are
// optional (0 = not wanted).
struct LossSegment {
  Term term = Term::None;
  int64_t cols = 0;
  int64_t n = 0;  // elements in all: segment A may end in a partial row, B never does
  uintptr_t x = 0, y = 0;
  uintptr_t grad_x = 0, grad_y = 0;
  double weight = 1.0;  // of this segment's sum in each row's total
};

// A fused, row-structured loss: each row's total is the weighted sums of segments A and B over
// that row, reduced over the rows by `reduction` into `out`:
//   sum, mean  one value (mean: divided by the rows, or by A's elements when per_element);
//   none       one value per row, or per element of A when per_element (the BCE ops).
// The gradients are d(out)/d(input) for an output gradient of 1 (per row or element for none).
struct LossProblem {
  DType dtype = DType::Float32;
  Reduction reduction = Reduction::Sum;
  bool per_element = false;
  int64_t rows = 0;
  LossSegment a, b;
  uintptr_t out = 0;
  uintptr_t workspace = 0;  // CUDA with reduction sum or mean: workspace_bytes(rows), zeroed

  uintptr_t out_total() const { return reduction == Reduction::None ? 0 : out; }
  uintptr_t out_rows() const { return reduction == Reduction::None && !per_element ? out : 0; }
  uintptr_t out_elems() const { return reduction == Reduction::None && per_element ? out : 0; }
  int64_t mean_count() const { return per_element ? a.n : rows; }
  // An empty mean is 0 / 0 = NaN, as in torch.
  double total_divisor() const { return reduction == Reduction::Mean ? double(mean_count()) : 1.0; }
  double grad_scale(const LossSegment& s) const {
    const bool mean = reduction == Reduction::Mean && mean_count() > 0;
    return s.weight * (mean ? 1.0 / double(mean_count()) : 1.0);
  }
  // The CUDA kernel's row sums, then its uint32 arrival counter (rounded up to a double).
  static int64_t workspace_bytes(int64_t rows) { return (rows + 1) * int64_t(sizeof(double)); }
};

// The random kernels read their Philox key from memory on the kernel's device: seed_offset points
// to two int64, (seed, offset). reparameterise_forward writes dz/dlogvar = eps * exp(logvar / 2) / 2
// in the compute type (float, or double for double) to half_noise unless it is 0. CPU entry points
// take a thread count, CUDA ones a device index and the caller's stream.
namespace cpu {
void reparameterise_forward(DType dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, uintptr_t half_noise, int threads);
void reparameterise_backward(DType dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
                             uintptr_t seed_offset, uintptr_t grad_logvar, int threads);
void dropout_forward(DType dtype, int64_t n, uintptr_t x, uint32_t keep_threshold, double scale,
                     uintptr_t seed_offset, uintptr_t out, uintptr_t mask, int threads);
void dropout_backward(DType dtype, int64_t n, uintptr_t grad_out, uintptr_t mask, double scale,
                      uintptr_t grad_x, int threads);
void fused_loss(const LossProblem& problem, int threads);
// Bytes that the fused loss's per-thread scratch buffers hold now, all threads together.
int64_t fused_loss_scratch_bytes();
}  // namespace cpu

namespace cuda {
void reparameterise_forward(DType dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, uintptr_t half_noise, int device, uintptr_t stream);
void reparameterise_backward(DType dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
                             uintptr_t seed_offset, uintptr_t grad_logvar, int device, uintptr_t stream);
void dropout_forward(DType dtype, int64_t n, uintptr_t x, uint32_t keep_threshold, double scale,
                     uintptr_t seed_offset, uintptr_t out, uintptr_t mask, int device, uintptr_t stream);
void dropout_backward(DType dtype, int64_t n, uintptr_t grad_out, uintptr_t mask, double scale,
                      uintptr_t grad_x, int device, uintptr_t stream);
void fused_loss(const LossProblem& problem, int device, uintptr_t stream);
}  // namespace cuda

}  // namespace gf
