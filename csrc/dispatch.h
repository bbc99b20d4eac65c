// Maps the runtime dtype and loss terms to the template arguments of a kernel.
#pragma once

#include <stdexcept>
#include <string>

#include "genfast_math.h"
#include "kernels.h"

namespace gf {

template <class T> struct Tag { using type = T; };

template <class F> void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: f(Tag<float>{}); return;
    case DType::Float64: f(Tag<double>{}); return;
    case DType::Float16: f(Tag<half_t>{}); return;
    case DType::BFloat16: f(Tag<bfloat16_t>{}); return;
  }
  throw std::invalid_argument("genfast: unknown dtype code " + std::to_string(int(dtype)));
}

// The term pairs the ops use: a reconstruction term, a KL term, or both (the VAE loss).
template <class F> void dispatch_terms(Term a, Term b, F&& f) {
  if (b == Term::None) {
    if (a == Term::Bce) return f(Tag<BceTerm>{}, Tag<NoTerm>{});
    if (a == Term::BceLogits) return f(Tag<BceLogitsTerm>{}, Tag<NoTerm>{});
    if (a == Term::Kl) return f(Tag<KlTerm>{}, Tag<NoTerm>{});
  } else if (b == Term::Kl) {
    if (a == Term::Bce) return f(Tag<BceTerm>{}, Tag<KlTerm>{});
    if (a == Term::BceLogits) return f(Tag<BceLogitsTerm>{}, Tag<KlTerm>{});
  }
  throw std::invalid_argument("genfast: unsupported loss terms (" + std::to_string(int(a)) + ", " +
                              std::to_string(int(b)) + ")");
}

}  // namespace gf
