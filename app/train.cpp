// `haca train` and `haca eval`: the shipped Fashion-MNIST models (float training, int8
// quantization, evaluation with the int8 engine). The logic lives in train/.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "app/common.hpp"
#include "train/fmnist.hpp"
#include "verify/hash.hpp"

namespace haca::app {
namespace {

[[noreturn]] void fail(const error& e) {
  std::cerr << fmt::format("error {}: {}\n", e.code, e.reason);
  throw CLI::RuntimeError(2);
}

template <class T>
T must(result<T> r) {
  if (!r)
    fail(r.err());
  return std::move(r).value();
}

const kernels::backend& pick_backend(const std::string& name) {
  if (name.empty()) {
    auto usable = kernels::usable_backends();
    if (usable.empty())
      fail(make_error(errc::internal, "no usable backend"));
    return *usable.front();
  }
  if (const auto* be = kernels::find_backend(name))
    return *be;
  std::string known;
  for (const auto* be : kernels::compiled_backends()) {
    const std::string why = be->unavailable_reason ? be->unavailable_reason() : std::string{};
    known += fmt::format("\n  {}{}", be->name, why.empty() ? "" : " (unusable here: " + why + ")");
  }
  fail(make_error(errc::bad_input, fmt::format("unknown or unusable backend '{}'; compiled in:{}", name, known)));
}

std::string data_hint(const std::string& dir) {
  return fmt::format(" (the Fashion-MNIST files are expected in {}; run deploy/setup.sh, which installs the Debian "
                     "package dataset-fashion-mnist, or pass --data)",
                     dir);
}

} // namespace

void add_train_commands(CLI::App& app) {
  struct train_options {
    std::string data = train::default_fmnist_dir;
    std::string out = "models";
    std::string arch = "all";
    int epochs = 0;
    std::uint64_t seed = 1;
    std::string backend;
  };
  auto t = std::make_shared<train_options>();
  auto* tr = app.add_subcommand("train", "Train the Fashion-MNIST MLP and/or CNN in float, quantize to int8, write "
                                         "<out>/fmnist-<arch>.safetensors");
  tr->add_option("--data", t->data, "directory with the gzip'd IDX files")->capture_default_str();
  tr->add_option("--out", t->out, "output directory")->capture_default_str();
  tr->add_option("--arch", t->arch, "mlp, cnn or all")->check(CLI::IsMember({"mlp", "cnn", "all"}))->capture_default_str();
  tr->add_option("--epochs", t->epochs, "epochs (0: 20 for mlp, 12 for cnn)")->check(CLI::Range(0, 1000))->capture_default_str();
  tr->add_option("--seed", t->seed, "seed for initialization and shuffling")->capture_default_str();
  tr->add_option("--backend", t->backend, "int8 backend for the final evaluation (default: fastest usable)");
  tr->callback([t] {
    auto log = [](const std::string& line) { std::cout << line << std::endl; };
    auto train_set = train::load_fmnist_split(t->data, "train");
    if (!train_set)
      fail(error{train_set.err().code, train_set.err().reason + data_hint(t->data)});
    auto test_set = train::load_fmnist_split(t->data, "t10k");
    if (!test_set)
      fail(error{test_set.err().code, test_set.err().reason + data_hint(t->data)});
    const auto& be = pick_backend(t->backend);
    std::filesystem::create_directories(t->out);
    std::vector<std::string> archs = t->arch == "all" ? std::vector<std::string>{"mlp", "cnn"}
                                                       : std::vector<std::string>{t->arch};
    std::vector<std::string> summary;
    for (const auto& arch : archs) {
      train::fmnist_options o;
      o.arch = arch;
      o.epochs = t->epochs;
      o.seed = t->seed;
      auto outcome = must(train::train_fmnist(*train_set, *test_set, o, log));
      for (const auto& n : outcome.notes)
        log("  note: " + n);
      const std::string bytes = kernels::save_model(outcome.model);
      const std::string path = (std::filesystem::path(t->out) / ("fmnist-" + arch + ".safetensors")).string();
      {
        std::ofstream f{path, std::ios::binary | std::ios::trunc};
        f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!f)
          fail(make_error(errc::io_error, "cannot write " + path));
      }
      // Read it back through the loader and evaluate it with the int8 engine.
      auto loaded = must(kernels::load_model_file(path));
      auto ev = must(train::evaluate_int8(loaded, be, *test_set));
      std::size_t disagree = 0;
      for (std::size_t i = 0; i < ev.predictions.size(); ++i)
        disagree += ev.predictions[i] != static_cast<std::int32_t>(outcome.int8_sim_predictions[i]);
      if (disagree)
        log(fmt::format("  WARNING: the int8 engine ({}) and the training simulator disagree on {} test images", be.name,
                        disagree));
      log(fmt::format("  wrote {} ({} bytes)", path, bytes.size()));
      summary.push_back(fmt::format("{}  {}  float {:.4f}  int8 {:.4f} ({})  diff {:+.4f}  train {:.0f} s  calib p{}",
                                    verify::sha256_hex(bytes), path, outcome.float_accuracy, ev.accuracy, be.name,
                                    ev.accuracy - outcome.float_accuracy, outcome.train_seconds, outcome.percentile));
    }
    std::cout << "\n";
    for (const auto& s : summary)
      std::cout << s << "\n";
  });

  struct eval_options {
    std::string data = train::default_fmnist_dir;
    std::string model;
    std::string backend;
  };
  auto e = std::make_shared<eval_options>();
  auto* ev = app.add_subcommand("eval", "Accuracy of an int8 Fashion-MNIST model on all 10,000 test images, computed "
                                        "by the int8 engine");
  ev->add_option("--data", e->data, "directory with the gzip'd IDX files")->capture_default_str();
  ev->add_option("--model", e->model, "model file (.safetensors)")->required();
  ev->add_option("--backend", e->backend, "int8 backend (default: fastest usable)");
  ev->callback([e] {
    auto m = must(kernels::load_model_file(e->model));
    auto test_set = train::load_fmnist_split(e->data, "t10k");
    if (!test_set)
      fail(error{test_set.err().code, test_set.err().reason + data_hint(e->data)});
    const auto& be = pick_backend(e->backend);
    auto r = must(train::evaluate_int8(m, be, *test_set));
    std::cout << fmt::format("model     {}  {}  '{}'\n", e->model, m.hash, m.name);
    std::cout << fmt::format("backend   {}\n", r.backend);
    std::cout << fmt::format("images    {}\n", test_set->count());
    std::cout << fmt::format("int8      {:.4f}\n", r.accuracy);
    auto it = m.metadata.find("float_accuracy");
    if (it != m.metadata.end()) {
      std::cout << fmt::format("float     {}  (from the model's metadata)\n", it->second);
      try {
        const double f = std::stod(it->second);
        std::cout << fmt::format("diff      {:+.4f}  (int8 - float)\n", r.accuracy - f);
      } catch (const std::exception&) {
        std::cout << "diff      ?  (float_accuracy is not a number)\n";
      }
    } else {
      std::cout << "float     ?  (no float_accuracy in the model's metadata)\n";
    }
    std::cout << fmt::format("speed     {:.0f} images/s  (batches of 256)\n", r.images_per_second);
  });
}

} // namespace haca::app
