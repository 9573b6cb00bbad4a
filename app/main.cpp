// haca: one binary, one subcommand per role (see docs/OPERATIONS.md and `haca --help`).
#include <CLI/CLI.hpp>

#include "app/common.hpp"

int main(int argc, char** argv) {
  CLI::App app{"haca: a verifiable AI-inference compute marketplace"};
  app.require_subcommand(1);
  haca::app::add_coordinator_command(app);
  haca::app::add_node_commands(app);
  haca::app::add_client_commands(app);
  haca::app::add_model_command(app);
  haca::app::add_demo_command(app);
  haca::app::add_audit_command(app);
  haca::app::add_proof_commands(app);
  haca::app::add_train_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
