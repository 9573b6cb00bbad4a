#pragma once
// Post-training quantization of a float net (train/float_net.hpp) into the int8 model format
// of kernels/model.hpp, and a plain-loop int8 simulator with the engine's arithmetic (used to
// pick calibration settings on training images before the engine sees the model).
//
// Scales (real = q * scale, all symmetric, zero point 0):
//   input: 1/127 (kernels::quantize_pixels); maxpool and flatten keep their input's scale.
//   weights: per tensor, max|w| / 127, q = round(w / s_w) in [-127, 127].
//   bias: int32 round(b / (s_in * s_w)), i.e. in accumulator units.
//   outputs: hidden (ReLU) layers: a high percentile of the positive float activations on
//   calibration images / 127; the last layer (logits): max |logit| / 127.
//   requant: quantize_multiplier(s_in * s_w / s_out); the scale actually realized by
//   (multiplier, shift) becomes the next layer's input scale.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kernels/model.hpp"
#include "train/float_net.hpp"

namespace haca::train {

// Per weighted layer: the percentile of positive post-ReLU activations (hidden layers) or the
// max |logit| (last layer), in float units. Entries for maxpool/flatten are 0.
std::vector<double> calibrate_ranges(const fnet& net, const std::int8_t* inputs, int n, double percentile);

struct quantized {
  kernels::model model;
  std::vector<double> output_scales; // per layer, the real scale of its int8 output
  std::vector<std::string> notes;    // e.g. a clamped requant ratio
};

// ranges from calibrate_ranges. metadata goes into the model as is.
quantized quantize_net(const fnet& net, const std::vector<double>& ranges, const std::string& name,
                       const std::map<std::string, std::string>& metadata);

// Int8 forward pass with plain loops and kernels::requantize: the engine's arithmetic.
// Returns the arg-max class per input (first on ties), inputs n x input_size int8.
std::vector<std::uint8_t> int8_predict(const kernels::model& m, const std::int8_t* inputs, int n);

} // namespace haca::train
