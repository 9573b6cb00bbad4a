// The shipped Fashion-MNIST models (models/fmnist-*.safetensors): accuracy of the int8 models
// on all 10,000 test images, computed by the int8 engine, against their float accuracy; plus
// the IDX reader, the float trainer's determinism and the quantizer's output format.
#include <doctest/doctest.h>

#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/model.hpp"
#include "kernels/ops.hpp"
#include "train/float_net.hpp"
#include "train/fmnist.hpp"
#include "train/idx.hpp"
#include "train/quantize.hpp"
#include "verify/hash.hpp"

using namespace haca;

namespace {

// The repository root: $HACA_SOURCE_DIR, else three levels up from this file.
std::filesystem::path repo_root() {
  if (const char* env = std::getenv("HACA_SOURCE_DIR"); env && *env)
    return env;
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

std::string fmnist_dir() {
  if (const char* env = std::getenv("HACA_FMNIST_DIR"); env && *env)
    return env;
  return train::default_fmnist_dir;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f{p, std::ios::binary};
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const train::fmnist_split& test_split() {
  static const result<train::fmnist_split> split = train::load_fmnist_split(fmnist_dir(), "t10k");
  if (!split)
    FAIL("cannot read the Fashion-MNIST test set: " << split.err().reason
                                                   << "\nRun deploy/setup.sh (it installs the Debian package "
                                                      "dataset-fashion-mnist) or set HACA_FMNIST_DIR.");
  return split.value();
}

void check_model(const std::string& file, double min_accuracy) {
  const auto path = repo_root() / "models" / file;
  INFO("model " << path.string());
  REQUIRE_MESSAGE(std::filesystem::exists(path), "missing; run: haca train --arch all (see models/README.md)");
  const std::string bytes = read_file(path);
  auto m = kernels::load_model(bytes);
  REQUIRE_MESSAGE(m.ok(), (m.ok() ? std::string{} : m.err().reason));

  // The hash listed in models/SHA256SUMS.
  const std::string sums = read_file(repo_root() / "models" / "SHA256SUMS");
  CHECK_MESSAGE(sums.find(verify::sha256_hex(bytes) + "  " + file) != std::string::npos,
                "models/SHA256SUMS does not list " << verify::sha256_hex(bytes) << "  " << file);

  REQUIRE(m->metadata.count("float_accuracy") == 1);
  CHECK(m->metadata.at("input_quantization") == train::fmnist_input_quantization);
  CHECK(m->metadata.count("train_command") == 1);
  const double float_acc = std::stod(m->metadata.at("float_accuracy"));

  const auto& test = test_split();
  REQUIRE(test.count() == 10000);
  const auto backends = kernels::usable_backends();
  REQUIRE(!backends.empty());
  auto ev = train::evaluate_int8(*m, *backends.front(), test);
  REQUIRE_MESSAGE(ev.ok(), (ev.ok() ? std::string{} : ev.err().reason));
  MESSAGE(file << ": int8 " << ev->accuracy << " (" << ev->backend << ", " << static_cast<long>(ev->images_per_second)
               << " images/s), float " << float_acc);
  CHECK(ev->accuracy >= min_accuracy);
  CHECK(std::fabs(ev->accuracy - float_acc) <= 0.005);

  // The training-time int8 simulator computes the same classes as the engine.
  const auto sim = train::int8_predict(*m, test.inputs.data(), test.count());
  int disagree = 0;
  for (int i = 0; i < test.count(); ++i)
    disagree += static_cast<std::int32_t>(sim[i]) != ev->predictions[i];
  CHECK(disagree == 0);
}

void write_gz(const std::string& path, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  gzclose(f);
}

std::vector<unsigned char> be32(std::uint32_t v) {
  return {static_cast<unsigned char>(v >> 24), static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 8),
          static_cast<unsigned char>(v)};
}

} // namespace

TEST_CASE("fashion-mnist: the int8 MLP reaches 0.88 on all 10,000 test images, within 0.5 points of float") {
  check_model("fmnist-mlp.safetensors", 0.88);
}

TEST_CASE("fashion-mnist: the int8 CNN reaches 0.90 on all 10,000 test images, within 0.5 points of float") {
  check_model("fmnist-cnn.safetensors", 0.90);
}

TEST_CASE("idx: reads gzip'd IDX files and rejects bad magic, truncation and count mismatches") {
  const auto dir = std::filesystem::temp_directory_path() / ("haca_idx_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto header = [](std::uint32_t magic, std::vector<std::uint32_t> dims) {
    std::vector<unsigned char> b = be32(magic);
    for (auto d : dims) {
      auto x = be32(d);
      b.insert(b.end(), x.begin(), x.end());
    }
    return b;
  };
  // Two 28x28 images and two labels.
  auto img = header(0x803, {2, 28, 28});
  for (int i = 0; i < 2 * 784; ++i)
    img.push_back(static_cast<unsigned char>(i % 256));
  auto lab = header(0x801, {2});
  lab.push_back(3);
  lab.push_back(9);
  write_gz((dir / "ok-images-idx3-ubyte.gz").string(), img);
  write_gz((dir / "ok-labels-idx1-ubyte.gz").string(), lab);
  auto ok = train::read_fashion_mnist(dir.string(), "ok");
  REQUIRE(ok.ok());
  CHECK(ok->images.count == 2);
  CHECK(ok->images.pixels[785] == 785 % 256);
  CHECK(ok->labels[1] == 9);

  auto bad_magic = img;
  bad_magic[3] = 0x01;
  write_gz((dir / "m-images-idx3-ubyte.gz").string(), bad_magic);
  auto r1 = train::read_idx_images((dir / "m-images-idx3-ubyte.gz").string());
  REQUIRE_FALSE(r1.ok());
  CHECK(r1.err().reason.find("magic") != std::string::npos);

  auto truncated = img;
  truncated.resize(truncated.size() - 10);
  write_gz((dir / "t-images-idx3-ubyte.gz").string(), truncated);
  auto r2 = train::read_idx_images((dir / "t-images-idx3-ubyte.gz").string());
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.err().reason.find("truncated") != std::string::npos);

