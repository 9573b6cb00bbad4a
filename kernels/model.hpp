#pragma once
// Integer MLP models in a safetensors-layout file, addressed by the SHA-256 of the file:
//   u64 little-endian header length N | N bytes JSON header | tensor data
// Header: {"__metadata__": {"format": "haca-int8-v1", "arch": "mlp", "name": ...,
//          "layers": "<count>", "input_dim": "784"},
//          "layers.<i>.weight": {"dtype": "I8", "shape": [out, in], "data_offsets": [b, e]},
//          "layers.<i>.bias": {"dtype": "I32", "shape": [out], ...},
//          "layers.<i>.requant": {"dtype": "I32", "shape": [3], ...}}   // multiplier, shift, relu
// Offsets are relative to the start of the data section, as in safetensors.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/ops.hpp"
#include "kernels/tensor.hpp"
#include "proto/error.hpp"

namespace haca::kernels {

struct dense_layer {
  int in = 0;
  int out = 0;
  std::vector<std::int8_t> weight; // out x in, row-major
  std::vector<std::int32_t> bias;  // out
  std::int32_t multiplier = 1 << 30;
  int shift = 0;
  bool relu = true;
};

struct model {
  std::string hash; // SHA-256 hex of the file bytes
  std::string name;
  std::vector<dense_layer> layers;

  int input_dim() const { return layers.empty() ? 0 : layers.front().in; }
  int output_dim() const { return layers.empty() ? 0 : layers.back().out; }
};

// Rejects wrong magic/format, truncated or overlapping tensors, shape mismatches between
// layers, multipliers outside [2^30, 2^31), shifts outside [0, 31], and (when expected_hash is
// given) bytes whose hash differs. Never throws.
result<model> load_model(std::string_view file_bytes, std::string_view expected_hash = {});
result<model> load_model_file(const std::string& path);
std::string save_model(const model& m); // file bytes; m.hash is ignored

// A deterministic int8 MLP (splitmix64 from seed) with dims e.g. {784, 128, 10}: the same seed
// gives the same bytes on every machine. Its requant scales keep activations in range.
model generate_mlp(std::uint64_t seed, const std::vector<int>& dims, const std::string& name);

struct inference {
  tensor output;                          // i8 [rows, output_dim]: the last layer's values
  std::vector<std::int32_t> classes;      // argmax per row
  std::vector<std::string> layer_hashes;  // SHA-256 hex of each layer's output bytes
  std::string trace_root;                 // Merkle root of layer_hashes
  std::string output_hash;                // SHA-256 hex of output.data
};

// Checks the input (dtype i8, shape [rows, input_dim], 1 <= rows <= max_rows) and runs it.
result<inference> run_model(const model& m, const tensor& input, const backend& be, int max_rows = 256);

} // namespace haca::kernels
