// CPU work splitting. Work is cut into fixed chunks whatever the thread count, and each chunk is
// computed by one thread with the same code, so results do not depend on the number of threads.
#pragma once

#include <algorithm>
#include <cstdint>

// Hot loops are compiled for AVX-512, AVX2 and baseline x86-64, picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GF_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GF_CPU_CLONES
#endif

// Helpers of the hot loops must be inlined into them to be compiled for each clone's ISA.
#define GF_CPU_INLINE inline __attribute__((always_inline))

namespace gf::cpu {

// Calls body(begin, end) for the chunks [k * grain, (k + 1) * grain) of [0, n).
template <class Body>
void parallel_chunks(int64_t n, int64_t grain, int threads, Body&& body) {
  const int64_t chunks = (n + grain - 1) / grain;
  if (chunks <= 1 || threads <= 1) {
    for (int64_t c = 0; c < chunks; ++c) body(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t c = 0; c < chunks; ++c) body(c * grain, std::min(n, (c + 1) * grain));
}

// Elements per chunk of parallel work: small enough to balance two threads on a 128-image batch,
// a multiple of 256, so that chunks start on Philox blocks of 4.
constexpr int64_t kElementGrain = 1 << 13;

// Elements computed into local buffers at a time by the inner loops (a multiple of 4 too).
constexpr int kBlock = 256;

}  // namespace gf::cpu
