#include "actors/node_workers.hpp"

#include <chrono>
#include <optional>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "net/node_session.hpp"
#include "verify/hash.hpp"
#include "verify/receipt.hpp"

namespace haca::actors {
namespace {

std::int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Each model's weights packed once for the worker's backend (on the worker's own thread), so a
// job only runs the kernels. The prepared models point into cfg.models, which outlives them.
using prepared_library = std::map<std::string, kernels::prepared_model>;

std::shared_ptr<const prepared_library> prepare_all(const worker_config& cfg) {
  auto out = std::make_shared<prepared_library>();
  const auto started = std::chrono::steady_clock::now();
  for (const auto& [hash, m] : *cfg.models) out->emplace(hash, kernels::prepare(m, *cfg.backend));
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  spdlog::info("worker: {} models prepared for backend {} in {} ms", out->size(), cfg.backend->name, ms);
  return out;
}

// The test switch: a corruption for this job with probability cfg.corrupt_rate.
class corrupter {
public:
  explicit corrupter(double rate) : rate_(rate), rng_(std::random_device{}()) {}
  std::optional<kernels::corruption> draw() {
    if (rate_ <= 0 || std::uniform_real_distribution<double>(0, 1)(rng_) >= rate_)
      return std::nullopt;
    return kernels::corruption{rng_(), rng_(), static_cast<std::int8_t>(1 + rng_() % 127)};
  }

private:
  double rate_;
  std::mt19937_64 rng_;
};

// Runs a job; a corruption (the test switch) is logged, so a test can tell the cheated jobs
// from the rest and the layer a dispute should name.
result<kernels::inference> run_job(const prepared_library& lib, const worker_config& cfg, const std::string& model_hash,
                                   const kernels::tensor& input, std::int64_t job_id,
                                   std::optional<kernels::corruption> corrupt, const char* switch_name) {
  auto m = lib.find(model_hash);
  if (m == lib.end())
    return make_error(errc::unknown_model, fmt::format("model {} is not on this node", model_hash.substr(0, 12)));
  if (corrupt) {
    const auto layers = m->second.m->layers.size();
    corrupt->layer %= layers;
    spdlog::warn("{}: job {} corrupted at layer {} of {} (test switch)", switch_name, job_id, corrupt->layer, layers);
  }
  return kernels::run_model(m->second, input, cfg.max_rows, corrupt);
}

caf::behavior gpu_worker(caf::event_based_actor*, worker_config cfg) {
  auto lib = prepare_all(cfg);
  auto cheat = std::make_shared<corrupter>(cfg.corrupt_rate);
  return {
      [=](proto::job_order& job) {
        if (cfg.fault_delay_ms > 0)
          std::this_thread::sleep_for(std::chrono::milliseconds(cfg.fault_delay_ms));
        auto started = wall_us();
        auto out = run_job(*lib, cfg, job.model, job.input, job.job_id, cheat->draw(), "cheat-rate");
        if (!out) {
          net::node_session::post(proto::make_fail({job.job_id, job.attempt, out.err().code, out.err().reason}));
          return;
        }
        verify::receipt r;
        r.job_id = job.job_id;
        r.model_hash = job.model;
        r.input_hash = verify::sha256_hex(job.input.data);
        r.output_hash = out->output_hash;
        r.trace_root = out->trace_root;
        r.price = job.price;
        r.attempt = job.attempt;
        r.started_at_us = started;
        r.finished_at_us = wall_us();
        verify::sign_receipt(r, cfg.key);
        net::node_session::post(proto::make_done({job.job_id, job.attempt, std::move(out->classes),
                                                  std::move(out->output), std::move(r), std::move(out->layer_hashes)}));
      },
  };
}

caf::behavior verify_worker(caf::event_based_actor*, worker_config cfg) {
  auto lib = prepare_all(cfg);
  auto lie = std::make_shared<corrupter>(cfg.corrupt_rate);
  return {
      // Blind: the task has no receipt to compare with. The verifier signs what it computed,
      // and the coordinator compares.
      [=](proto::verify_task& task) {
        proto::verdict_reply v;
        v.job_id = task.job_id;
        if (auto out = run_job(*lib, cfg, task.model, task.input, task.job_id, lie->draw(), "lie-rate"); !out) {
          v.reason = out.err().reason; // could not run: no verdict
        } else {
          verify::verdict d;
          d.job_id = task.job_id;
          d.model_hash = task.model;
          d.input_hash = verify::sha256_hex(task.input.data);
          d.output_hash = out->output_hash;
          d.trace_root = out->trace_root;
          d.layer_hashes = std::move(out->layer_hashes);
          verify::sign_verdict(d, cfg.key);
          v.verdict = std::move(d);
        }
        net::node_session::post(proto::make_verdict(v));
      },
      // A dispute's referee asks for the activation entering the layer in question. It is
      // checked against the hash both sides signed, so it is sent as computed (the lie switch
      // corrupts verdicts only); one this node cannot compute is not answered, and the referee
      // computes it itself.
      [=](proto::probe_request& p) {
        auto m = lib->find(p.model);
        if (m == lib->end()) {
          spdlog::warn("PROBE for job {}: model {} is not on this node", p.job_id, p.model.substr(0, 12));
          return;
        }
        auto out = kernels::trace_layer_output(m->second, p.input, static_cast<std::size_t>(p.layer), cfg.max_rows);
        if (!out) {
          spdlog::warn("PROBE for job {}: {}", p.job_id, out.err().reason);
          return;
        }
        net::node_session::post(proto::make_activation({p.job_id, p.layer, std::move(out.value())}));
      },
  };
}

} // namespace

caf::actor spawn_gpu_worker(caf::actor_system& sys, worker_config cfg) {
  return sys.spawn<caf::detached>(gpu_worker, std::move(cfg));
}

caf::actor spawn_verify_worker(caf::actor_system& sys, worker_config cfg) {
  return sys.spawn<caf::detached>(verify_worker, std::move(cfg));
}

} // namespace haca::actors
