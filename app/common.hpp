#pragma once
// Small pieces the subcommands share: model directories, stop signals, logging.
#include <atomic>
#include <map>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <caf/actor_system_config.hpp>

#include "kernels/model.hpp"
#include "proto/message.hpp"

namespace haca::app {

// Loads every *.safetensors file in dir; a file that fails to load is logged and skipped.
// Only a missing directory is an error.
result<std::map<std::string, kernels::model>> load_models_dir(const std::string& dir);

// SIGINT/SIGTERM set this flag (and wake waiters polling it).
const std::atomic<bool>& stop_requested();
void install_stop_handlers();
// For a process whose main thread only waits: block SIGINT/SIGTERM in every thread started
// afterwards, then wait_for_stop_signal() returns when one arrives.
void block_stop_signals();
void wait_for_stop_signal();

// Idle CAF workers (work stealing, the default) back off to 10 ms sleeps, and every job crosses
// several actors: this config makes a message wake an idle worker at once (work sharing).
caf::actor_system_config responsive_actor_config();

void add_log_level_option(CLI::App& cmd, std::string& level);
void set_log_level(const std::string& level);

// Registration of each subcommand (one file each).
void add_coordinator_command(CLI::App& app);
void add_node_commands(CLI::App& app);       // provider, verifier
void add_client_commands(CLI::App& app);     // submit, status
void add_model_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_audit_command(CLI::App& app);
void add_proof_commands(CLI::App& app);
// One request to the coordinator's client port and its reply, waiting 10 s at most: the reply,
// or an error (no answer, a reply that does not decode, or the coordinator's ERROR).
result<proto::message> ask_coordinator(const std::string& connect, const proto::message& request); // prove-inclusion, verify-receipt, verify-inclusion
void add_train_commands(CLI::App& app);     // train, eval (Fashion-MNIST models)

} // namespace haca::app
