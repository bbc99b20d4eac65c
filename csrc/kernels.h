// The kernel entry points: raw pointers, sizes, a dtype code and, for CUDA, the caller's stream.
// Implemented once for the CPU (csrc/cpu) and once for CUDA (csrc/cuda); the per-element math
// both use lives in genfast_math.h.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace gf {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };
enum class Term : int { None = 0, Bce = 1, BceLogits = 2, Kl = 3 };

// A fused, row-structured loss: for each row r, the sum over segment A (x_a, y_a; cols_a wide)
// of TermA plus weight_b times the sum over segment B (x_b, y_b; cols_b wide) of TermB.
// Segment A may end in a partial row: its element (r, j) exists while r * cols_a + j < n_a.
// Every output pointer is optional (0 = not wanted).
struct LossProblem {
  int dtype = 0;
  int term_a = 0, term_b = 0;
  int64_t rows = 0, cols_a = 0, n_a = 0, cols_b = 0;
  uintptr_t x_a = 0, y_a = 0, x_b = 0, y_b = 0;
  double weight_b = 1.0;
  uintptr_t out_total = 0;        // one value: (sum over rows) / total_divisor
  double total_divisor = 1.0;
  uintptr_t out_rows = 0;         // per-row totals
  uintptr_t out_elems = 0;        // per-element loss of segment A
  uintptr_t grad_x_a = 0, grad_y_a = 0, grad_x_b = 0, grad_y_b = 0;
  double grad_scale_a = 1.0, grad_scale_b = 1.0;  // d(output)/d(term) for the gradients
  uintptr_t workspace = 0;        // CUDA only: rows doubles, then a zeroed uint32 counter
};

// The random kernels read their Philox key from memory on the kernel's device: seed_offset points
// to two int64, (seed, offset). CPU entry points take a thread count, CUDA ones a device index and
// the caller's stream.
namespace cpu {
void reparameterise_forward(int dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, int threads);
void reparameterise_backward(int dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
                             uintptr_t seed_offset, uintptr_t grad_logvar, int threads);
void dropout_forward(int dtype, int64_t n, uintptr_t x, uint32_t keep_threshold, double scale,
                     uintptr_t seed_offset, uintptr_t out, uintptr_t mask, int threads);
void dropout_backward(int dtype, int64_t n, uintptr_t grad_out, uintptr_t mask, double scale,
                      uintptr_t grad_x, int threads);
void fused_loss(const LossProblem& problem, int threads);
bool has_openmp();
int max_threads();
}  // namespace cpu

namespace cuda {
bool available();
void reparameterise_forward(int dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, int device, uintptr_t stream);
void reparameterise_backward(int dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
                             uintptr_t seed_offset, uintptr_t grad_logvar, int device, uintptr_t stream);
void dropout_forward(int dtype, int64_t n, uintptr_t x, uint32_t keep_threshold, double scale,
                     uintptr_t seed_offset, uintptr_t out, uintptr_t mask, int device, uintptr_t stream);
void dropout_backward(int dtype, int64_t n, uintptr_t grad_out, uintptr_t mask, double scale,
                      uintptr_t grad_x, int device, uintptr_t stream);
void fused_loss(const LossProblem& problem, int device, uintptr_t stream);
std::string version();
}  // namespace cuda

}  // namespace gf
