// Proofs anyone can check offline: `haca prove-inclusion` asks the coordinator for a settled
// job's PROOF and writes it to a file; `haca verify-receipt` and `haca verify-inclusion` check
// such files with no network and no database. Exit status: 0 valid, 1 invalid, 2 could not check.
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/common.hpp"
#include "proto/commands.hpp"
#include "verify/hash.hpp"

namespace haca::app {
namespace {

result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error(errc::io_error, fmt::format("cannot read {}", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

result<nlohmann::json> read_json(const std::string& path) {
  auto text = read_file(path);
  if (!text)
    return text.err();
  auto j = nlohmann::json::parse(text.value(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return make_error(errc::bad_input, fmt::format("{} is not a JSON object", path));
  return j;
}

int run_prove_inclusion(const client_login& login, std::int64_t job_id, const std::string& out_path) {
  auto msg = ask_coordinator(login, proto::make_job_query({job_id, std::string(proto::cmd::proof)}));
  if (!msg) {
    std::cerr << fmt::format("error {}: {}\n", msg.err().code, msg.err().reason);
    return 2;
  }
  auto proof = proto::parse_proof_reply(msg.value());
  if (!proof) {
    std::cerr << "error: the coordinator's PROOF does not parse: " << proof.err().reason << "\n";
    return 2;
  }
  const auto text = proto::proof_json(proof.value()).dump(2) + "\n";
  if (out_path.empty() || out_path == "-") {
    std::cout << text;
  } else {
    std::ofstream out(out_path, std::ios::binary);
    if (!(out << text)) {
      std::cerr << fmt::format("error: cannot write {}\n", out_path);
      return 2;
    }
    std::cerr << fmt::format("job {}: receipt, path ({} steps) and block {} header written to {}\n", job_id,
                             proof->path.size(), proof->block.height, out_path);
  }
  return 0;
}

// A receipt file: the receipt itself, or any object with it under "receipt" (a PROOF file, a
// RESULT or STATUS header). Optionally the input and output files it claims to hash.
int run_verify_receipt(const std::string& path, const std::string& input_path, const std::string& output_path) {
  auto j = read_json(path);
  if (!j) {
    std::cerr << "error: " << j.err().reason << "\n";
    return 2;
  }
  const auto& obj = j->contains("receipt") ? (*j)["receipt"] : j.value();
  auto r = proto::parse_receipt_json(obj);
  if (!r) {
    std::cerr << "error: " << r.err().reason << "\n";
    return 2;
  }
  auto fail = [&](const std::string& why) {
    std::cout << fmt::format("INVALID: job {}: {}\n", r->job_id, why);
    return 1;
  };
  if (!verify::verify_receipt(r.value()))
    return fail("the signature does not verify against provider_key " + r->provider_key.substr(0, 16) + "...");
  for (const auto& [file, hash, what] : {std::tuple{input_path, r->input_hash, "input"},
                                         std::tuple{output_path, r->output_hash, "output"}}) {
    if (file.empty())
      continue;
    auto bytes = read_file(file);
    if (!bytes) {
      std::cerr << "error: " << bytes.err().reason << "\n";
      return 2;
    }
    if (verify::sha256_hex(bytes.value()) != hash)
      return fail(fmt::format("{} is not the {} the receipt signs (its SHA-256 differs from {}_hash)", file, what,
                              what));
  }
  std::cout << fmt::format("valid: job {} attempt {}, model {}..., signed by provider {}..., receipt hash {}\n",
                           r->job_id, r->attempt, r->model_hash.substr(0, 12), r->provider_key.substr(0, 12),
                           verify::receipt_hash(r.value()));
  return 0;
}

int run_verify_inclusion(const std::string& path, const std::string& coordinator_key) {
  if (!verify::is_hash_hex(coordinator_key)) {
    std::cerr << "error: --coordinator-key must be 64 lowercase hex characters\n";
    return 2;
  }
  auto j = read_json(path);
  if (!j) {
    std::cerr << "error: " << j.err().reason << "\n";
    return 2;
  }
  auto p = proto::parse_proof_json(j.value());
  if (!p) {
    std::cerr << "error: " << p.err().reason << "\n";
    return 2;
  }
  if (auto why = verify::inclusion_problem(p->receipt, p->index, p->path, p->block, coordinator_key); !why.empty()) {
    std::cout << fmt::format("INVALID: job {} in block {}: {}\n", p->job_id, p->block.height, why);
    return 1;
  }
  if (p->receipt.job_id != p->job_id) {
    std::cout << fmt::format("INVALID: the proof is for job {} but its receipt is job {}'s\n", p->job_id,
                             p->receipt.job_id);
    return 1;
  }
  std::cout << fmt::format("valid: job {} ({}) is receipt {} of block {} (hash {}), signed by coordinator {}...\n",
                           p->job_id, p->verdict, p->index, p->block.height, verify::block_hash(p->block),
                           coordinator_key.substr(0, 12));
  return 0;
}

} // namespace

void add_proof_commands(CLI::App& app) {
  auto login = std::make_shared<client_login>();
  auto job_id = std::make_shared<std::int64_t>(0);
  auto out = std::make_shared<std::string>();
  auto* prove = app.add_subcommand("prove-inclusion",
                                   "Fetch a settled job's PROOF (receipt, Merkle path, signed block header) into a file");
  prove->add_option("job", *job_id, "job id")->required();
  add_client_login_options(*prove, *login);
  prove->add_option("--out", *out, "file to write (default: standard output)");
  prove->callback([=] {
    if (int rc = run_prove_inclusion(*login, *job_id, *out))
      throw CLI::RuntimeError(rc);
  });

  auto file = std::make_shared<std::string>();
  auto input = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto* vr = app.add_subcommand("verify-receipt",
                                "Check a receipt's signature offline (a receipt file, a PROOF file, or a RESULT or "
                                "STATUS header); exit 0 valid, 1 invalid, 2 could not check");
  vr->add_option("file", *file, "JSON file")->required();
  vr->add_option("--input", *input, "raw input bytes the receipt's input_hash must match");
  vr->add_option("--output", *output, "raw output bytes the receipt's output_hash must match");
  vr->callback([=] {
    if (int rc = run_verify_receipt(*file, *input, *output))
      throw CLI::RuntimeError(rc);
  });

  auto proof = std::make_shared<std::string>();
  auto key = std::make_shared<std::string>();
  auto* vi = app.add_subcommand("verify-inclusion",
                                "Check offline that a PROOF file's receipt is in a block signed by the given "
                                "coordinator key; exit 0 valid, 1 invalid, 2 could not check");
  vi->add_option("file", *proof, "PROOF file from 'haca prove-inclusion'")->required();
  vi->add_option("--coordinator-key", *key, "the coordinator's public key, hex (printed at its start)")->required();
  vi->callback([=] {
    if (int rc = run_verify_inclusion(*proof, *key))
      throw CLI::RuntimeError(rc);
  });
}

} // namespace haca::app
