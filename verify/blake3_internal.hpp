#pragma once
// BLAKE3 internals shared by verify/blake3.cpp (portable code, tree) and the SIMD kernels in
// verify/blake3_avx2.cpp and verify/blake3_avx512.cpp: the spec's constants and the one
// operation the kernels provide, hashing many equal-length inputs at once.
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace haca::verify::blake3_detail {

// Words are loaded from and stored to memory as they are (the SIMD paths do not byte-swap).
static_assert(std::endian::native == std::endian::little, "BLAKE3 here assumes a little-endian CPU");

inline constexpr std::size_t block_len = 64;
inline constexpr std::size_t chunk_len = 1024;
inline constexpr std::size_t blocks_per_chunk = chunk_len / block_len;
inline constexpr std::size_t cv_len = 32; // chaining value: 8 words, stored little-endian

// Domain-separation flags (the keyed and derive-key flags are not used in hash mode).
inline constexpr std::uint32_t chunk_start = 1;
inline constexpr std::uint32_t chunk_end = 2;
inline constexpr std::uint32_t parent = 4;
inline constexpr std::uint32_t root = 8;

// Same words as SHA-256's initial hash value; in hash mode this is also the key.
inline constexpr std::uint32_t iv[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                                        0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

// Message word order of each of the 7 rounds. The spec permutes the 16 message words between
// rounds (word i of the next round is word perm[i] of this one); writing down where each
// round's words come from instead lets every round index the original words directly.
inline constexpr std::array<std::array<std::uint8_t, 16>, 7> msg_schedule = [] {
  constexpr std::uint8_t perm[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
  std::array<std::array<std::uint8_t, 16>, 7> s{};
  for (std::uint8_t i = 0; i < 16; ++i) s[0][i] = i;
  for (std::size_t r = 1; r < 7; ++r)
    for (std::size_t i = 0; i < 16; ++i) s[r][i] = s[r - 1][perm[i]];
  return s;
}();

// Hashes `count` inputs of `blocks` whole 64-byte blocks each, stored back to back from
// `input`, each starting from the IV as key. Input i gets counter `counter + i` (or `counter`
// for all when !increment), block length 64 and `flags` on every block, plus `flag_start` on
// its first block and `flag_end` on its last; its chaining value goes to out + 32 i.
//   whole chunks: blocks = 16, counter = chunk index, increment, chunk_start / chunk_end
//   parents:      blocks = 1 (left CV || right CV), counter 0, no increment, parent
// With blocks == 1, out may equal input (parents reduced in place): every input is read before
// its CV is written, and CV i lands at or before input i.
using hash_many_fn = void (*)(const std::uint8_t* input, std::size_t count, std::size_t blocks,
                              std::uint64_t counter, bool increment, std::uint32_t flags,
                              std::uint32_t flag_start, std::uint32_t flag_end, std::uint8_t* out);

void hash_many_portable(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
                        bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
                        std::uint8_t* out);
// Call only when the CPU has AVX2 (resp. AVX-512 F + VL): these are compiled for it.
void hash_many_avx2(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
                    bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
                    std::uint8_t* out);
void hash_many_avx512(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
                      bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
                      std::uint8_t* out);

} // namespace haca::verify::blake3_detail
