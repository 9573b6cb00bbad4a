// `haca coordinator`: the composition root of the coordinator's actors.
#include <chrono>
#include <fstream>
#include <set>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"
#include "actors/gateway.hpp"
#include "actors/metrics.hpp"
#include "app/admin_actions.hpp"
#include "app/admin_http.hpp"
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
  std::string node_allow; // file of node keys (hex, one per line) admitted on the node port; "" = any
  int min_reputation = 0;
  int max_verifier_lies = 1;
  std::int64_t min_stake = 0;
  std::int64_t stake_cooldown_ms = 60000;
  double sample_rate = 0.1;
  std::int64_t demo_faucet = 0;
  std::string admin_key; // whose DEPOSITs are obeyed: hex or a file holding it; "" = the coordinator's own key
  int fee_bps = 500;
  std::size_t batch_size = 256;
  int batch_ms = 200;
  int heartbeat_ms = proto::default_heartbeat_ms;
  int max_attempts = 3;
  std::size_t max_queue = 100000;
  std::size_t max_client_queue = 10000;
  std::int64_t assign_timeout_ms = 30000;
  int drain_ms = 5000;
  int http_port = 0;       // /metrics and the admin API over HTTP on --bind; 0 = none
  std::string web_dir;     // the dashboard's files; "" = the source tree's web/ (built in)
  std::string read_token;  // bearer token that reads the admin API (and /metrics); "" = no API
  std::vector<std::string> admin_tokens; // "NAME:TOKEN": the admin scope, actions recorded under NAME
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
  // Nodes need the public key: it is the node port's CurveZMQ server key and signs the blocks.
  const auto pub_path = o.key + ".pub";
  if (!(std::ofstream(pub_path) << key->public_key_hex << "\n")) {
    spdlog::error("cannot write the coordinator's public key to {}", pub_path);
    return 2;
  }
  std::string admin_key = key->public_key_hex;
  if (!o.admin_key.empty()) {
    auto k = read_public_key(o.admin_key, "--admin-key");
    if (!k) {
      spdlog::error("{}", k.err().reason);
      return 2;
    }
    admin_key = k.value();
  }
  std::set<std::string> node_allow;
  if (!o.node_allow.empty()) {
    std::ifstream in(o.node_allow);
    if (!in) {
      spdlog::error("--node-allow: cannot read {}", o.node_allow);
      return 2;
    }
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] == '#')
        continue;
      if (!verify::is_hash_hex(line)) {
        spdlog::error("--node-allow {}: '{}' is not a public key (64 lowercase hex characters)", o.node_allow,
                      line.substr(0, 80));
        return 2;
      }
      node_allow.insert(line);
    }
  }
  // Recovery is replay: every core starts from what Postgres committed, nothing else.
  auto store_db = std::make_shared<db::store>(o.db);
  auto snap = store_db->load_snapshot();
  if (!snap) {
    spdlog::error("{} (is PostgreSQL running and migrated? try 'deploy/setup.sh --db-only')", snap.err().reason);
    return 2;
  }
  const auto now = actors::now_us();

  core::execution_config ex;
  for (const auto& [hash, m] : models.value())
    ex.models[hash] = {m.input_dim(), m.output_size()};
  ex.faucet = o.demo_faucet;
  ex.admin_account = verify::curve_public_hex(admin_key);
  ex.heartbeat_ms = o.heartbeat_ms;
  ex.max_attempts = o.max_attempts;
  ex.max_waiting = o.max_queue;
  ex.max_client_waiting = std::min(o.max_queue, o.max_client_queue);
  ex.assign_timeout_ms = o.assign_timeout_ms;
  ex.min_reputation = o.min_reputation;
  ex.stake = {o.min_stake, o.stake_cooldown_ms};
  ex.coordinator_key = key->public_key_hex;
  core::verification_config vc;
  vc.sample_rate = o.sample_rate;
  vc.sampling_secret = verify::to_hex(verify::sha256(key->secret_key + "sampling"));
  vc.heartbeat_ms = o.heartbeat_ms;
  vc.coordinator_key = key->public_key_hex;
  vc.max_verifier_lies = o.max_verifier_lies;
  core::settlement_config sc;
  sc.batch_size = o.batch_size;
  sc.batch_ms = o.batch_ms;
  sc.fee_bps = o.fee_bps;
  sc.key = key.value();

  auto execution = core::execution_core::recover(ex, snap.value(), now);
  auto verification = core::verification_core::recover(vc, snap.value(), now);
  auto settlement = core::settlement_core::recover(sc, snap.value(), now);
  spdlog::info("coordinator: recovered {} open jobs ({} waiting for a provider, {} for verification, {} for "
               "settlement), ledger height {}",
               snap->open_jobs.size(), execution.waiting(), verification.backlog(), settlement.backlog(),
               settlement.next_height());

  proto::limits limits;
  limits.max_tensor_bytes = o.max_tensor_bytes;
  auto sockets = actors::bind_gateway(fmt::format("tcp://{}:{}", o.bind, o.client_port),
                                      fmt::format("tcp://{}:{}", o.bind, o.node_port), limits, key.value(), node_allow);
  if (!sockets) {
    spdlog::error("{}", sockets.err().reason);
    return 2;
  }

  auto stats = std::make_shared<actors::metrics>();
  stats->restore(snap.value());
  auto gateway_counts = std::make_shared<actors::gateway_stats>();
  // The HTTP port: /metrics (Prometheus text format) and the admin API, bound before any actor
  // starts (a port in use stops the coordinator here); it listens once the actors run.
  httplib::Server http;
  std::thread http_thread;
  http_options tokens{o.read_token, {}};
  if (o.http_port > 0) {
    if (!o.read_token.empty() && o.read_token.size() < 16) {
      spdlog::error("coordinator: read-token needs 16 characters or more");
      return 2;
    }
    for (const auto& text : o.admin_tokens) {
      auto t = parse_admin_token(text);
      if (!t) {
        spdlog::error("coordinator: {}", t.err().reason);
        return 2;
      }
      tokens.admin_tokens.push_back(t.value());
    }
    if (o.read_token.empty() && !tokens.admin_tokens.empty()) {
      spdlog::error("coordinator: admin-token needs a read-token too (without one there is no API)");
      return 2;
    }
    serve_http(http, tokens, std::make_shared<db::admin_reads>(o.db), stats, gateway_counts, o.web_dir);
    if (!http.bind_to_port(o.bind, o.http_port)) {
      spdlog::error("coordinator: cannot listen on {}:{} for HTTP (in use?); --http-port 0 turns it off", o.bind,
                    o.http_port);
      return 2;
    }
    spdlog::info("coordinator: HTTP on {}:{}: /metrics{}", o.bind, o.http_port,
                 o.read_token.empty() ? " (open; no admin API without read-token)"
                                      : tokens.admin_tokens.empty() ? " and /api (reads)" : " and /api (reads, actions)");
  }
  auto sys_cfg = responsive_actor_config();
  caf::actor_system sys{sys_cfg};
  auto client_backlog = std::make_shared<actors::inbound_backlog>();
  auto node_backlog = std::make_shared<actors::inbound_backlog>();
  actors::peers p;
  p.store = actors::spawn_store(sys, store_db);
  p.reader = actors::spawn_status_reader(sys, o.db);
  p.job_queue = actors::spawn_job_queue(sys, std::move(execution), client_backlog, node_backlog);
  auto referee = std::make_shared<const core::referee>(
      std::make_shared<const std::map<std::string, kernels::model>>(std::move(models.value())));
  p.verifier_pool = actors::spawn_verifier_pool(sys, std::move(verification), referee, node_backlog);
  p.settlement = actors::spawn_settlement_batcher(sys, std::move(settlement));
  p.stats = stats;
  for (const auto& a : {p.job_queue, p.verifier_pool, p.settlement})
    caf::anon_send(a, actors::peers_atom::value, p);
  auto gateway = actors::spawn_gateway(sys, sockets.value(), limits,
                                       {p.job_queue, p.job_queue, p.verifier_pool, client_backlog, node_backlog},
                                       gateway_counts);

  // The admin API's actions need the execution core's actor: served from now on.
  if (o.http_port > 0) {
    if (!tokens.admin_tokens.empty())
      serve_admin_actions(http, tokens, sys, p.job_queue);
    http_thread = std::thread([&http] { http.listen_after_bind(); });
  }
  const auto stop_http = [&] {
    if (http_thread.joinable()) {
      http.stop();
      http_thread.join();
    }
  };

  // Fail fast: if any actor dies, say why and exit non-zero; a supervisor restarts the
  // coordinator and recovery takes over from what Postgres committed.
  caf::scoped_actor self{sys};
  const std::vector<std::pair<const char*, caf::actor>> watched{
      {"store", p.store},           {"status_reader", p.reader}, {"job_queue", p.job_queue},
      {"verifier_pool", p.verifier_pool}, {"settlement", p.settlement}, {"gateway", gateway}};
  for (const auto& [name, a] : watched)
    self->monitor(a);
  std::thread signals([handle = caf::actor_cast<caf::actor>(self)] {
    wait_for_stop_signal();
    caf::anon_send(handle, actors::drain_atom::value);
  });
  signals.detach();

  spdlog::info("coordinator: clients on {}:{}, nodes on {}:{} (both CurveZMQ; nodes: {}), {} models", o.bind, o.client_port,
               o.bind, o.node_port,
               node_allow.empty() ? std::string("any node key") : fmt::format("{} allowed node keys", node_allow.size()),
               ex.models.size());
  spdlog::info("coordinator: public key {} (written to {}; clients and nodes pass it as --coordinator-key)",
               key->public_key_hex, pub_path);
  spdlog::info("coordinator: DEPOSITs are obeyed from {} only ({})", admin_key.substr(0, 12),
               o.admin_key.empty() ? "the coordinator's own key" : "--admin-key");
  if (o.demo_faucet > 0)
    spdlog::warn("coordinator: demo faucet on: every new account gets {} micro-units from the mint (--demo-faucet; "
                 "never in production)",
                 o.demo_faucet);
  bool stopping = false;
  self->receive_while([&] { return !stopping; })(
      [&](caf::down_msg& dm) {
        const char* who = "an actor";
        for (const auto& [name, a] : watched)
          if (a.address() == dm.source)
            who = name;
        spdlog::critical("coordinator: {} died ({}); exiting so that a restart recovers from Postgres", who,
                         sys.render(dm.reason));
        spdlog::default_logger()->flush();
        std::_Exit(70);
      },
      [&](actors::drain_atom) { stopping = true; });

  // SIGTERM drains: admit nothing more, let providers finish what they hold, commit what is
  // pending, send what is owed, say DISCONNECT to the nodes, then stop.
  spdlog::info("coordinator: draining");
  auto warn = [&](const char* what) {
    return [&sys, what](caf::error& e) { spdlog::warn("coordinator: {} ({}); stopping anyway", what, sys.render(e)); };
  };
  self->request(p.job_queue, std::chrono::milliseconds(o.drain_ms), actors::drain_atom::value)
      .receive([](bool) {}, warn("drain not finished"));
  self->request(p.store, std::chrono::seconds(5), actors::sync_atom::value).receive([](bool) {}, warn("store not idle"));
  for (const auto& a : {p.job_queue, p.verifier_pool})
    self->request(a, std::chrono::seconds(2), actors::farewell_atom::value).receive([](bool) {}, warn("no farewell"));
  actors::gateway_stop();
  for (const auto& [name, a] : watched)
    self->demonitor(a);
  stop_http();
  for (const auto& a : {p.job_queue, p.verifier_pool, p.settlement, p.store, p.reader})
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  spdlog::info("coordinator: stopped ({} messages received, {} rejected, {} sent, {} dropped)",
               gateway_counts->received.load(), gateway_counts->rejected.load(), gateway_counts->sent.load(),
               gateway_counts->dropped.load());
  return 0;
}

} // namespace

