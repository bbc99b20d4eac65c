#include "../kernels.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace gf::cpu {

bool has_openmp() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace gf::cpu
