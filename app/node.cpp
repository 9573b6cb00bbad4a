// `haca provider` and `haca verifier`: execution and verification nodes.
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "actors/node_workers.hpp"
#include "app/common.hpp"
#include "net/node_session.hpp"
#include "proto/commands.hpp"
#include "verify/hash.hpp"

namespace haca::app {
namespace {

struct node_cli {
  std::string role;
  std::string connect = "tcp://127.0.0.1:7701";
  std::string models = "models";
  std::string key;
  std::string name;
  std::int64_t price = 10;
  std::int64_t stake = 0;
  std::string operator_key; // hex public key of the node's operator, or ""
  std::string coordinator_key = "haca-keys/coordinator.key.pub"; // hex, or a file holding it
  int credit = 64; // JOBs queued at the node: enough to cover a commit's latency, few enough to keep queues fair
  int fault_delay_ms = 0;
  double corrupt_rate = 0; // --cheat-rate (providers), --lie-rate (verifiers): test switches
  std::string backend; // empty: the fastest usable one
  std::string log_level = "info";
};

// The named backend, or the fastest usable one; an error that says why a named one cannot run.
result<const kernels::backend*> choose_backend(const std::string& name) {
  const auto usable = kernels::usable_backends();
  if (name.empty()) return usable.front(); // the reference is always usable
  if (const auto* be = kernels::find_backend(name)) return be;
  std::string names;
  for (const auto* be : usable) names += (names.empty() ? "" : ", ") + std::string(be->name);
  for (const auto* be : kernels::compiled_backends())
    if (name == be->name)
      return make_error(errc::internal, fmt::format("backend '{}' cannot run here: {} (usable here: {})", name,
                                                    be->unavailable_reason(), names));
  return make_error(errc::internal,
                    fmt::format("unknown backend '{}': this build has no such backend (usable here: {})", name, names));
}

int run_node(const node_cli& o) {
  set_log_level(o.log_level);
  install_stop_handlers();
  // The coordinator refuses a HELLO whose name is not an id (docs/PROTOCOL.md): say so now.
  if (auto st = proto::check_id(o.name, "--name"); !st) {
    spdlog::error("{}", st.err().reason);
    return 2;
  }
  auto coordinator_key = read_public_key(o.coordinator_key, "--coordinator-key");
  if (!coordinator_key) {
    spdlog::error("{}", coordinator_key.err().reason);
    return 2;
  }
  if (!o.operator_key.empty() && !verify::is_hash_hex(o.operator_key)) {
    spdlog::error("--operator-key must be a public key, 64 lowercase hex characters");
    return 2;
  }
  auto models = load_models_dir(o.models);
  if (!models) {
    spdlog::error("{}", models.err().reason);
    return 2;
  }
  auto key_path = o.key.empty() ? "haca-keys/" + o.name + ".key" : o.key;
  auto key = verify::load_or_create_key(key_path);
  if (!key) {
    spdlog::error("{} key: {}", o.role, key.err().reason);
    return 2;
  }
  auto library = std::make_shared<const actors::model_library>(std::move(models.value()));
  auto backend = choose_backend(o.backend);
  if (!backend) {
    spdlog::error("{}", backend.err().reason);
    return 2;
  }
  const std::string backend_name = backend.value()->name;

  net::node_options opts;
  opts.endpoint = o.connect;
  opts.key = key.value();
  opts.coordinator_key = coordinator_key.value();
  opts.credit = o.credit;
  opts.caps.role = o.role;
  opts.caps.name = o.name;
  opts.caps.device = backend_name == "cuda" || backend_name == "cublaslt" ? "cuda" : "cpu";
  for (const auto* be : kernels::usable_backends())
    opts.caps.backends.emplace_back(be->name);
  for (const auto& [hash, m] : *library)
    opts.caps.models.push_back(hash);
  opts.caps.price = o.role == "provider" ? o.price : 0;
  opts.caps.stake = o.stake;
  opts.caps.operator_key = o.operator_key;

  auto sys_cfg = responsive_actor_config();
  caf::actor_system sys{sys_cfg};
  actors::worker_config wcfg{library, key.value(), backend.value(), 256, o.fault_delay_ms, o.corrupt_rate};
  if (o.corrupt_rate > 0)
    spdlog::warn("{} '{}': TEST SWITCH: {:.0f}% of {} are corrupted on purpose", o.role, o.name, 100 * o.corrupt_rate,
                 o.role == "provider" ? "results (signed as if honest)" : "verdicts");
  auto worker = o.role == "provider" ? actors::spawn_gpu_worker(sys, wcfg) : actors::spawn_verify_worker(sys, wcfg);
  spdlog::info("{} '{}': key {}, {} models, backend {} (usable: {})", o.role, o.name,
               key->public_key_hex.substr(0, 12), library->size(), wcfg.backend->name,
               fmt::format("{}", fmt::join(opts.caps.backends, ", ")));

  net::node_session session{opts, [&](proto::message m) {
                              if (m.command == proto::cmd::job) {
                                if (auto job = proto::parse_job(m))
                                  caf::anon_send(worker, std::move(job.value()));
                                else
                                  spdlog::warn("bad JOB: {}", job.err().reason);
                              } else if (m.command == proto::cmd::probe) {
                                if (auto probe = proto::parse_probe(m))
                                  caf::anon_send(worker, std::move(probe.value()));
                                else
                                  spdlog::warn("bad PROBE: {}", probe.err().reason);
                              } else if (auto task = proto::parse_verify(m)) {
                                caf::anon_send(worker, std::move(task.value()));
                              } else {
                                spdlog::warn("bad VERIFY: {}", task.err().reason);
                              }
                            }};
  session.run(stop_requested());
  spdlog::info("{} '{}': stopping", o.role, o.name);
  caf::anon_send_exit(worker, caf::exit_reason::user_shutdown);
  return 0;
}

void add_node(CLI::App& app, const std::string& role, const std::string& help) {
  auto o = std::make_shared<node_cli>();
  o->role = role;
  o->name = role;
  auto* cmd = app.add_subcommand(role, help);
  cmd->add_option("--connect", o->connect, "the coordinator's node endpoint")->capture_default_str();
  cmd->add_option("--coordinator-key", o->coordinator_key,
                  "the coordinator's public key (hex) or a file holding it: the node port's CurveZMQ server key")
      ->capture_default_str();
  cmd->add_option("--models", o->models, "directory of *.safetensors models this node serves")->capture_default_str();
  cmd->add_option("--name", o->name, "a name for logs and the dashboard")->capture_default_str();
  cmd->add_option("--key", o->key, "Ed25519 key file (created if absent; default haca-keys/<name>.key)");
  cmd->add_option("--backend", o->backend,
                  "inference backend (default: the fastest usable here; the reference is always usable)");
  cmd->add_option("--credit", o->credit, "jobs this node takes at once (READY n)")->capture_default_str();
  cmd->add_option("--stake", o->stake, "stake offered, micro-units")->capture_default_str();
  cmd->add_option("--operator-key", o->operator_key,
                  "hex public key of whoever runs this node; a verifier never judges a provider of the same "
                  "operator");
  if (role == "provider") {
    cmd->add_option("--price", o->price, "price per job, micro-units")->capture_default_str();
    cmd->add_option("--fault-delay-ms", o->fault_delay_ms,
                    "testing only: sleep this long before each job, to hold jobs in flight")
        ->capture_default_str();
    cmd->add_option("--cheat-rate", o->corrupt_rate,
                    "testing only: corrupt this share of results at a random layer and sign a consistent receipt for "
                    "the wrong result")
        ->check(CLI::Range(0.0, 1.0));
  } else {
    cmd->add_option("--lie-rate", o->corrupt_rate,
                    "testing only: report wrong hashes (a corrupted re-run, signed) for this share of VERIFYs")
        ->check(CLI::Range(0.0, 1.0));
  }
  add_log_level_option(*cmd, o->log_level);
  cmd->callback([o] {
    if (int rc = run_node(*o))
      throw CLI::RuntimeError(rc);
  });
}

} // namespace

void add_node_commands(CLI::App& app) {
  add_node(app, "provider", "Run an execution node: register with the coordinator, run jobs, sign receipts");
  add_node(app, "verifier", "Run a verification node: re-execute sampled jobs and return verdicts");
}

} // namespace haca::app
