// `haca audit`: re-check what is in Postgres, independently of the coordinator. Exit status 0
// when nothing is wrong, 1 when any kind of trouble was found, 2 when the audit could not run.
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/common.hpp"
#include "db/audit.hpp"
#include "verify/hash.hpp"

namespace haca::app {

namespace {

nlohmann::json report_json(const db::audit_report& a, const db::audit_options& o) {
  nlohmann::json findings = nlohmann::json::array();
  for (const auto& f : a.findings)
    findings.push_back({{"kind", f.kind}, {"count", f.count}, {"example", f.example}});
  return {{"ok", a.ok()},
          {"client", o.client_id},
          {"stuck_after_s", o.stuck_after_s},
          {"jobs", a.jobs},
          {"settled", a.settled},
          {"verified", a.verified},
          {"unsampled", a.unsampled},
          {"disputed", a.disputed},
          {"failed", a.failed},
          {"open", a.open},
          {"blocks", a.blocks},
          {"receipts_checked", a.receipts_checked},
          {"receipts_valid", a.receipts_valid},
          {"chain_valid", a.chain_valid},
          {"postings_balanced", a.postings_balanced},
          {"findings", std::move(findings)}};
}

void print_report(const db::audit_report& a, const db::audit_options& o) {
  std::cout << fmt::format("jobs: {} ({} settled, {} verified, {} unsampled, {} disputed, {} failed or expired){}\n"
                           "open jobs: {} not in a final state (all clients)\n"
                           "receipts: {} checked, signatures {}\n"
                           "blocks: {}, hash chain, signatures and batch roots {}\n"
                           "ledger: {}\n",
                           a.jobs, a.settled, a.verified, a.unsampled, a.disputed, a.failed,
                           o.client_id.empty() ? "" : fmt::format(" of client '{}'", o.client_id), a.open,
                           a.receipts_checked, a.receipts_valid ? "valid" : "INVALID", a.blocks,
                           a.chain_valid ? "valid" : "BROKEN",
                           a.postings_balanced ? "balanced (every block's, every job's and all postings sum to zero)"
                                               : "NOT balanced");
  std::cout << "checks:\n";
  for (const auto& check : db::audit_checks()) {
    const auto* f = a.find(check.kind);
    std::cout << fmt::format("  {:<5} {:<26} {}\n", f ? "FAIL" : "ok", check.kind,
                             f ? fmt::format("{} found; first: {}", f->count, f->example) : std::string(check.description));
  }
  if (a.ok())
    std::cout << "result: ok, no trouble found\n";
  else
    std::cout << fmt::format("result: TROUBLE, {} kind{} of problem (first: {})\n", a.findings.size(),
                             a.findings.size() == 1 ? "" : "s", a.problem);
}

} // namespace

void add_audit_command(CLI::App& app) {
  auto db = std::make_shared<std::string>("postgresql:///haca");
  auto o = std::make_shared<db::audit_options>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand(
      "audit", "Re-verify every receipt signature, block hash, block signature and batch root, check that the "
               "postings balance, and look for stuck jobs, executed jobs without a receipt, negative accounts, "
               "escrow holds over a balance, settled jobs their block does not list (or postings without a settled job), "
               "and job timelines with a gap or a last event other than the row's state. "
               "Exit status: 0 ok, 1 trouble found, 2 the audit could not run");
  cmd->add_option("--db", *db, "PostgreSQL connection URL")->capture_default_str();
  cmd->add_option("--client", o->client_id,
                  "count jobs and check receipts of this client only (the chain, the ledger and the job cross-checks "
                  "always cover the whole database)");
  cmd->add_option("--stuck-after-s", o->stuck_after_s,
                  "a job not in a final state whose last change is older than this many seconds is stuck")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--coordinator-key", o->coordinator_key,
                  "the coordinator's public key, hex: every block must be signed by it (without it, each block's "
                  "signature is checked against the signer_key stored in the same row)")
      ->check([](const std::string& k) { return verify::is_hash_hex(k) ? "" : "must be 64 lowercase hex characters"; });
  cmd->add_flag("--json", *json, "print the report as one JSON object");
  cmd->callback([=] {
    auto a = db::audit(*db, *o);
    if (!a) {
      if (*json)
        std::cout << nlohmann::json{{"ok", false}, {"error", a.err().reason}}.dump() << "\n";
      std::cerr << "error: " << a.err().reason << "\n";
      throw CLI::RuntimeError(2);
    }
    if (*json)
      std::cout << report_json(*a, *o).dump(1) << "\n";
    else
      print_report(*a, *o);
    if (!a->ok())
      throw CLI::RuntimeError(1);
  });
}

} // namespace haca::app
