// A client in another language, written from docs/PROTOCOL.md alone
// (tests/integration/python_client.py), against a real network: it pipelines jobs, checks
// every hash, receipt hash and Ed25519 signature itself, and asks STATUS.
#include <array>
#include <cstdio>
#include <filesystem>
#include <sys/wait.h>

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "db/audit.hpp"
#include "harness.hpp"

using namespace haca;

namespace {

constexpr const char* python = "/usr/bin/python3";

} // namespace

TEST_CASE("a Python client written from the protocol spec runs pipelined jobs and verifies every receipt") {
  // The interpreter and its modules are part of the documented setup: missing ones fail here.
  if (!std::filesystem::exists(python))
    FAIL(python, " is missing: run deploy/setup.sh (it installs python3, python3-zmq and python3-nacl)");
  auto probe = test::run_command(fmt::format("{} -c 'import zmq, nacl.signing' 2>&1", python));
  if (probe.exit_code != 0)
    FAIL(python, " lacks the zmq or nacl module (", probe.output,
         "): run deploy/setup.sh (it installs python3-zmq and python3-nacl)");

  test::network net;
  const int jobs = 20;
  auto script = std::string(HACA_SOURCE_DIR) + "/tests/integration/python_client.py";
  auto r = test::run_command(fmt::format("{} {} {} {} {} {} --coordinator-key {} --tier sampled --timeout 30 2>&1", python,
                                         script, net.client_endpoint(), net.model_hash(), net.input_dim(), jobs,
                                         net.coordinator_key()));
  INFO("python client output:\n", r.output);
  INFO(net.logs());
  REQUIRE(r.exit_code == 0);

  auto summary = nlohmann::json::parse(r.output);
  CHECK(summary["ok"] == true);
  const std::string client_id = summary["account"]; // its CURVE public key
  CHECK(summary["results"] == jobs);
  CHECK(summary["acked"] == jobs);
  CHECK(summary["errors"].empty());
  CHECK(summary["problems"].empty());
  CHECK(summary["status"].is_object());
  CHECK(summary["status"]["events"].size() >= 3); // at least SUBMITTED, QUEUED, ASSIGNED

  // Every job settles, and the receipt hashes the script computed are the ones stored.
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), client_id).value() == jobs; }));
  for (const auto& [request_id, hash] : summary["receipt_hashes"].items()) {
    auto stored = test::query_value(fmt::format("select r.receipt_hash from receipts r join jobs j on j.id = r.job_id "
                                                "where j.client_id = '{}' and j.client_req_id = '{}'",
                                                client_id, request_id));
    CHECK(stored == hash.get<std::string>());
  }
  auto a = db::audit(test::test_db(), client_id).value();
  INFO(a.problem);
  CHECK(a.settled == jobs);
  CHECK(a.receipts_valid);
  CHECK(a.postings_balanced);
}
