#include "train/fmnist.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "kernels/ops.hpp"
#include "train/quantize.hpp"

namespace haca::train {
namespace {

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string architecture_text(std::string_view arch) {
  if (arch == "mlp")
    return "dense 784->256 + ReLU, dense 256->10";
  return "conv 1->16 3x3 pad 1 + ReLU, maxpool 2, conv 16->32 3x3 pad 1 + ReLU, maxpool 2, flatten, dense 1568->128 "
         "+ ReLU, dense 128->10";
}

} // namespace

result<fmnist_split> load_fmnist_split(const std::string& dir, const std::string& prefix) {
  auto raw = read_fashion_mnist(dir, prefix);
  if (!raw)
    return raw.err();
  fmnist_split s;
  s.raw = std::move(raw).value();
  s.inputs = quantize_pixels_u8(s.raw.images.pixels);
  return s;
}

int default_epochs(std::string_view arch) { return arch == "cnn" ? 12 : 20; }

std::string train_command(const fmnist_options& o) {
  return "haca train --arch " + o.arch + " --epochs " + std::to_string(o.epochs > 0 ? o.epochs : default_epochs(o.arch)) +
         " --seed " + std::to_string(o.seed);
}

result<fmnist_outcome> train_fmnist(const fmnist_split& train, const fmnist_split& test, const fmnist_options& opt,
                                    const std::function<void(const std::string&)>& log) {
  auto made = make_architecture(opt.arch);
  if (!made)
    return made.err();
  fnet net = std::move(made).value();
  fmnist_options o = opt;
  if (o.epochs <= 0)
    o.epochs = default_epochs(o.arch);

  train_config cfg;
  cfg.epochs = o.epochs;
  cfg.seed = o.seed;
  cfg.hflip = o.arch == "cnn"; // mirrored clothes are still the same class; the MLP does without
  net.init(o.seed);
  log(opt.arch + ": " + architecture_text(o.arch) + ", " + std::to_string(net.parameter_count()) + " parameters, " +
      std::to_string(cfg.epochs) + " epochs of " + std::to_string(train.count()) + " images, batch " +
      std::to_string(cfg.batch) + ", Adam lr " + fixed(cfg.lr, 4) + " -> " + fixed(cfg.lr * cfg.final_lr_fraction, 6));
  fmnist_outcome out;
  const auto t0 = std::chrono::steady_clock::now();
  train_net(net, train.inputs, train.raw.labels, cfg, [&](const epoch_stats& s) {
    log("  epoch " + std::to_string(s.epoch) + "/" + std::to_string(cfg.epochs) + "  loss " + fixed(s.loss, 4) +
        "  train acc " + fixed(s.train_accuracy, 4) + "  lr " + fixed(s.lr, 6) + "  " + fixed(s.seconds, 1) + " s");
  });
  out.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const auto float_pred = predict(net, test.inputs.data(), test.count());
  out.float_accuracy = accuracy(float_pred, test.raw.labels);
  log("  float test accuracy " + fixed(out.float_accuracy, 4) + " (training took " + fixed(out.train_seconds, 1) + " s)");

  // Calibration on training images [0, 5000); the percentile is chosen by agreement of the
  // int8 simulator with the float net on training images [5000, 10000). The test set is not
  // used for any choice.
  constexpr int calib_n = 5000, select_lo = 5000, select_n = 5000;
  const std::int8_t* calib = train.inputs.data();
  const std::int8_t* select = train.inputs.data() + static_cast<std::ptrdiff_t>(select_lo) * 784;
  const auto select_float = predict(net, select, select_n);
  std::map<std::string, std::string> meta{
      {"float_accuracy", fixed(out.float_accuracy, 4)},
      {"train_command", train_command(o)},
      {"dataset", fmnist_dataset_name},
      {"input_quantization", fmnist_input_quantization},
      {"architecture", architecture_text(o.arch)},
      {"training", "float32, Adam (lr " + fixed(cfg.lr, 4) + " decaying linearly to " +
                       fixed(cfg.lr * cfg.final_lr_fraction, 6) + "), batch " + std::to_string(cfg.batch) + ", " +
                       std::to_string(cfg.epochs) + " epochs over the 60000 training images" +
                       (cfg.hflip ? " (each mirrored left-right with probability 1/2)" : "") +
                       ", He-uniform init, seed " + std::to_string(o.seed)},
      {"labels", "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"},
  };
  double best_agree = -1;
  quantized best;
  for (double pct : {99.9, 99.99, 99.999, 100.0}) {
    const auto ranges = calibrate_ranges(net, calib, calib_n, pct);
    auto q = quantize_net(net, ranges, "fmnist-" + o.arch, meta);
    const auto p = int8_predict(q.model, select, select_n);
    const double agree = accuracy(p, select_float);
    log("  calibration: percentile " + fixed(pct, 3) + " -> int8/float agreement " + fixed(agree, 4) +
        " on training images 5000-9999");
    if (agree > best_agree) {
      best_agree = agree;
      best = std::move(q);
      out.percentile = pct;
    }
  }
  best.model.metadata["calibration"] =
      "weights: per-tensor max|w|/127; hidden activations: percentile " + fixed(out.percentile, 3) +
      " of positive float activations on training images 0-4999 (chosen by int8/float agreement on training images "
      "5000-9999); logits: max|z|/127; bias int32 = round(b/(s_in*s_w))";
  out.notes = best.notes;
  out.model = std::move(best.model);
  out.int8_sim_predictions = int8_predict(out.model, test.inputs.data(), test.count());
  out.int8_sim_accuracy = accuracy(out.int8_sim_predictions, test.raw.labels);
  log("  int8 test accuracy (simulator) " + fixed(out.int8_sim_accuracy, 4));
  return out;
}

result<int8_eval> evaluate_int8(const kernels::model& m, const kernels::backend& be, const fmnist_split& test,
                                int batch) {
  if (m.input_size() != 784)
    return make_error(errc::bad_model, "model input size is " + std::to_string(m.input_size()) + ", expected 784");
  int8_eval out;
  out.backend = be.name;
  const auto pm = kernels::prepare(m, be);
  const auto t0 = std::chrono::steady_clock::now();
  const int n = test.count();
  out.predictions.reserve(n);
  for (int start = 0; start < n; start += batch) {
    const int rows = std::min(batch, n - start);
    kernels::tensor in;
    in.type = kernels::dtype::i8;
    in.shape = {rows, 784};
    in.data.assign(reinterpret_cast<const char*>(test.inputs.data()) + static_cast<std::ptrdiff_t>(start) * 784,
                   static_cast<std::size_t>(rows) * 784);
    auto r = kernels::run_model(pm, in, batch);
    if (!r)
      return r.err();
    out.predictions.insert(out.predictions.end(), r->classes.begin(), r->classes.end());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::size_t hits = 0;
  for (int i = 0; i < n; ++i)
    hits += out.predictions[i] == static_cast<std::int32_t>(test.raw.labels[i]);
  out.accuracy = static_cast<double>(hits) / n;
  out.images_per_second = secs > 0 ? n / secs : 0;
  return out;
}

} // namespace haca::train
