#pragma once
// Internal to the cpu backend: the packed weight layout and the per-ISA tile loops.
//
// Packed layout (one for every ISA): columns (rows of b) in blocks of 16, k padded with zeros
// to kp = round_up(k, 4); block `blk` holds kp/4 groups of 64 bytes, each group 16 columns x 4
// consecutive k values: data[blk * kp * 16 + g * 64 + col * 4 + kk] = b[blk*16 + col][g*4 + kk].
// That is the vpdpbusd operand layout (a zmm holds one group); the AVX2 path sign-extends 16
// bytes (4 columns x 4 k) to int16 and uses vpmaddwd. comp[j] = -128 * sum_k b[j][k] (wrapping)
// undoes the +128 that makes activations unsigned for vpdpbusd.
#include <cstddef>
#include <cstdint>

namespace haca::kernels::cpu_detail {

constexpr std::uint32_t packed_magic = 0x43505531; // "CPU1"

struct packed_b {
  std::uint32_t magic = packed_magic;
  int n = 0, k = 0, kp = 0, nblocks = 0;
  std::int32_t* comp = nullptr; // nblocks * 16
  std::int8_t* data = nullptr;  // nblocks * 16 * kp, 64-byte aligned
};

enum class out_kind { s32, i8, i8_transposed };

// Where a tile's results go. Row i (global), column j:
//   s32:           c[i * ld + j] = acc
//   i8:            o[i * ld + j] = epilogue(acc + bias[j])
//   i8_transposed: o[j * ld + i] = epilogue(acc + bias[j])      (conv2d: NCHW output)
struct out_desc {
  out_kind kind = out_kind::s32;
  std::int32_t* c = nullptr;
  std::int8_t* o = nullptr;
  std::size_t ld = 0;
  const std::int32_t* bias = nullptr; // n entries (i8 kinds)
  std::int32_t multiplier = 1 << 30;
  int shift = 0; // already clamped to [0, 31]
  bool relu = false;
};

// Rows [0, rows) of a (row stride lda) times column blocks [blk0, blk1) of b; row r of a is
// global row row_base + r. scratch: min(rows, a_chunk_rows(kp)) * kp bytes + 64 (AVX-512) or
// twice that (AVX2).
void run_scalar(const std::int8_t* a, std::size_t lda, int rows, int row_base, const packed_b& b, int blk0,
                int blk1, const out_desc& out);
void run_avx2(const std::int8_t* a, std::size_t lda, int rows, int row_base, const packed_b& b, int blk0, int blk1,
              const out_desc& out, void* scratch);
void run_avx512(const std::int8_t* a, std::size_t lda, int rows, int row_base, const packed_b& b, int blk0,
                int blk1, const out_desc& out, void* scratch);

// One output row of a 2x2, stride-2 max-pool: d[x] = max of r0[2x], r0[2x+1], r1[2x], r1[2x+1]
// for x < ow (the vertical max of the two rows, then the max of each pair of neighbours).
void maxpool2_row_avx2(const std::int8_t* r0, const std::int8_t* r1, int ow, std::int8_t* d);
void maxpool2_row_avx512(const std::int8_t* r0, const std::int8_t* r1, int ow, std::int8_t* d);

// Rows of a packed at a time by the SIMD paths (a multiple of 16).
int a_chunk_rows(int kp);

// The epilogue for one value, exactly the reference's arithmetic.
std::int8_t epilogue1(std::int32_t acc, std::int32_t bias, const out_desc& out);

} // namespace haca::kernels::cpu_detail
