// `haca model gen|info`: make and inspect model files.
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "app/common.hpp"
#include "verify/hash.hpp"

namespace haca::app {
namespace {

std::vector<int> parse_dims(const std::string& s) {
  std::vector<int> dims;
  std::stringstream ss{s};
  for (std::string part; std::getline(ss, part, ',');)
    dims.push_back(std::stoi(part));
  return dims;
}

} // namespace

void add_model_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("model", "Make and inspect int8 model files");
  cmd->require_subcommand(1);

  struct gen_options {
    std::uint64_t seed = 1;
    std::string dims = "784,128,10";
    std::string name = "mlp";
    std::string out = "models/mlp.safetensors";
  };
  auto g = std::make_shared<gen_options>();
  auto* gen = cmd->add_subcommand("gen", "Write a deterministic int8 MLP (same seed and dims: same bytes, same hash)");
  gen->add_option("--seed", g->seed, "generator seed")->capture_default_str();
  gen->add_option("--dims", g->dims, "layer widths, input first")->capture_default_str();
  gen->add_option("--name", g->name, "model name stored in the file")->capture_default_str();
  gen->add_option("--out", g->out, "output file")->capture_default_str();
  gen->callback([g] {
    std::vector<int> dims;
    try {
      dims = parse_dims(g->dims);
    } catch (const std::exception&) {
      dims.clear();
    }
    if (dims.size() < 2 || std::any_of(dims.begin(), dims.end(), [](int d) { return d < 1 || d > 65536; }))
      throw CLI::ValidationError("--dims", "expected at least two comma-separated widths in 1..65536, got '" + g->dims + "'");
    auto bytes = kernels::save_model(kernels::generate_mlp(g->seed, dims, g->name));
    auto parent = std::filesystem::path(g->out).parent_path();
    if (!parent.empty())
      std::filesystem::create_directories(parent);
    std::ofstream f{g->out, std::ios::binary | std::ios::trunc};
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f)
      throw CLI::RuntimeError(fmt::format("cannot write {}", g->out), 2);
    std::cout << verify::sha256_hex(bytes) << "  " << g->out << "\n";
  });

  auto path = std::make_shared<std::string>();
  auto* info = cmd->add_subcommand("info", "Check a model file and print its hash and layers");
  info->add_option("file", *path, "model file")->required();
  info->callback([path] {
    auto m = kernels::load_model_file(*path);
    if (!m) {
      std::cerr << fmt::format("error {}: {}\n", m.err().code, m.err().reason);
      throw CLI::RuntimeError(2);
    }
    std::cout << fmt::format("{}  {}  '{}'\n", m->hash, *path, m->name);
    for (const auto& [key, value] : m->metadata)
      std::cout << fmt::format("  {}: {}\n", key, value);
    std::cout << fmt::format("  input {}\n", kernels::shape_string(m->input_shape));
    auto requant = [](const kernels::layer& l) {
      return fmt::format("  requant x{} >>{}{}", l.rq.multiplier, l.rq.shift, l.rq.relu ? "  relu" : "");
    };
    for (std::size_t i = 0; i < m->layers.size(); ++i) {
      const auto& l = m->layers[i];
      const auto& in = i == 0 ? m->input_shape : m->layers[i - 1].out_shape;
      const std::string shapes = kernels::shape_string(in) + " -> " + kernels::shape_string(l.out_shape);
      switch (l.kind) {
      case kernels::layer_kind::dense:
        std::cout << fmt::format("  layer {}: dense {}{}\n", i, shapes, requant(l));
        break;
      case kernels::layer_kind::conv2d:
        std::cout << fmt::format("  layer {}: conv2d {}  kernel {}x{} stride {} pad {}{}\n", i, shapes, l.conv.kernel_h,
                                 l.conv.kernel_w, l.conv.stride, l.conv.pad, requant(l));
        break;
      case kernels::layer_kind::maxpool:
        std::cout << fmt::format("  layer {}: maxpool {}  kernel {} stride {}\n", i, shapes, l.pool.kernel,
                                 l.pool.stride);
        break;
      case kernels::layer_kind::flatten:
        std::cout << fmt::format("  layer {}: flatten {}\n", i, shapes);
        break;
      }
    }
  });
}

} // namespace haca::app
