#pragma once
// Small pieces the subcommands share: model directories, stop signals, logging.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <caf/actor_system_config.hpp>

#include "kernels/model.hpp"
#include "net/client.hpp"
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

// `bytes` random bytes (libsodium's CSPRNG) as lowercase hex: tokens and request ids.
std::string random_hex(std::size_t bytes);
void set_log_level(const std::string& level);

// Registration of each subcommand (one file each).
void add_coordinator_command(CLI::App& app);
void add_node_commands(CLI::App& app);       // provider, verifier
void add_client_commands(CLI::App& app);     // submit, status
void add_model_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_audit_command(CLI::App& app);
void add_proof_commands(CLI::App& app);
// A public key (64 lowercase hex characters) given as itself or as a file holding it, like the
// <key>.pub the coordinator writes. `flag` names the option in the error.
result<std::string> read_public_key(const std::string& hex_or_file, const std::string& flag);

// How a client command reaches the coordinator: the client port, the client's key file (its
// CURVE key is the account; created if absent) and the coordinator's public key.
struct client_login {
  std::string connect = "tcp://127.0.0.1:7700";
  std::string key = "haca-keys/client.key";
  std::string coordinator_key = "haca-keys/coordinator.key.pub";
};
void add_client_login_options(CLI::App& cmd, client_login& login);
result<net::client_credentials> load_credentials(const client_login& login);
// One request to the coordinator's client port and its reply, waiting 10 s at most: the reply,
// or an error (bad keys, no answer, a reply that does not decode, or the coordinator's ERROR).
result<proto::message> ask_coordinator(const client_login& login, const proto::message& request);
result<proto::message> ask_coordinator(const std::string& endpoint, const net::client_credentials& credentials,
                                       const proto::message& request);
void add_train_commands(CLI::App& app);     // train, eval (Fashion-MNIST models)
// --config FILE (TOML, toml++): call before the commands are added. config-example prints every key.
void add_config_support(CLI::App& app);
void add_config_example_command(CLI::App& app);
void add_admin_command(CLI::App& app);      // admin providers | jobs | job ID | disputes | blocks | accounts
std::string explain_config_error(const std::string& message); // names the unknown key plainly
std::vector<std::string> arguments_with_config(int argc, char** argv); // HACA_CONFIG as --config

} // namespace haca::app
