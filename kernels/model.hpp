#pragma once
// Integer models in a safetensors-layout file, addressed by the SHA-256 of the file:
//   u64 little-endian header length N | N bytes JSON header | tensor data
// Header: {"__metadata__": {"format": "haca-int8-v2", "name": ...,
//            "input_shape": "[1,28,28]",           (per sample; JSON text, as metadata values are strings)
//            "layers": "[{\"kind\":\"conv2d\",\"out_c\":16,\"kernel\":3,\"stride\":1,\"pad\":1,\"relu\":true},
//                        {\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},{\"kind\":\"flatten\"},
//                        {\"kind\":\"dense\",\"out\":10,\"relu\":false}]"},
//          "layers.<i>.weight":  {"dtype": "I8",  "shape": [out, in] | [out_c, in_c, kh, kw], "data_offsets": [b, e]},
//          "layers.<i>.bias":    {"dtype": "I32", "shape": [out], ...},
//          "layers.<i>.requant": {"dtype": "I32", "shape": [2], ...}}   // multiplier, shift
// Offsets are relative to the start of the data section, as in safetensors. Shapes chain from
// input_shape through the layers; the loader checks every one.
//
// On the wire a job's input is always i8 [rows, input_size()]: each row is one sample in
// input_shape's layout (NCHW for images), flattened.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/ops.hpp"
#include "kernels/tensor.hpp"
#include "proto/error.hpp"

namespace haca::kernels {

enum class layer_kind { dense, conv2d, maxpool, flatten };

struct layer {
  layer_kind kind = layer_kind::dense;
  int in = 0, out = 0;               // dense: features in and out
  conv2d_shape conv;                 // conv2d
  maxpool_shape pool;                // maxpool
  std::vector<std::int8_t> weight;   // dense: out x in; conv2d: out_c x in_c x kh x kw
  std::vector<std::int32_t> bias;    // out (dense) or out_c (conv2d)
  requant_params rq;                 // dense and conv2d
  std::vector<std::int64_t> out_shape; // per sample, filled by the loader / builder
};

struct model {
  std::string hash; // SHA-256 hex of the file bytes
  std::string name;
  // Other __metadata__ entries, kept as they are (e.g. "float_accuracy", "train_command").
  std::map<std::string, std::string> metadata;
  std::vector<std::int64_t> input_shape; // per sample, e.g. {784} or {1, 28, 28}
  std::vector<layer> layers;

  int input_size() const;  // product of input_shape
  int output_size() const; // features of the last layer's output
  // Kept for callers that think in flat rows.
  int input_dim() const { return input_size(); }
  int output_dim() const { return output_size(); }
};

// Fills each layer's shapes (in, conv.in_*, pool.*, out_shape) from input_shape and checks that
// they chain and that weights/biases have the right sizes.
status complete_shapes(model& m);

// Rejects wrong magic/format, truncated or overlapping tensors, shape mismatches between
// layers, multipliers outside [2^30, 2^31), shifts outside [0, 31], and (when expected_hash is
// given) bytes whose hash differs. Never throws.
result<model> load_model(std::string_view file_bytes, std::string_view expected_hash = {});
result<model> load_model_file(const std::string& path);
std::string save_model(const model& m); // file bytes; m.hash is ignored

// A deterministic int8 MLP (splitmix64 from seed) with dims e.g. {784, 128, 10}: the same seed
// gives the same bytes on every machine. Its requant scales keep activations in range.
model generate_mlp(std::uint64_t seed, const std::vector<int>& dims, const std::string& name);

// Whether layer i's output is hashed into the trace: it is, unless the next layer is a maxpool
// or flatten (those join the trace layer before them; see inference::layer_hashes).
bool ends_trace_layer(const model& m, std::size_t i);

// A model with its weights packed for one backend, ready to run many times.
struct prepared_model {
  const model* m = nullptr;
  const backend* be = nullptr;
  std::vector<packed_weights> packed; // per layer; empty for layers without weights
};
prepared_model prepare(const model& m, const backend& be);

struct inference {
  tensor output;                          // i8 [rows, output_size]: the last layer's values
  std::vector<std::int32_t> classes;      // argmax per row
  // One BLAKE3 hash per trace layer: a layer together with the maxpool and flatten layers right
  // after it (conv2d+maxpool, dense, ...), over the last one's output bytes for all rows. Pools and
  // flattens only shrink or relabel what the layer before them computed, and leaving their
  // inputs unhashed keeps hashing a small share of inference time.
  std::vector<std::string> layer_hashes;
  std::string trace_root;                 // Merkle root of layer_hashes
  std::string output_hash;                // SHA-256 hex of output.data
};

// The hash of one trace layer's output bytes (BLAKE3, hex).
std::string layer_hash(std::string_view bytes);
// Sets trace_root and output_hash from layer_hashes and output: the rest of run_model's hashing.
void seal_trace(inference& r);

// A test switch (`haca provider --cheat-rate`, `haca verifier --lie-rate`): one value of one
// layer's output changed before it is hashed and fed on, so every hash after it is consistent
// with a wrong result, as a cheater would sign it.
struct corruption {
  std::size_t layer = 0;  // index into model::layers (taken modulo their count)
  std::size_t value = 0;  // index into that layer's output (taken modulo its size)
  std::int8_t delta = 1;  // added, wrapping; 0 is made 1
};

// Checks the input (dtype i8, shape [rows, input_size], 1 <= rows <= max_rows) and runs it.
result<inference> run_model(const prepared_model& pm, const tensor& input, int max_rows = 256,
                            const std::optional<corruption>& corrupt = std::nullopt);

// ---- the referee of a dispute: one trace layer at a time ----
std::size_t trace_layer_count(const model& m);
// What a party hands the referee: the output of trace layer t on `input` (i8 [rows, width]),
// whose layer hash the disputing parties agree on.
result<tensor> trace_layer_output(const prepared_model& pm, const tensor& input, std::size_t t, int max_rows = 256);
// The referee's re-run of trace layer t alone, from the activation entering it (the input for
// t = 0, else the output of trace layer t-1): its layer hash, and the output's SHA-256 when t
// is the last trace layer.
struct layer_check {
  std::string layer_hash;
  std::string output_hash; // "" unless t is the last trace layer
};
result<layer_check> run_trace_layer(const prepared_model& pm, std::size_t t, const tensor& entering, int max_rows = 256);

// Convenience for tests and one-off runs: prepares, then runs.
result<inference> run_model(const model& m, const tensor& input, const backend& be, int max_rows = 256);

} // namespace haca::kernels
