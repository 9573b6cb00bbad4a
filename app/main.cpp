// haca: one binary, one subcommand per role (see docs/OPERATIONS.md and `haca --help`).
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "app/common.hpp"

int main(int argc, char** argv) {
  CLI::App app{"haca: a verifiable AI-inference compute marketplace"};
  app.require_subcommand(1);
  haca::app::add_config_support(app);
  haca::app::add_coordinator_command(app);
  haca::app::add_node_commands(app);
  haca::app::add_client_commands(app);
  haca::app::add_model_command(app);
  haca::app::add_demo_command(app);
  haca::app::add_audit_command(app);
  haca::app::add_proof_commands(app);
  haca::app::add_train_commands(app);
  haca::app::add_admin_command(app);
  haca::app::add_config_example_command(app);
  auto args = haca::app::arguments_with_config(argc, argv);
  std::vector<char*> pointers;
  for (auto& a : args)
    pointers.push_back(a.data());
  try {
    app.parse(static_cast<int>(pointers.size()), pointers.data());
  } catch (const CLI::ConfigError& e) {
    std::cerr << haca::app::explain_config_error(e.what()) << "\n";
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
