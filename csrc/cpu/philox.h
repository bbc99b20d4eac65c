// Philox4x32-10 words for a run of consecutive counters, vectorised by hand: GCC does not
// vectorise the 32x32->64-bit products well. The bits equal gf::philox4x32_10's (and CUDA's).
#pragma once

#include <cstdint>

namespace gf::cpu {

// For groups g = first_group .. first_group + groups - 1, writes the four Philox words of counter
// (g, offset) under key seed to word0[j] .. word3[j], j = g - first_group (planar layout).
void philox_words(uint64_t first_group, int groups, uint64_t seed, uint64_t offset, uint32_t* word0,
                  uint32_t* word1, uint32_t* word2, uint32_t* word3);

}  // namespace gf::cpu
