#include "verify/blake3.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <functional>

#include "verify/blake3_internal.hpp"
#include "verify/blake3_rounds.hpp"

namespace haca::verify {

namespace blake3_detail {
namespace {

std::uint32_t load_le32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24;
}

void store_le32(std::uint8_t* p, std::uint32_t x) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(x >> (8 * i));
}

// The scalar "vector" of one lane: the portable path runs the SIMD paths' rounds on it.
struct scalar_ops {
  using V = std::uint32_t;
  static V add(V a, V b) { return a + b; }
  static V xor_(V a, V b) { return a ^ b; }
  template <int n> static V ror(V a) { return std::rotr(a, n); }
};

// One compression, keeping the first 8 output words: the next chaining value, or with `root`
// in flags the 32-byte hash itself (longer outputs would need the other 8 words). out may
// equal cv.
void compress(const std::uint32_t cv[8], const std::uint8_t block[block_len], std::uint32_t len,
              std::uint64_t counter, std::uint32_t flags, std::uint32_t out[8]) {
  std::uint32_t m[16];
  for (int i = 0; i < 16; ++i) m[i] = load_le32(block + 4 * i);
  std::uint32_t v[16] = {cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
                         iv[0], iv[1], iv[2], iv[3], static_cast<std::uint32_t>(counter),
                         static_cast<std::uint32_t>(counter >> 32), len, flags};
  rounds_lanes<scalar_ops>(v, m);
  for (int i = 0; i < 8; ++i) out[i] = v[i] ^ v[i + 8];
}

void store_cv(const std::uint32_t cv[8], std::uint8_t* out) {
  for (int i = 0; i < 8; ++i) store_le32(out + 4 * i, cv[i]);
}

// The chaining value of one chunk of `len` bytes (0 only for the empty input), which may end
// in a partial block; `last_flags` goes on its last block (root, when it is the whole input).
void hash_chunk(const std::uint8_t* in, std::size_t len, std::uint64_t counter, std::uint32_t last_flags,
                std::uint8_t out[cv_len]) {
  std::uint32_t cv[8];
  std::copy(iv, iv + 8, cv);
  const std::size_t blocks = len == 0 ? 1 : (len + block_len - 1) / block_len;
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::size_t n = std::min(block_len, len - b * block_len);
    // A short last block is zero-padded; its real length goes into the compression.
    const std::uint8_t* block = in + b * block_len;
    std::uint8_t padded[block_len];
    if (n < block_len) {
      std::memset(padded, 0, block_len);
      if (n > 0) std::memcpy(padded, block, n); // n == 0 only for the empty input (in may be null)
      block = padded;
    }
    const std::uint32_t flags = (b == 0 ? chunk_start : 0) | (b + 1 == blocks ? chunk_end | last_flags : 0);
    compress(cv, block, static_cast<std::uint32_t>(n), counter, flags, cv);
  }
  store_cv(cv, out);
}

void hash_parent(const std::uint8_t left[cv_len], const std::uint8_t right[cv_len], std::uint32_t extra_flags,
                 std::uint8_t out[cv_len]) {
  std::uint8_t block[block_len];
  std::memcpy(block, left, cv_len);
  std::memcpy(block + cv_len, right, cv_len);
  std::uint32_t cv[8];
  compress(iv, block, block_len, 0, parent | extra_flags, cv);
  store_cv(cv, out);
}

// Chunks are hashed and reduced to a CV in windows of this many (8 KiB of CVs on the stack):
// enough parents per level to fill the SIMD lanes, bounded memory for any input length.
constexpr std::size_t window_chunks = 256;

// Hashes in[0, len) (1 .. window_chunks chunks, the first one numbered `counter`): all whole
// chunks at once through `hash_many`, then pairs of neighbours level by level, an odd last node
// moving up unpaired. That is the spec's tree (each left subtree the largest power of 2 chunks
// that leaves the right one non-empty): complete subtrees of 2^k chunks start at multiples of
// 2^k, so they are exactly what the level-by-level pairing forms. Returns the top CV, or with
// is_root (at least 2 chunks) the root hash.
void hash_window(const std::uint8_t* in, std::size_t len, std::uint64_t counter, bool is_root, hash_many_fn hash_many,
                 std::uint8_t out[cv_len]) {
  std::uint8_t cvs[window_chunks * cv_len];
  const std::size_t whole = len / chunk_len;
  hash_many(in, whole, blocks_per_chunk, counter, true, 0, chunk_start, chunk_end, cvs);
  std::size_t nodes = whole;
  if (len % chunk_len != 0) {
    hash_chunk(in + whole * chunk_len, len % chunk_len, counter + whole, 0, cvs + cv_len * whole);
    ++nodes;
  }
  while (nodes > 1) {
    const std::size_t pairs = nodes / 2;
    const std::uint32_t top = nodes == 2 && is_root ? root : 0;
    // Parents in place: parent i is block 2i,2i+1 of the CV array.
    hash_many(cvs, pairs, 1, 0, false, parent | top, 0, 0, cvs);
    if (nodes % 2 != 0) std::memcpy(cvs + cv_len * pairs, cvs + cv_len * (nodes - 1), cv_len);
    nodes = pairs + nodes % 2;
  }
  std::memcpy(out, cvs, cv_len);
}

} // namespace

