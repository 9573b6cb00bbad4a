// Proofs anyone can check offline: RECEIPT and PROOF from a live coordinator, `haca
// prove-inclusion` writing the file, `haca verify-receipt` and `haca verify-inclusion` checking
// it with no network, and failing on one changed byte or another coordinator key.
#include <fstream>

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/workload.hpp"
#include "db/audit.hpp"
#include "harness.hpp"
#include "net/client.hpp"
#include "proto/commands.hpp"
#include "verify/hash.hpp"
#include "verify/signing.hpp"

using namespace haca;
using namespace std::chrono_literals;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

test::command_result run_haca(const std::string& args) {
  return test::run_command(fmt::format("{} {} 2>&1", HACA_BINARY, args));
}

} // namespace

TEST_CASE("a settled job's PROOF verifies offline against the coordinator key and fails on one changed byte") {
  test::network net;
  auto w = net.workload(5, "sampled", 3); // sampled at rate 1: verified
  const auto key_file = net.dir() + "/keys/client.key"; // the job's owner, for prove-inclusion below
  w.credentials = {verify::load_or_create_key(key_file).value(), net.coordinator_key()};
  auto rep = app::run_workload(w);
  INFO(net.logs());
  REQUIRE(rep.results == 5);
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), w.credentials.account()).value() == 5; }));
  const auto job = rep.jobs[2];
  const auto coordinator_key = verify::load_or_create_key(net.dir() + "/keys/coordinator.key").value().public_key_hex;

  // RECEIPT: the stored receipt, the one RESULT carried.
  auto c = net.connect_client(w.credentials);
  auto r = test::round_trip(c, proto::make_job_query({job.job_id, "RECEIPT"}), 10s);
  REQUIRE(r.has_value());
  auto receipt = proto::parse_receipt_reply(*r);
  REQUIRE_MESSAGE(receipt.ok(), r->header.dump());
  CHECK(receipt->receipt.signature == job.receipt.signature);
  CHECK(verify::receipt_hash(receipt->receipt) == verify::receipt_hash(job.receipt));
  auto none = test::round_trip(c, proto::make_job_query({987654321, "PROOF"}), 10s);
  REQUIRE(none.has_value());
  CHECK(proto::parse_error(*none)->code == std::string(errc::unknown_job));

  // prove-inclusion writes the PROOF; verify-inclusion checks it offline.
  const auto file = net.dir() + "/proof.json";
  auto prove = run_haca(fmt::format("prove-inclusion {} --connect {} --key {} --coordinator-key {} --out {}", job.job_id,
                                    net.client_endpoint(), key_file, net.coordinator_key(), file));
  REQUIRE_MESSAGE(prove.exit_code == 0, prove.output);
  auto proof = nlohmann::json::parse(slurp(file));
  CHECK(proof["job_id"] == job.job_id);
  CHECK(proof["verdict"] == "verified");
  CHECK(proof["block"]["signer_key"] == coordinator_key);
  auto ok = run_haca(fmt::format("verify-inclusion {} --coordinator-key {}", file, coordinator_key));
  CHECK_MESSAGE(ok.exit_code == 0, ok.output);
  CHECK(ok.output.find("valid: job " + std::to_string(job.job_id)) == 0);
  auto receipt_ok = run_haca(fmt::format("verify-receipt {}", file));
  CHECK_MESSAGE(receipt_ok.exit_code == 0, receipt_ok.output);

  // Against another coordinator's key: invalid.
  auto other = run_haca(fmt::format("verify-inclusion {} --coordinator-key {}", file,
                                verify::generate_key_pair().public_key_hex));
  CHECK(other.exit_code == 1);
  CHECK(other.output.find("not by the coordinator key") != std::string::npos);

  // One byte changed anywhere that matters: invalid.
  const std::string text = slurp(file);
  for (const auto& [path, what] : std::vector<std::pair<std::string, std::string>>{
           {"/receipt/output_hash", "signature"}, {"/receipt/price", "signature"},
           {"/block/total_amount", "signature"}, {"/block/batch_root", "Merkle path"}}) {
    CAPTURE(path);
    auto j = nlohmann::json::parse(text);
    auto& v = j[nlohmann::json::json_pointer(path)];
    if (v.is_string()) {
      auto s = v.get<std::string>();
      s[5] = s[5] == 'a' ? 'b' : 'a';
      v = s;
    } else {
      v = v.get<std::int64_t>() + 1;
    }
    const auto bad = net.dir() + "/bad.json";
    write(bad, j.dump());
    auto res = run_haca(fmt::format("verify-inclusion {} --coordinator-key {}", bad, coordinator_key));
    CHECK_MESSAGE(res.exit_code == 1, res.output);
    CHECK_MESSAGE(res.output.find(what) != std::string::npos, res.output);
  }
  if (!proof["path"].empty()) {
    auto j = nlohmann::json::parse(text);
    auto s = j["path"][0]["sibling"].get<std::string>();
    s[0] = s[0] == 'a' ? 'b' : 'a';
    j["path"][0]["sibling"] = s;
    write(net.dir() + "/bad.json", j.dump());
    CHECK(run_haca(fmt::format("verify-inclusion {}/bad.json --coordinator-key {}", net.dir(), coordinator_key)).exit_code ==
          1);
  }
  auto tampered = nlohmann::json::parse(text);
  tampered["receipt"]["price"] = tampered["receipt"]["price"].get<std::int64_t>() + 1;
  write(net.dir() + "/bad-receipt.json", tampered.dump());
  CHECK(run_haca(fmt::format("verify-receipt {}/bad-receipt.json", net.dir())).exit_code == 1);
  CHECK(run_haca(fmt::format("verify-receipt {}/missing.json", net.dir())).exit_code == 2);
}

TEST_CASE("PROOF of a job that is not in a block yet is refused with not_settled") {
  test::network_options o;
  o.providers = 0; // nothing runs: the job stays QUEUED
  o.verifiers = 0;
  test::network net(o);
  auto c = net.connect_client(net.new_client());
  auto ack = test::round_trip(
      c, proto::make_submit({"", "r1", net.model_hash(), "none", 100, 0,
                             app::random_inputs(1, net.input_dim(), 1)[0]}),
      10s);
  REQUIRE(ack.has_value());
  auto a = proto::parse_ack(*ack);
  REQUIRE_MESSAGE(a.ok(), ack->header.dump());
  auto p = test::round_trip(c, proto::make_job_query({a->job_id, "PROOF"}), 10s);
  REQUIRE(p.has_value());
  auto e = proto::parse_error(*p);
  REQUIRE(e.ok());
  CHECK(e->code == std::string(errc::not_settled));
  CHECK(e->job_id == a->job_id);
  auto r = test::round_trip(c, proto::make_job_query({a->job_id, "RECEIPT"}), 10s);
  REQUIRE(r.has_value());
  CHECK(proto::parse_error(*r)->code == std::string(errc::unknown_job));
}