  auto lab3 = header(0x801, {3});
  lab3.insert(lab3.end(), {1, 2, 3});
  write_gz((dir / "c-images-idx3-ubyte.gz").string(), img);
  write_gz((dir / "c-labels-idx1-ubyte.gz").string(), lab3);
  auto r3 = train::read_fashion_mnist(dir.string(), "c");
  REQUIRE_FALSE(r3.ok());
  CHECK(r3.err().reason.find("3 labels") != std::string::npos);

  auto r4 = train::read_idx_labels((dir / "absent.gz").string());
  REQUIRE_FALSE(r4.ok());
  CHECK(r4.err().reason.find("no such file") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("float trainer: the same seed gives the same weights; quantized models load") {
  // 512 synthetic 28x28 images of two classes (bright top half vs bright bottom half).
  const int n = 512;
  std::vector<std::int8_t> x(static_cast<std::size_t>(n) * 784);
  std::vector<std::uint8_t> y(n);
  std::uint32_t s = 12345;
  for (int i = 0; i < n; ++i) {
    y[i] = static_cast<std::uint8_t>(i % 2);
    for (int p = 0; p < 784; ++p) {
      s = s * 1664525u + 1013904223u;
      const bool top = p < 392;
      const int base = (top == (y[i] == 0)) ? 80 : 10;
      x[static_cast<std::size_t>(i) * 784 + p] = static_cast<std::int8_t>(base + static_cast<int>(s >> 28));
    }
  }
  for (const char* arch : {"mlp", "cnn"}) {
    INFO(arch);
    auto train_once = [&] {
      auto net = train::make_architecture(arch).value();
      net.init(7);
      train::train_config cfg;
      cfg.epochs = 1;
      cfg.batch = 32;
      cfg.seed = 7;
      train::train_net(net, x, y, cfg, nullptr);
      return net;
    };
    const auto a = train_once();
    const auto b = train_once();
    bool same = true;
    for (std::size_t l = 0; l < a.layers.size(); ++l)
      same = same && a.layers[l].w == b.layers[l].w && a.layers[l].b == b.layers[l].b;
    CHECK(same);
    CHECK(train::accuracy(train::predict(a, x.data(), n), y) > 0.95);

    const auto ranges = train::calibrate_ranges(a, x.data(), 256, 99.99);
    auto q = train::quantize_net(a, ranges, std::string("t-") + arch, {{"float_accuracy", "1.0"}});
    const std::string bytes = kernels::save_model(q.model);
    auto loaded = kernels::load_model(bytes);
    REQUIRE_MESSAGE(loaded.ok(), (loaded.ok() ? std::string{} : loaded.err().reason));
    CHECK(loaded->metadata.at("float_accuracy") == "1.0");
    const auto sim = train::int8_predict(*loaded, x.data(), n);
    CHECK(train::accuracy(sim, y) > 0.95);
  }
}