void hash_many_portable(const std::uint8_t* input, std::size_t count, std::size_t blocks, std::uint64_t counter,
                        bool increment, std::uint32_t flags, std::uint32_t flag_start, std::uint32_t flag_end,
                        std::uint8_t* out) {
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t cv[8];
    std::copy(iv, iv + 8, cv);
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::uint32_t f = flags | (b == 0 ? flag_start : 0) | (b + 1 == blocks ? flag_end : 0);
      compress(cv, input + (i * blocks + b) * block_len, block_len, counter + (increment ? i : 0), f, cv);
    }
    store_cv(cv, out + i * cv_len); // after its input was read: parents may be reduced in place
  }
}

} // namespace blake3_detail

using namespace blake3_detail;

namespace {

bool cpu_has(blake3_isa isa) {
  __builtin_cpu_init(); // may run before libgcc's own constructor did it
  switch (isa) {
  case blake3_isa::portable: return true;
  case blake3_isa::avx2: return __builtin_cpu_supports("avx2");
  case blake3_isa::avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  }
  return false;
}

std::atomic<blake3_isa>& isa_in_use() {
  static std::atomic<blake3_isa> isa{cpu_has(blake3_isa::avx512) ? blake3_isa::avx512
                                     : cpu_has(blake3_isa::avx2) ? blake3_isa::avx2
                                                                 : blake3_isa::portable};
  return isa;
}

hash_many_fn hash_many_for(blake3_isa isa) {
  switch (isa) {
  case blake3_isa::avx512: return hash_many_avx512;
  case blake3_isa::avx2: return hash_many_avx2;
  case blake3_isa::portable: break;
  }
  return hash_many_portable;
}

constexpr std::size_t window_len = window_chunks * chunk_len;

// The chaining value of the subtree over in[0, len) whose first chunk is number `counter` (a
// subtree has the same shape as a whole input of its length), or with is_root the root hash.
void hash_subtree(const std::uint8_t* in, std::size_t len, std::uint64_t counter, bool is_root,
                  std::uint8_t out[cv_len]) {
  if (len <= chunk_len) { // one chunk: with is_root, its last block gives the root
    hash_chunk(in, len, counter, is_root ? root : 0, out);
    return;
  }
  const hash_many_fn hash_many = hash_many_for(isa_in_use().load(std::memory_order_relaxed));
  if (len <= window_len) {
    hash_window(in, len, counter, is_root, hash_many, out);
    return;
  }
  // Every window but the last is a complete subtree of window_chunks chunks. Their CVs go on a
  // stack; after the k-th, the top two are merged once per trailing zero bit of k (binary
  // addition), so the stack holds one complete subtree per 1 bit of k, the largest at the
  // bottom. The last window, which may be partial, is then merged with them from the right,
  // the last merge giving the subtree's CV (or the root).
  std::uint8_t stack[64][cv_len];
  std::size_t depth = 0;
  std::size_t offset = 0;
  for (std::uint64_t done = 1; len - offset > window_len; ++done, offset += window_len) {
    hash_window(in + offset, window_len, counter + offset / chunk_len, false, hash_many, stack[depth++]);
    for (std::uint64_t t = done; t % 2 == 0; t /= 2, --depth)
      hash_parent(stack[depth - 2], stack[depth - 1], 0, stack[depth - 2]);
  }
  std::uint8_t right[cv_len];
  hash_window(in + offset, len - offset, counter + offset / chunk_len, false, hash_many, right);
  while (depth > 0) {
    --depth;
    hash_parent(stack[depth], right, depth == 0 && is_root ? root : 0, depth == 0 ? out : right);
  }
}

} // namespace

digest blake3(std::string_view data) {
  digest d{};
  hash_subtree(reinterpret_cast<const std::uint8_t*>(data.data()), data.size(), 0, true, d.data());
  return d;
}

digest blake3_two_way(std::string_view data, const std::function<void(const std::function<void(int)>&)>& run_both) {
  const auto* in = reinterpret_cast<const std::uint8_t*>(data.data());
  const std::size_t len = data.size();
  if (len < two_way_min_bytes) return blake3(data);
  // The root's left subtree holds the largest power of 2 of whole chunks that leaves the right
  // one at least a byte; the two are independent until their parent, the root.
  const std::size_t left_len = std::bit_floor((len - 1) / chunk_len) * chunk_len;
  std::uint8_t cvs[2 * cv_len];
  run_both([&](int side) {
    if (side == 0) hash_subtree(in, left_len, 0, false, cvs);
    else hash_subtree(in + left_len, len - left_len, left_len / chunk_len, false, cvs + cv_len);
  });
  digest d{};
  hash_parent(cvs, cvs + cv_len, root, d.data());
  return d;
}

std::string blake3_hex(std::string_view data) { return to_hex(blake3(data)); }

blake3_isa blake3_current_isa() { return isa_in_use().load(); }

bool blake3_force_isa(blake3_isa isa) {
  if (!cpu_has(isa)) return false;
  isa_in_use().store(isa);
  return true;
}

const char* blake3_isa_name(blake3_isa isa) {
  switch (isa) {
  case blake3_isa::portable: return "portable";
  case blake3_isa::avx2: return "avx2";
  case blake3_isa::avx512: return "avx512";
  }
  return "unknown";
}

} // namespace haca::verify
