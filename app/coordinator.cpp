// `haca coordinator`: the composition root of the coordinator's actors.
#include <chrono>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"
#include "actors/gateway.hpp"
#include "app/common.hpp"
#include "verify/hash.hpp"

namespace haca::app {
namespace {

struct coordinator_options {
  std::string db = "postgresql:///haca";
  std::string bind = "127.0.0.1";
  int client_port = proto::default_client_port;
  int node_port = proto::default_node_port;
  std::string models = "models";
  std::string key = "haca-keys/coordinator.key";
  double sample_rate = 0.1;
  std::int64_t faucet = 0;
  int fee_bps = 500;
  std::size_t batch_size = 256;
  int batch_ms = 200;
  int heartbeat_ms = proto::default_heartbeat_ms;
  int max_attempts = 3;
  std::size_t max_queue = 100000;
  std::int64_t max_tensor_bytes = 1 << 20;
  std::string log_level = "info";
};

int run_coordinator(const coordinator_options& o) {
  set_log_level(o.log_level);
  block_stop_signals();
  auto models = load_models_dir(o.models);
  if (!models) {
    spdlog::error("{}", models.err().reason);
    return 2;
  }
  auto key = verify::load_or_create_key(o.key);
  if (!key) {
    spdlog::error("coordinator key: {}", key.err().reason);
    return 2;
  }
  std::shared_ptr<db::store> store_db;
  try {
    store_db = std::make_shared<db::store>(o.db);
  } catch (const std::exception& e) {
    spdlog::error("cannot connect to {}: {} (is PostgreSQL running? try 'deploy/setup.sh --db-only')", o.db, e.what());
    return 2;
  }
  auto head = store_db->load_startup();
  if (!head) {
    spdlog::error("{} (were the migrations applied? 'deploy/migrate.sh {}')", head.err().reason, o.db);
    return 2;
  }

  actors::coordinator_config cfg;
  for (const auto& [hash, m] : models.value())
    cfg.model_input_dims[hash] = m.input_dim();
  cfg.faucet = o.faucet;
  cfg.heartbeat_ms = o.heartbeat_ms;
  cfg.sample_rate = o.sample_rate;
  cfg.sampling_secret = verify::to_hex(verify::sha256(key->secret_key + "sampling"));
  cfg.fee_bps = o.fee_bps;
  cfg.batch_size = o.batch_size;
  cfg.batch_ms = o.batch_ms;
  cfg.max_attempts = o.max_attempts;
  cfg.max_queue = o.max_queue;
  cfg.key = key.value();
  cfg.ledger_head = head.value();

  proto::limits limits;
  limits.max_tensor_bytes = o.max_tensor_bytes;
  auto sockets = actors::bind_gateway(fmt::format("tcp://{}:{}", o.bind, o.client_port),
                                      fmt::format("tcp://{}:{}", o.bind, o.node_port), limits);
  if (!sockets) {
    spdlog::error("{}", sockets.err().reason);
    return 2;
  }

  caf::actor_system_config sys_cfg;
  caf::actor_system sys{sys_cfg};
  actors::peers p;
  p.store = actors::spawn_store(sys, store_db);
  p.job_queue = actors::spawn_job_queue(sys, cfg);
  p.scheduler = actors::spawn_scheduler(sys, cfg);
  p.verifier_pool = actors::spawn_verifier_pool(sys, cfg);
  p.settlement = actors::spawn_settlement_batcher(sys, cfg);
  for (const auto& a : {p.job_queue, p.scheduler, p.verifier_pool, p.settlement})
    caf::anon_send(a, actors::peers_atom::value, p);
  auto gateway = actors::spawn_gateway(sys, sockets.value(), limits, p.job_queue, p.scheduler);

  spdlog::info("coordinator: clients on {}:{}, nodes on {}:{}, {} models, ledger height {}, key {}", o.bind,
               o.client_port, o.bind, o.node_port, cfg.model_input_dims.size(), cfg.ledger_head.next_height,
               cfg.key.public_key_hex.substr(0, 12));
  wait_for_stop_signal();
  spdlog::info("coordinator: stopping");
  actors::gateway_stop(); // the gateway actor ends; the actor system waits for it on the way out
  for (const auto& a : {p.job_queue, p.scheduler, p.verifier_pool, p.settlement, p.store})
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  return 0;
}

} // namespace

void add_coordinator_command(CLI::App& app) {
  auto o = std::make_shared<coordinator_options>();
  auto* cmd = app.add_subcommand("coordinator", "Run the coordinator: client and node front ends, scheduling, "
                                                "verification sampling, settlement into Postgres");
  cmd->add_option("--db", o->db, "PostgreSQL connection URL")->capture_default_str();
  cmd->add_option("--bind", o->bind, "address to listen on")->capture_default_str();
  cmd->add_option("--client-port", o->client_port, "TCP port for clients (SUBMIT, STATUS)")->capture_default_str();
  cmd->add_option("--node-port", o->node_port, "TCP port for providers and verifiers")->capture_default_str();
  cmd->add_option("--models", o->models, "directory of *.safetensors models clients may use")->capture_default_str();
  cmd->add_option("--key", o->key, "Ed25519 key file that signs settlement blocks (created if absent)")
      ->capture_default_str();
  cmd->add_option("--sample-rate", o->sample_rate, "share of 'sampled' jobs re-executed by a verifier (0..1)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--faucet", o->faucet, "micro-units granted to a client id the first time it is seen (0 = none)")
      ->capture_default_str();
  cmd->add_option("--fee-bps", o->fee_bps, "protocol fee in basis points of each job's price")
      ->check(CLI::Range(0, 10000))
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "receipts per settlement block at most")->capture_default_str();
  cmd->add_option("--batch-ms", o->batch_ms, "settle a partial batch after this many ms")->capture_default_str();
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "heartbeat interval; a node is dead after 3 missed")
      ->capture_default_str();
  cmd->add_option("--max-attempts", o->max_attempts, "attempts per job before it FAILS")->capture_default_str();
  cmd->add_option("--max-queue", o->max_queue, "queued jobs before SUBMIT answers queue_full")->capture_default_str();
  cmd->add_option("--max-tensor-bytes", o->max_tensor_bytes, "largest tensor a message may carry")
      ->capture_default_str();
  add_log_level_option(*cmd, o->log_level);
  cmd->callback([o] {
    if (int rc = run_coordinator(*o))
      throw CLI::RuntimeError(rc);
  });
}

} // namespace haca::app