void add_coordinator_command(CLI::App& app) {
  auto o = std::make_shared<coordinator_options>();
  auto* cmd = app.add_subcommand("coordinator", "Run the coordinator: client and node front ends, scheduling, "
                                                "verification sampling, settlement into Postgres");
  cmd->add_option("--db", o->db, "PostgreSQL connection URL")->capture_default_str();
  cmd->add_option("--bind", o->bind, "address to listen on")->capture_default_str();
  cmd->add_option("--client-port", o->client_port, "TCP port for clients (SUBMIT, STATUS, RECEIPT, PROOF, DEPOSIT; CurveZMQ)")->capture_default_str();
  cmd->add_option("--node-port", o->node_port, "TCP port for providers and verifiers")->capture_default_str();
  cmd->add_option("--models", o->models, "directory of *.safetensors models clients may use")->capture_default_str();
  cmd->add_option("--min-reputation", o->min_reputation,
                  "providers whose reputation (permille, from their verified jobs and lost disputes) is below this "
                  "get no jobs")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  cmd->add_option("--max-verifier-lies", o->max_verifier_lies,
                  "referee rulings a verifier may lose before it is refused (0 = never; the lie-rate test switch "
                  "needs 0)")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  cmd->add_option("--min-stake", o->min_stake,
                  "micro-units a provider or verifier must have at stake to join: its HELLO moves what is missing "
                  "from its account (DEPOSIT --node) to its stake, or is refused (0 = no stake needed)")
      ->check(CLI::Range(std::int64_t{0}, proto::max_deposit))
      ->capture_default_str();
  cmd->add_option("--stake-cooldown-ms", o->stake_cooldown_ms,
                  "how long a node's stake stays held after it left (slashable for what it did), before it goes "
                  "back to its account")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{86400000} * 365))
      ->capture_default_str();
  cmd->add_option("--node-allow", o->node_allow,
                  "file of node public keys (hex, one per line) allowed on the node port; without it any key may "
                  "connect");
  cmd->add_option("--key", o->key,
                  "Ed25519 key file that signs settlement blocks and is both ports' CurveZMQ key (created if "
                  "absent; its public key is written to <file>.pub)")
      ->capture_default_str();
  cmd->add_option("--sample-rate", o->sample_rate, "share of 'sampled' jobs re-executed by a verifier (0..1)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--demo-faucet", o->demo_faucet,
                  "demo and test switch: micro-units minted for an account the first time it submits (0 = none; "
                  "real accounts are funded by DEPOSIT)")
      ->capture_default_str();
  cmd->add_option("--admin-key", o->admin_key,
                  "public key (hex, or a file holding it) whose DEPOSITs are obeyed (default: the coordinator's own "
                  "--key)");
  cmd->add_option("--fee-bps", o->fee_bps, "protocol fee in basis points of each job's price")
      ->check(CLI::Range(0, 10000))
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "receipts per settlement block at most")->capture_default_str();
  cmd->add_option("--batch-ms", o->batch_ms, "settle a partial batch after this many ms")->capture_default_str();
  cmd->add_option("--heartbeat-ms", o->heartbeat_ms, "heartbeat interval; a node is dead after 3 missed")
      ->capture_default_str();
  cmd->add_option("--max-attempts", o->max_attempts, "attempts per job before it FAILS")->capture_default_str();
  cmd->add_option("--max-queue", o->max_queue, "jobs admitted and not yet executed before SUBMIT answers queue_full")
      ->capture_default_str();
  cmd->add_option("--max-client-queue", o->max_client_queue, "the same, per client")->capture_default_str();
  cmd->add_option("--assign-timeout-ms", o->assign_timeout_ms,
                  "an assigned job without DONE or FAIL after this long runs again elsewhere")
      ->capture_default_str();
  cmd->add_option("--http-port", o->http_port,
                  "TCP port for HTTP on --bind: /metrics (Prometheus text format) and the admin API /api; 0 = none")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--read-token", o->read_token,
                  "bearer token that reads the admin API and /metrics (16+ characters; put it in the config file, not "
                  "on the command line); without it there is no API and /metrics is open");
  cmd->add_option("--admin-token", o->admin_tokens,
                  "bearer token with the admin scope, as NAME:TOKEN (NAME, a-z 0-9 _ . -, is recorded with every "
                  "action taken with it; a bare TOKEN is named 'admin'; 16+ characters; repeat for more operators)");
  cmd->add_option("--web-dir", o->web_dir,
                  "folder of the dashboard's files (haca's web/), served at / with the API; default: the source "
                  "tree's web/, built in");
  cmd->add_option("--drain-ms", o->drain_ms, "on SIGTERM, how long to wait for providers to finish what they hold")
      ->capture_default_str();
  cmd->add_option("--max-tensor-bytes", o->max_tensor_bytes, "largest tensor a message may carry")
      ->capture_default_str();
  add_log_level_option(*cmd, o->log_level);
  cmd->callback([o] {
    if (int rc = run_coordinator(*o))
      throw CLI::RuntimeError(rc);
  });
}

} // namespace haca::app
