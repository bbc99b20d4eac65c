// The Python module genfast._C: thin bindings over the kernel entry points, plus the enums and the
// LossProblem struct of kernels.h, so that Python reads the codes instead of copying them.
// Pointers arrive as integers (tensor.data_ptr()) and are validated in genfast/ops before they
// get here. Entry points take the launch triple (device, stream, threads): device < 0 is the CPU
// (threads used), else a CUDA device index (stream used).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "build_info.h"
#include "cpu/philox.h"
#include "kernels.h"

namespace py = pybind11;

namespace {

void reparameterise_forward(gf::DType dtype, int64_t n, uintptr_t mu, uintptr_t logvar, uintptr_t seed_offset,
                            uintptr_t z, uintptr_t half_noise, int device, uintptr_t stream, int threads) {
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::reparameterise_forward(dtype, n, mu, logvar, seed_offset, z, half_noise, threads);
  else gf::cuda::reparameterise_forward(dtype, n, mu, logvar, seed_offset, z, half_noise, device, stream);
}

void reparameterise_backward(gf::DType dtype, int64_t n, uintptr_t grad_z, uintptr_t logvar,
                             uintptr_t seed_offset, uintptr_t grad_logvar, int device, uintptr_t stream,
                             int threads) {
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::reparameterise_backward(dtype, n, grad_z, logvar, seed_offset, grad_logvar, threads);
  else gf::cuda::reparameterise_backward(dtype, n, grad_z, logvar, seed_offset, grad_logvar, device, stream);
}

void dropout_forward(gf::DType dtype, int64_t n, uintptr_t x, uint32_t keep_threshold, double scale,
                     uintptr_t seed_offset, uintptr_t out, uintptr_t mask, int device, uintptr_t stream,
                     int threads) {
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::dropout_forward(dtype, n, x, keep_threshold, scale, seed_offset, out, mask, threads);
  else gf::cuda::dropout_forward(dtype, n, x, keep_threshold, scale, seed_offset, out, mask, device, stream);
}

void dropout_backward(gf::DType dtype, int64_t n, uintptr_t grad_out, uintptr_t mask, double scale,
                      uintptr_t grad_x, int device, uintptr_t stream, int threads) {
  py::gil_scoped_release release;
  if (device < 0) gf::cpu::dropout_backward(dtype, n, grad_out, mask, scale, grad_x, threads);
  else gf::cuda::dropout_backward(dtype, n, grad_out, mask, scale, grad_x, device, stream);
}

void fused_loss(const gf::LossProblem& problem, int device, uintptr_t stream, int threads) {
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

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "genfast kernels (CPU and, when built with it, CUDA); called through genfast.ops";

  // Value names are the Python spellings: torch.<dtype>, the loss terms, the reduction strings.
  py::enum_<gf::DType>(m, "DType")
      .value("float32", gf::DType::Float32)
      .value("float64", gf::DType::Float64)
      .value("float16", gf::DType::Float16)
      .value("bfloat16", gf::DType::BFloat16);
  py::enum_<gf::Term>(m, "LossTerm")
      .value("none", gf::Term::None)
      .value("bce", gf::Term::Bce)
      .value("bce_logits", gf::Term::BceLogits)
      .value("kl", gf::Term::Kl);
  py::enum_<gf::Reduction>(m, "Reduction")
      .value("sum", gf::Reduction::Sum)
      .value("mean", gf::Reduction::Mean)
      .value("none", gf::Reduction::None);

  using gf::LossProblem;
  using gf::LossSegment;
  py::class_<LossSegment>(m, "LossSegment", "One segment of a fused loss (see csrc/kernels.h)")
      .def(py::init<>())
      .def_readwrite("term", &LossSegment::term)
      .def_readwrite("cols", &LossSegment::cols)
      .def_readwrite("n", &LossSegment::n)
      .def_readwrite("x", &LossSegment::x)
      .def_readwrite("y", &LossSegment::y)
      .def_readwrite("grad_x", &LossSegment::grad_x)
      .def_readwrite("grad_y", &LossSegment::grad_y)
      .def_readwrite("weight", &LossSegment::weight);
  py::class_<LossProblem>(m, "LossProblem", "A fused, row-structured loss (see csrc/kernels.h)")
      .def(py::init<>())
      .def_readwrite("dtype", &LossProblem::dtype)
      .def_readwrite("reduction", &LossProblem::reduction)
      .def_readwrite("per_element", &LossProblem::per_element)
      .def_readwrite("rows", &LossProblem::rows)
      .def_readwrite("a", &LossProblem::a)
      .def_readwrite("b", &LossProblem::b)
      .def_readwrite("out", &LossProblem::out)
      .def_readwrite("workspace", &LossProblem::workspace)
      .def_static("workspace_bytes", &LossProblem::workspace_bytes);
  m.attr("FLAT_ROW_ELEMENTS") = gf::kFlatRowElements;

  m.def("reparameterise_forward", &reparameterise_forward);
  m.def("reparameterise_backward", &reparameterise_backward);
  m.def("dropout_forward", &dropout_forward);
  m.def("dropout_backward", &dropout_backward);
  m.def("fused_loss", &fused_loss);
  m.def("fused_loss_scratch_bytes", &gf::cpu::fused_loss_scratch_bytes,
        "Bytes the CPU fused loss's per-thread scratch buffers hold now, all threads together");
  m.def("build_info", &gf::build_info);
  m.def("_philox_words", &philox_words);
}
