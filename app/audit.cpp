// `haca audit`: re-check what is in Postgres, independently of the coordinator.
#include <iostream>

#include <fmt/format.h>

#include "app/common.hpp"
#include "db/audit.hpp"

namespace haca::app {

void add_audit_command(CLI::App& app) {
  auto db = std::make_shared<std::string>("postgresql:///haca");
  auto client = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("audit", "Re-verify every receipt signature, block hash, block signature and batch "
                                          "root, and check that the postings balance");
  cmd->add_option("--db", *db, "PostgreSQL connection URL")->capture_default_str();
  cmd->add_option("--client", *client, "count jobs of this client only (the chain and ledger are always checked whole)");
  cmd->callback([=] {
    auto a = db::audit(*db, *client);
    if (!a) {
      std::cerr << "error: " << a.err().reason << "\n";
      throw CLI::RuntimeError(2);
    }
    std::cout << fmt::format("jobs: {} ({} settled, {} verified, {} unsampled, {} disputed, {} failed or expired)\n"
                             "receipts: {} checked, signatures {}\n"
                             "blocks: {}, hash chain, signatures and batch roots {}\n"
                             "ledger: {}\n",
                             a->jobs, a->settled, a->verified, a->unsampled, a->disputed, a->failed,
                             a->receipts_checked, a->receipts_valid ? "valid" : "INVALID", a->blocks,
                             a->chain_valid ? "valid" : "BROKEN",
                             a->postings_balanced ? "balanced (every job's postings and all postings sum to zero)"
                                                  : "NOT balanced");
    if (!a->problem.empty()) {
      std::cout << "problem: " << a->problem << "\n";
      throw CLI::RuntimeError(1);
    }
  });
}

} // namespace haca::app
