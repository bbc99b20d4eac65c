// The Python module genfast._C: thin bindings over the kernel entry points. Pointers arrive as
// integers (tensor.data_ptr()) and are validated in genfast/ops.py before they get here.
#include <pybind11/pybind11.h>

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

void fused_loss(const gf::LossProblem& problem, int device, uintptr_t stream, int threads) {
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::fused_loss(problem, threads);
  else gf::cuda::fused_loss(problem, device, stream);
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

  py::class_<gf::LossProblem>(m, "LossProblem")
      .def(py::init<>())
      .def_readwrite("dtype", &gf::LossProblem::dtype)
      .def_readwrite("term_a", &gf::LossProblem::term_a)
      .def_readwrite("term_b", &gf::LossProblem::term_b)
      .def_readwrite("rows", &gf::LossProblem::rows)
      .def_readwrite("cols_a", &gf::LossProblem::cols_a)
      .def_readwrite("n_a", &gf::LossProblem::n_a)
      .def_readwrite("cols_b", &gf::LossProblem::cols_b)
      .def_readwrite("x_a", &gf::LossProblem::x_a)
      .def_readwrite("y_a", &gf::LossProblem::y_a)
      .def_readwrite("x_b", &gf::LossProblem::x_b)
      .def_readwrite("y_b", &gf::LossProblem::y_b)
      .def_readwrite("weight_b", &gf::LossProblem::weight_b)
      .def_readwrite("out_total", &gf::LossProblem::out_total)
      .def_readwrite("total_divisor", &gf::LossProblem::total_divisor)
      .def_readwrite("out_rows", &gf::LossProblem::out_rows)
      .def_readwrite("out_elems", &gf::LossProblem::out_elems)
      .def_readwrite("grad_x_a", &gf::LossProblem::grad_x_a)
      .def_readwrite("grad_y_a", &gf::LossProblem::grad_y_a)
      .def_readwrite("grad_x_b", &gf::LossProblem::grad_x_b)
      .def_readwrite("grad_y_b", &gf::LossProblem::grad_y_b)
      .def_readwrite("grad_scale_a", &gf::LossProblem::grad_scale_a)
      .def_readwrite("grad_scale_b", &gf::LossProblem::grad_scale_b)
      .def_readwrite("workspace", &gf::LossProblem::workspace);

  m.def("reparameterise_forward", &reparameterise_forward);
  m.def("reparameterise_backward", &reparameterise_backward);
  m.def("dropout_forward", &dropout_forward);
  m.def("dropout_backward", &dropout_backward);
  m.def("fused_loss", &fused_loss);
  m.def("cuda_available", &gf::cuda::available);
  m.def("build_info", &build_info);
}
