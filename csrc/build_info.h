// What this build of genfast._C contains, for genfast.build_info().
#pragma once

#include <pybind11/pybind11.h>

namespace gf {
pybind11::dict build_info();
}  // namespace gf
