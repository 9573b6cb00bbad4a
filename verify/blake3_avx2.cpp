// BLAKE3 AVX2 path: 8 inputs per pass in ymm lanes. AVX2 has no rotate: rotates by 16 and 8
// bits are byte shuffles (vpshufb), by 12 and 7 a shift pair and an or.
// Compiled for AVX2 by the target pragma below (no global -m flags); only called when cpuid
// reports AVX2. Standard headers come before the pragma so that no inline library code is
// compiled for AVX2.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "verify/blake3_internal.hpp"

#pragma GCC push_options
#pragma GCC target("avx2")

#include "verify/blake3_lanes.hpp"

namespace haca::verify::blake3_detail {
namespace {

struct ymm_ops : ymm_base {
  template <int n> static V ror(V a) {
    if constexpr (n == 16) {
      return _mm256_shuffle_epi8(a, _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, //
                                                     2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    } else if constexpr (n == 8) {
      return _mm256_shuffle_epi8(a, _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, //
                                                     1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
    } else {
      return _mm256_or_si256(_mm256_srli_epi32(a, n), _mm256_slli_epi32(a, 32 - n));
    }
  }
};

// The same with 4 lanes in xmm (SSSE3 shuffles, implied by the AVX2 target): leftover inputs.
struct xmm_ops : xmm_base {
  template <int n> static V ror(V a) {
    if constexpr (n == 16) {
      return _mm_shuffle_epi8(a, _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
    } else if constexpr (n == 8) {
      return _mm_shuffle_epi8(a, _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
    } else {
      return _mm_or_si128(_mm_srli_epi32(a, n), _mm_slli_epi32(a, 32 - n));
    }
  }
};

} // namespace

void hash_many_avx2(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
                    bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
                    std::uint8_t* out) {
  hash_many_lanes<ymm_ops, xmm_ops>(input, count, blocks, counter, increment, flags, flag_start, flag_end, out);
}

} // namespace haca::verify::blake3_detail

#pragma GCC pop_options
