// The build's description: version, CUDA (toolkit version, architectures), OpenMP, compiler and
// the CPU code path picked at load time.
#include "build_info.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#ifdef GENFAST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include <string>

#ifndef GENFAST_VERSION
#define GENFAST_VERSION "unknown"
#endif

namespace py = pybind11;

namespace gf {

py::dict build_info() {
  py::dict info;
  info["version"] = GENFAST_VERSION;
#ifdef GENFAST_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
  info["cuda_archs"] = GENFAST_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_version"] = py::none();
  info["cuda_archs"] = "";
#endif
#if defined(_OPENMP)
  info["openmp"] = true;
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_max_threads"] = 1;
#endif
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

}  // namespace gf
