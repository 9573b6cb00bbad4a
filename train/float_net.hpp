#pragma once
// A tiny float training engine for the models haca ships: dense, conv2d (stride 1, zero pad,
// im2col + a register-blocked float GEMM), ReLU, 2x2 max pooling, flatten, softmax
// cross-entropy, Adam on mini-batches.
//
// Deterministic: the same inputs, architecture and seed give bit-identical weights on a given
// machine and binary. Every float sum runs in a fixed order (no reassociation, no FMA
// contraction in the GEMM); a mini-batch is always split into the same two shards, each
// computed by its own thread, and the two gradient sums are added shard 0 + shard 1.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/error.hpp"

namespace haca::train {

enum class flayer_kind { dense, conv2d, maxpool, flatten };

struct fshape {
  int c = 1, h = 1, w = 1;
  int size() const { return c * h * w; }
};

struct flayer {
  flayer_kind kind = flayer_kind::dense;
  bool relu = false;
  fshape in, out;
  int kernel = 0, pad = 0, stride = 1; // conv2d (stride 1) and maxpool (stride = kernel)
  std::vector<float> w; // dense: [out][in]; conv2d: [out_c][in_c * kernel * kernel]
  std::vector<float> b; // out features / out channels
};

struct fnet {
  fshape input;
  std::vector<flayer> layers;

  // Builders: each appends a layer whose input is the previous output.
  fnet& dense(int out, bool relu);
  fnet& conv2d(int out_c, int kernel, int pad, bool relu);
  fnet& maxpool(int kernel);
  fnet& flatten();
  fshape output() const { return layers.empty() ? input : layers.back().out; }
  // He-uniform weights in [-sqrt(6/fan_in), sqrt(6/fan_in)], zero biases; a splitmix64
  // stream from seed (no libm, so the same on every machine).
  void init(std::uint64_t seed);
  std::size_t parameter_count() const;
};

// "mlp": 784 -> 256 (ReLU) -> 10. "cnn": conv 1->16 3x3 pad 1 + ReLU, maxpool 2,
// conv 16->32 3x3 pad 1 + ReLU, maxpool 2, flatten, dense 1568 -> 128 (ReLU) -> 10.
result<fnet> make_architecture(std::string_view arch);

struct train_config {
  int epochs = 10;
  int batch = 64;
  double lr = 1e-3;               // Adam
  double final_lr_fraction = 0.02; // lr decays linearly from lr to lr * this over all steps
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::uint64_t seed = 1;          // shuffling (and flips)
  bool hflip = false;              // augmentation: mirror each image left-right with probability 1/2
};

struct epoch_stats {
  int epoch = 0; // 1-based
  double loss = 0, train_accuracy = 0, seconds = 0, lr = 0;
};

// Inputs are int8 samples as the int8 engine sees them (real value q / 127), n x input.size().
void train_net(fnet& net, const std::vector<std::int8_t>& inputs, const std::vector<std::uint8_t>& labels,
               const train_config& cfg, const std::function<void(const epoch_stats&)>& on_epoch);

// Float forward pass of n inputs; visit(layer, values, rows) sees each layer's output for a
// chunk of rows (values: rows x layer.out.size()), layer -1 being the input.
void forward_visit(const fnet& net, const std::int8_t* inputs, int n,
                   const std::function<void(int layer, const float* values, int rows)>& visit);

// Arg-max of the float logits (first on ties).
std::vector<std::uint8_t> predict(const fnet& net, const std::int8_t* inputs, int n);
double accuracy(const std::vector<std::uint8_t>& predicted, const std::vector<std::uint8_t>& labels);

// q = (p * 127 + 127) / 255, the engine's input quantization (kernels::quantize_pixels).
std::vector<std::int8_t> quantize_pixels_u8(const std::vector<std::uint8_t>& pixels);

} // namespace haca::train
