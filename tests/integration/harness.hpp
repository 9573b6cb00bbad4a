#pragma once
// Integration-test harness: a real haca network (coordinator, providers, verifiers) as child
// processes on free loopback ports, against a fresh database of its own. Each network gets its own temporary directory for models, keys
// and logs; its destructor stops every process.
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "app/process.hpp"
#include "app/workload.hpp"
#include "db/scratch.hpp"
#include "kernels/model.hpp"
#include "net/client.hpp"

namespace haca::test {

// The database of the network running now (each network has a fresh one, so a coordinator
// never recovers another test's jobs), else the base test database (HACA_TEST_DB, default
// postgresql:///haca_test).
std::string test_db();

// A database of its own, created next to the base test database and migrated like the real
// ones; dropped at the end.
class scratch_database : public db::scratch_database {
public:
  scratch_database();
};
std::string unique_id(const std::string& prefix); // unique per process and call

struct network_options {
  int providers = 1;
  int verifiers = 1;
  double sample_rate = 1.0;
  std::vector<std::string> coordinator_args;    // extra flags
  std::vector<std::vector<std::string>> provider_args; // extra flags per provider
  std::vector<std::string> verifier_args;               // extra flags for every verifier
  std::vector<std::string> extra_models;                // model files copied into the models dir
  bool wait_for_nodes = true;
};

class network {
public:
  explicit network(network_options o = {});
  ~network();
  network(const network&) = delete;
  network& operator=(const network&) = delete;

  std::string client_endpoint() const;
  std::string node_endpoint() const;
  int http_port() const { return http_port_; } // the coordinator's /metrics and /api
  static constexpr const char* read_token = "read-token-of-the-tests";   // its bearer tokens
  static constexpr const char* admin_token = "admin-token-of-the-tests";
  const std::string& db_url() const { return db_.url(); }
  const std::string& model_hash() const { return model_.hash; }
  int input_dim() const { return model_.input_dim(); }
  const std::string& dir() const { return dir_; }
  const std::string& models_dir() const { return models_dir_; }
  const std::string& coordinator_key() const { return coordinator_key_; } // hex Ed25519 public key
  // A client of its own: a fresh key, whose CURVE key (credentials.account()) is its account.
  // The coordinator runs with --demo-faucet 1000000000, so a new account is funded on its first job.
  net::client_credentials new_client() const;
  net::client connect_client(const net::client_credentials& who) const { return net::client{client_endpoint(), who}; }
  // A workload of a new client (new_client()): `jobs` random inputs from `seed` for this
  // network's model, at `tier`.
  app::workload_options workload(std::size_t jobs, const std::string& tier, std::uint64_t seed) const;
  app::child_process& coordinator() { return children_.front(); }
  app::child_process& provider(int i) { return children_.at(1 + static_cast<std::size_t>(i)); }
  app::child_process& verifier(int i) { return children_.at(1 + static_cast<std::size_t>(providers_ + i)); }
  app::child_process start_provider(const std::string& name, const std::vector<std::string>& extra = {});
  app::child_process start_verifier(const std::string& name);
  // Starts the coordinator again, as a supervisor would after it died or was stopped: the same
  // ports, database, models, key file, flags and log file. The old one must be gone (kill_hard
  // or stop_process on coordinator() first).
  void restart_coordinator();
  // Waits until `count` nodes started by this network have registered (providers table).
  bool wait_for_registered(int count, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  std::string logs() const; // tails of every log, for failure messages

private:
  scratch_database db_;
  int client_port_, node_port_, http_port_ = 0;
  std::string dir_, models_dir_, tag_, coordinator_key_, outer_db_;
  kernels::model model_;
  int providers_ = 0;
  std::vector<std::string> coordinator_args_, verifier_args_;
  std::vector<app::child_process> children_;
};

// Runs a shell command and collects its standard output (throws when it cannot start).
struct command_result {
  int exit_code = -1;
  std::string output;
};
command_result run_command(const std::string& command);

// Sends one message and waits for the next reply (nullopt on timeout).
std::optional<proto::message> round_trip(net::client& c, const proto::message& m,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(10));

// A single-value query against the test database, as text ("" when no row).
std::string query_value(const std::string& sql);
// Polls until pred() or the timeout.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = std::chrono::seconds(30));

} // namespace haca::test
