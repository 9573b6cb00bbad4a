// A real model on real data through the whole network: `haca submit` sends Fashion-MNIST test
// images to a provider on the fast cpu backend; a verifier on the reference backend re-executes
// every job and must reproduce each trace root bit for bit.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/process.hpp"
#include "db/audit.hpp"
#include "harness.hpp"
#include "train/idx.hpp"

using namespace haca;

namespace {
const std::string dataset = "/usr/share/datasets/fashion-mnist";
}

TEST_CASE("Fashion-MNIST images sent with haca submit return the model's classes, verified on another backend") {
  auto model_file = std::string(HACA_SOURCE_DIR) + "/models/fmnist-cnn.safetensors";
  REQUIRE_MESSAGE(std::filesystem::exists(model_file), model_file, " is missing (it is committed; see models/README.md)");
  auto images_file = dataset + "/t10k-images-idx3-ubyte.gz";
  auto images = train::read_idx_images(images_file);
  REQUIRE_MESSAGE(images.ok(), "the Fashion-MNIST test set is needed: run deploy/setup.sh (package "
                               "dataset-fashion-mnist)");

  test::network_options o;
  o.extra_models = {model_file};
  o.provider_args = {{"--backend", "cpu"}};
  o.verifier_args = {"--backend", "reference"};
  test::network net{o};
  auto model = kernels::load_model_file(model_file).value();
  // The CLI's key file is the account: made here, so the test knows it.
  const auto key_file = net.dir() + "/keys/fmnist-client.key";
  const auto client = net::client_credentials{verify::load_or_create_key(key_file).value(), net.coordinator_key()}.account();
  const int count = 16;

  auto cmd = fmt::format("{} submit --connect {} --key {} --coordinator-key {} --model {} --images {} --count {} "
                         "--tier full --json",
                         HACA_BINARY, net.client_endpoint(), key_file, net.coordinator_key(), model_file, images_file,
                         count);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe{::popen(cmd.c_str(), "r"), ::pclose};
  REQUIRE(pipe);
  std::vector<nlohmann::json> lines;
  char buf[1 << 16];
  while (std::fgets(buf, sizeof buf, pipe.get()))
    lines.push_back(nlohmann::json::parse(buf));
  INFO(net.logs());
  REQUIRE(lines.size() == count);

  auto local = kernels::prepare(model, kernels::reference_backend());
  for (int i = 0; i < count; ++i) {
    CAPTURE(i);
    const auto& line = lines[static_cast<std::size_t>(i)];
    REQUIRE(line.contains("classes"));
    CHECK(line["receipt_valid"].get<bool>());
    kernels::tensor input{kernels::dtype::i8, {1, model.input_size()}, std::string(784, '\0')};
    kernels::quantize_pixels(images->pixels.data() + i * 784, 784, reinterpret_cast<std::int8_t*>(input.data.data()));
    auto expected = kernels::run_model(local, input).value();
    CHECK(line["classes"][0].get<int>() == expected.classes[0]);
    CHECK(line["receipt"]["trace_root"].get<std::string>() == expected.trace_root);
  }

  // tier full: the verifier (reference backend) re-ran every job and agreed with the provider (cpu).
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), client).value() == count; }));
  auto a = db::audit(test::test_db(), client).value();
  CHECK(a.verified == count);
  CHECK(a.disputed == 0);
  CHECK(a.chain_valid);
  CHECK(a.postings_balanced);
}
