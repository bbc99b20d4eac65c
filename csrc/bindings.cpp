// The Python module genfast._C: thin bindings over the kernel entry points. Pointers arrive as
// integers (tensor.data_ptr()) and are validated in genfast/ops.py before they get here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "cpu/philox.h"
#include "kernels.h"

namespace py = pybind11;

#ifndef GENFAST_CUDA_ARCHS
#define GENFAST_CUDA_ARCHS ""
#endif
#ifndef GENFAST_VERSION
#define GENFAST_VERSION "unknown"
#endif

namespace {

// device < 0: CPU (threads used); else CUDA device index (stream used).
void reparameterise_forward(int dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, int device, uintptr_t stream, int threads) {
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::reparameterise_forward(dtype, n, mu, logvar, seed_offset, z, threads);
  else gf::cuda::reparameterise_forward(dtype, n, mu, logvar, seed_offset, z, device, stream);
}

void reparameterise_backward(int dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar, uintptr_t seed_offset,
                             uintptr_t grad_logvar, int device, uintptr_t stream, int threads) {
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::reparameterise_backward(dtype, n, grad_z, logvar, seed_offset, grad_logvar, threads);
  else gf::cuda::reparameterise_backward(dtype, n, grad_z, logvar, seed_offset, grad_logvar, device, stream);
}

void dropout_forward(int dtype, int64_t n, uintptr_t x, uint32_t keep_threshold, double scale,
                     uintptr_t seed_offset, uintptr_t out, uintptr_t mask, int device, uintptr_t stream,
                     int threads) {
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::dropout_forward(dtype, n, x, keep_threshold, scale, seed_offset, out, mask, threads);
  else gf::cuda::dropout_forward(dtype, n, x, keep_threshold, scale, seed_offset, out, mask, device, stream);
}

void dropout_backward(int dtype, int64_t n, uintptr_t grad_out, uintptr_t mask, double scale, uintptr_t grad_x,
                      int device, uintptr_t stream, int threads) {
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::dropout_backward(dtype, n, grad_out, mask, scale, grad_x, threads);
  else gf::cuda::dropout_backward(dtype, n, grad_out, mask, scale, grad_x, device, stream);
}

// Positional arguments in LossProblem's field order: one call, no per-field attribute traffic.
void fused_loss(int dtype, int term_a, int term_b, int64_t rows, int64_t cols_a, int64_t n_a,
                int64_t cols_b, uintptr_t x_a, uintptr_t y_a, uintptr_t x_b, uintptr_t y_b, double weight_b,
                uintptr_t out_total, double total_divisor, uintptr_t out_rows, uintptr_t out_elems,
                uintptr_t grad_x_a, uintptr_t grad_y_a, uintptr_t grad_x_b, uintptr_t grad_y_b,
                double grad_scale_a, double grad_scale_b, uintptr_t workspace, int device, uintptr_t stream,
                int threads) {
  const gf::LossProblem problem{dtype, term_a, term_b, rows, cols_a, n_a, cols_b, x_a, y_a, x_b, y_b,
                                weight_b, out_total, total_divisor, out_rows, out_elems, grad_x_a, grad_y_a,
                                grad_x_b, grad_y_b, grad_scale_a, grad_scale_b, workspace};
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::fused_loss(problem, threads);
  else gf::cuda::fused_loss(problem, device, stream);
}

// Test hook: the CPU Philox words of counters first_group .., planar, for known-answer tests.
py::tuple philox_words(uint64_t first_group, int groups, uint64_t seed, uint64_t offset) {
  std::vector<uint32_t> words(size_t(4) * size_t(groups));
  gf::cpu::philox_words(first_group, groups, seed, offset, words.data(), words.data() + groups,
                        words.data() + 2 * groups, words.data() + 3 * groups);
  py::list planes;
  for (int k = 0; k < 4; ++k) planes.append(std::vector<uint32_t>(words.begin() + k * groups, words.begin() + (k + 1) * groups));
  return py::tuple(planes);
}

py::dict build_info() {
  py::dict info;
  info["version"] = GENFAST_VERSION;
#ifdef GENFAST_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = gf::cuda::version();
  info["cuda_archs"] = GENFAST_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_version"] = py::none();
  info["cuda_archs"] = "";
#endif
  info["openmp"] = gf::cpu::has_openmp();
  info["openmp_max_threads"] = gf::cpu::max_threads();
#if defined(__clang__)
  info["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = "gcc " __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  info["cpu_dispatch"] = "target_clones: avx512f, avx2, default";
  info["cpu_isa"] = __builtin_cpu_supports("avx512f") ? "avx512f" : __builtin_cpu_supports("avx2") ? "avx2" : "default";
#else
  info["cpu_dispatch"] = "none";
  info["cpu_isa"] = "default";
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "genfast kernels (CPU and, when built with it, CUDA); called through genfast.ops";

  m.def("reparameterise_forward", &reparameterise_forward);
  m.def("reparameterise_backward", &reparameterise_backward);
  m.def("dropout_forward", &dropout_forward);
  m.def("dropout_backward", &dropout_backward);
  m.def("fused_loss", &fused_loss);
  m.def("cuda_available", &gf::cuda::available);
  m.def("build_info", &build_info);
  m.def("_philox_words", &philox_words);
}
