// Maps the runtime dtype and term codes to the template arguments of a kernel.
#pragma once

#include <stdexcept>
#include <string>

#include "genfast_math.h"
#include "kernels.h"

namespace gf {

template <class T> struct Tag { using type = T; };

template <class F> void dispatch_dtype(int dtype, F&& f) {
  switch (static_cast<DType>(dtype)) {
    case DType::Float32: f(Tag<float>{}); return;
    case DType::Float64: f(Tag<double>{}); return;
    case DType::Float16: f(Tag<half_t>{}); return;
    case DType::BFloat16: f(Tag<bfloat16_t>{}); return;
  }
  throw std::invalid_argument("genfast: unknown dtype code " + std::to_string(dtype));
}

// The term pairs the ops use: a reconstruction term, a KL term, or both (the VAE loss).
template <class F> void dispatch_terms(int term_a, int term_b, F&& f) {
  const auto a = static_cast<Term>(term_a);
  const auto b = static_cast<Term>(term_b);
  if (b == Term::None) {
    if (a == Term::Bce) return f(Tag<BceTerm>{}, Tag<NoTerm>{});
    if (a == Term::BceLogits) return f(Tag<BceLogitsTerm>{}, Tag<NoTerm>{});
    if (a == Term::Kl) return f(Tag<KlTerm>{}, Tag<NoTerm>{});
  } else if (b == Term::Kl) {
    if (a == Term::Bce) return f(Tag<BceTerm>{}, Tag<KlTerm>{});
    if (a == Term::BceLogits) return f(Tag<BceLogitsTerm>{}, Tag<KlTerm>{});
  }
  throw std::invalid_argument("genfast: unsupported loss terms (" + std::to_string(term_a) + ", " +
                              std::to_string(term_b) + ")");
}

}  // namespace gf
