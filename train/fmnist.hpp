#pragma once
// Fashion-MNIST models for haca: train in float, quantize to int8, evaluate with the int8
// engine. Used by `haca train` / `haca eval` (app/train.cpp) and tests/unit/test_accuracy.cpp.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/model.hpp"
#include "train/float_net.hpp"
#include "train/idx.hpp"

namespace haca::train {

inline constexpr const char* default_fmnist_dir = "/usr/share/datasets/fashion-mnist";
inline constexpr const char* fmnist_dataset_name = "fashion-mnist (Debian dataset-fashion-mnist)";
inline constexpr const char* fmnist_input_quantization = "q = (p*127+127)/255";

struct fmnist_split {
  labelled_images raw;
  std::vector<std::int8_t> inputs; // count x 784, quantized as the engine's inputs
  int count() const { return raw.images.count; }
};

// Reads <dir>/{train,t10k}-... (test only with want_train = false).
result<fmnist_split> load_fmnist_split(const std::string& dir, const std::string& prefix);

struct fmnist_options {
  std::string arch = "mlp"; // mlp | cnn
  int epochs = 0;           // 0: default_epochs(arch)
  std::uint64_t seed = 1;
};
int default_epochs(std::string_view arch);
// The command that reproduces a model (stored as its "train_command"); the bytes do not depend
// on --data or --out.
std::string train_command(const fmnist_options& o);

struct fmnist_outcome {
  kernels::model model; // int8, with metadata
  double float_accuracy = 0;     // float net, all test images
  double int8_sim_accuracy = 0;  // train/quantize.hpp simulator, all test images
  std::vector<std::uint8_t> int8_sim_predictions;
  double percentile = 0;         // chosen calibration percentile
  double train_seconds = 0;
  std::vector<std::string> notes;
};

// Trains, calibrates and quantizes one architecture. log receives progress lines.
result<fmnist_outcome> train_fmnist(const fmnist_split& train, const fmnist_split& test, const fmnist_options& o,
                                    const std::function<void(const std::string&)>& log);

struct int8_eval {
  std::string backend;
  double accuracy = 0;
  double images_per_second = 0;
  std::vector<std::int32_t> predictions;
};
// All images through prepare + run_model in batches (the int8 engine).
result<int8_eval> evaluate_int8(const kernels::model& m, const kernels::backend& be, const fmnist_split& test,
                                int batch = 256);

} // namespace haca::train
