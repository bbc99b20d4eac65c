// Stand-ins for the CUDA entry points in a build without CUDA: each says so clearly.
#include <stdexcept>

#include "kernels.h"

namespace gf::cuda {
namespace {
[[noreturn]] void unavailable() {
  throw std::runtime_error("genfast was built without CUDA; rebuild with nvcc available (GENFAST_CUDA=ON)");
}
}  // namespace

void reparameterise_forward(DType, int64_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, int, uintptr_t) {
  unavailable();
}
void reparameterise_backward(DType, int64_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, int, uintptr_t) { unavailable(); }
void dropout_forward(DType, int64_t, uintptr_t, uint32_t, double, uintptr_t, uintptr_t, uintptr_t, int, uintptr_t) { unavailable(); }
void dropout_backward(DType, int64_t, uintptr_t, uintptr_t, double, uintptr_t, int, uintptr_t) { unavailable(); }
void fused_loss(const LossProblem&, int, uintptr_t) { unavailable(); }
}  // namespace gf::cuda
