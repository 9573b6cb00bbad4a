// The --config file (TOML) as a user meets it, through the real binary: the example documents
// every key, flags win over the file, and a typo or a bad value is refused before anything runs.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <doctest/doctest.h>
#include <fmt/format.h>

#include "harness.hpp"

using namespace haca;

namespace {

std::string write_config(const std::string& name, const std::string& text) {
  const auto path = (std::filesystem::temp_directory_path() / test::unique_id(name)).string() + ".toml";
  std::ofstream(path) << text;
  return path;
}

test::command_result run_haca(const std::string& args) {
  return test::run_command(fmt::format("{} {} 2>&1", HACA_BINARY, args));
}

} // namespace

TEST_CASE("config: deploy/haca.example.toml is exactly what `haca config-example` prints: every key of every command") {
  std::ifstream in(std::string(HACA_SOURCE_DIR) + "/deploy/haca.example.toml");
  const std::string file{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const auto printed = run_haca("config-example");
  REQUIRE(printed.exit_code == 0);
  CHECK_MESSAGE(printed.output == file, "regenerate it: build/haca config-example > deploy/haca.example.toml");
  for (const auto* key : {"[coordinator]", "# min-stake = 0", "[provider]", "[verifier]", "[demo]", "[model.gen]"})
    CHECK_MESSAGE(file.find(key) != std::string::npos, key);
}

TEST_CASE("config: a value from the file is used, and a flag on the command line wins over it") {
  const auto path = write_config("cfg", "[audit]\ndb = \"postgresql:///haca_no_such_database\"\n");
  auto from_file = run_haca(fmt::format("--config {} audit", path));
  CHECK(from_file.exit_code != 0);
  CHECK(from_file.output.find("haca_no_such_database") != std::string::npos);
  auto overridden = run_haca(fmt::format("--config {} audit --db {}", path, test::test_db()));
  CHECK(overridden.output.find("haca_no_such_database") == std::string::npos);
  CHECK(overridden.output.find("result:") != std::string::npos);
  // The same through HACA_CONFIG, as a systemd unit would set it.
  auto env = test::run_command(fmt::format("HACA_CONFIG={} {} audit 2>&1", path, HACA_BINARY));
  CHECK(env.output.find("haca_no_such_database") != std::string::npos);
}

TEST_CASE("config: a typo, a bad value or broken TOML is refused with the key, the value and the reason") {
  auto typo = run_haca(fmt::format("--config {} audit --db {}",
                               write_config("typo", "[coordinator]\nsmaple-rate = 0.3\n"), test::test_db()));
  CHECK(typo.exit_code != 0);
  CHECK(typo.output.find("unknown key 'coordinator.smaple-rate'") != std::string::npos);
  CHECK(typo.output.find("result:") == std::string::npos); // nothing ran

  auto range = run_haca(fmt::format("--config {} audit", write_config("range", "[coordinator]\nsample-rate = 3\n")));
  CHECK(range.exit_code != 0);
  CHECK(range.output.find("--sample-rate: Value 3 not in range") != std::string::npos);

  auto type = run_haca(fmt::format("--config {} audit", write_config("type", "[coordinator]\nclient-port = \"seven\"\n")));
  CHECK(type.exit_code != 0);
  CHECK(type.output.find("client-port") != std::string::npos);
  CHECK(type.output.find("seven") != std::string::npos);

  auto broken = run_haca(fmt::format("--config {} audit", write_config("broken", "[coordinator\nsample-rate = 0.3\n")));
  CHECK(broken.exit_code != 0);
  CHECK(broken.output.find("line 1") != std::string::npos);

  auto missing = run_haca("--config /nonexistent/haca.toml audit");
  CHECK(missing.exit_code != 0);
  CHECK(missing.output.find("/nonexistent/haca.toml") != std::string::npos);
}

TEST_CASE("flags: 64 hex characters that are not an Ed25519 public key are refused as a coordinator key, cleanly") {
  const std::string not_a_point(64, 'a'); // hex, but no curve point: CurveZMQ has no key for it
  const auto submit = "submit --model " + std::string(64, 'b');
  for (const std::string& command : {std::string("provider"), std::string("verifier"), submit}) {
    auto r = run_haca(fmt::format("{} --connect tcp://127.0.0.1:1 --coordinator-key {} --key {}", command, not_a_point,
                                  (std::filesystem::temp_directory_path() / test::unique_id("k")).string()));
    INFO(command, ": ", r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.exit_code < 128); // an error exit, not a signal (abort)
    CHECK(r.output.find("not an Ed25519 public key") != std::string::npos);
    CHECK(r.output.find("terminate called") == std::string::npos);
  }
}

TEST_CASE("deploy: each systemd unit starts a haca command with flags that command has") {
  const std::string dir = std::string(HACA_SOURCE_DIR) + "/deploy/systemd";
  int units = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path());
    std::string exec;
    for (std::string line; std::getline(in, line);)
      if (line.rfind("ExecStart=", 0) == 0)
        exec = line.substr(10);
    INFO(entry.path().string());
    REQUIRE(exec.rfind("/usr/local/bin/haca ", 0) == 0);
    std::istringstream words(exec.substr(20));
    std::string command;
    words >> command;
    const auto help = run_haca(command + " --help");
    REQUIRE(help.exit_code == 0);
    for (std::string w; words >> w;)
      if (w.rfind("--", 0) == 0)
        CHECK_MESSAGE(help.output.find(w + " ") != std::string::npos, command, " has no flag ", w);
    ++units;
  }
  CHECK(units == 3);
}
