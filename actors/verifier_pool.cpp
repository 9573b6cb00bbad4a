// verifier_pool: decides which executed jobs get re-executed (verify::sampled, from a secret the
// providers never see), hands them to verifier nodes with credit, and turns verdicts into
// final jobs for settlement. Never on the client's path: the client already has its RESULT.
#include <deque>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"
#include "actors/gateway.hpp"
#include "verify/sampling.hpp"

namespace haca::actors {
namespace {

struct verifier_entry {
  proto::capabilities caps;
  int credit = 0;
  std::int64_t last_heard_us = 0;
};

struct verifier_pool_state {
  coordinator_config cfg;
  peers p;
  std::map<std::string, verifier_entry> verifiers; // by identity
  std::deque<to_verify> pending;
  std::map<std::int64_t, std::pair<std::string, to_verify>> in_flight; // job id -> (verifier identity, task)
  static inline const char* name = "verifier_pool";
};

using self_ptr = caf::stateful_actor<verifier_pool_state>*;

void send_node(const std::string& identity, const proto::message& m) { gateway_send(port_kind::node, identity, m); }

void finalize(self_ptr self, const final_job& job, const char* state, std::string detail) {
  self->send(self->state.p.store, note_atom::value,
             db::operation{db::record_events{{{job.job_id, state, std::move(detail), job.receipt.attempt, "", now_us()}}}});
  self->send(self->state.p.settlement, final_atom::value, job);
}

void dispatch(self_ptr self) {
  auto& st = self->state;
  for (auto& [identity, v] : st.verifiers) {
    while (v.credit > 0 && !st.pending.empty()) {
      auto task = std::move(st.pending.front());
      st.pending.pop_front();
      --v.credit;
      send_node(identity, proto::make_verify({task.job.job_id, task.job.receipt.model_hash, task.input, task.job.receipt}));
      st.in_flight[task.job.job_id] = {identity, std::move(task)};
    }
  }
}

void drop_verifier(self_ptr self, const std::string& identity, const std::string& why) {
  auto& st = self->state;
  spdlog::warn("verifier_pool: verifier {} lost ({})", st.verifiers.at(identity).caps.name, why);
  for (auto it = st.in_flight.begin(); it != st.in_flight.end();) {
    if (it->second.first == identity) {
      st.pending.push_front(std::move(it->second.second));
      it = st.in_flight.erase(it);
    } else {
      ++it;
    }
  }
  st.verifiers.erase(identity);
}

void on_message(self_ptr self, const inbound& in) {
  auto& st = self->state;
  const auto& cmd = in.msg.command;
  if (cmd == proto::cmd::hello) {
    auto caps = proto::parse_hello(in.msg); // the scheduler checked it already
    if (!caps)
      return;
    st.verifiers[in.identity] = {caps.value(), 0, now_us()};
    self->send(st.p.store, note_atom::value, db::operation{db::upsert_node{caps.value()}});
    send_node(in.identity, proto::make_welcome({st.cfg.heartbeat_ms, st.cfg.key.public_key_hex}));
    spdlog::info("verifier_pool: verifier '{}' joined", caps->name);
    return;
  }
  auto v = st.verifiers.find(in.identity);
  if (v == st.verifiers.end())
    return;
  v->second.last_heard_us = now_us();
  if (cmd == proto::cmd::ready) {
    if (auto n = proto::parse_ready(in.msg)) {
      v->second.credit += n.value();
      dispatch(self);
    } else {
      send_node(in.identity, proto::make_error(n.err()));
    }
  } else if (cmd == proto::cmd::verdict) {
    auto verdict = proto::parse_verdict(in.msg);
    if (!verdict) {
      send_node(in.identity, proto::make_error(verdict.err()));
      return;
    }
    auto it = st.in_flight.find(verdict->job_id);
    if (it == st.in_flight.end() || it->second.first != in.identity) {
      send_node(in.identity, proto::make_error(make_error(
                                 errc::unknown_job, fmt::format("job {} is not being verified by you", verdict->job_id))));
      return;
    }
    auto job = std::move(it->second.second.job);
    st.in_flight.erase(it);
    ++v->second.credit;
    // The verdict compares the verifier's own trace with the signed receipt.
    bool match = verdict->trace_root == job.receipt.trace_root && verdict->output_hash == job.receipt.output_hash;
    job.verdict = match ? "verified" : "mismatch";
    if (match)
      finalize(self, job, "VERIFIED", "by " + v->second.caps.name);
    else
      finalize(self, job, "DISPUTED",
               fmt::format("verifier {} got trace root {} but the receipt says {}", v->second.caps.name,
                           verdict->trace_root.substr(0, 12), job.receipt.trace_root.substr(0, 12)));
    dispatch(self);
  } else if (cmd == proto::cmd::disconnect) {
    drop_verifier(self, in.identity, "it disconnected");
    dispatch(self);
  } else if (cmd != proto::cmd::heartbeat) {
    send_node(in.identity, proto::make_error(make_error(errc::unknown_command,
                                                        fmt::format("{} is not a verifier command here", cmd))));
  }
}

caf::behavior verifier_pool(self_ptr self, coordinator_config cfg) {
  self->state.cfg = std::move(cfg);
  self->delayed_send(self, std::chrono::milliseconds(self->state.cfg.heartbeat_ms), tick_atom::value);
  return {
      [=](peers_atom, const peers& p) { self->state.p = p; },
      [=](executed_atom, to_verify& task) {
        auto& st = self->state;
        double p = task.tier == "none" ? 0.0 : task.tier == "full" ? 1.0 : st.cfg.sample_rate;
        if (verify::sampled(st.cfg.sampling_secret, verify::receipt_hash(task.job.receipt), p)) {
          st.pending.push_back(std::move(task));
          dispatch(self);
        } else {
          task.job.verdict = "unsampled";
          finalize(self, task.job, "UNSAMPLED", "");
        }
      },
      [=](inbound_atom, const inbound& in) { on_message(self, in); },
      [=](tick_atom) {
        auto& st = self->state;
        auto now = now_us();
        std::vector<std::string> dead;
        for (const auto& [identity, v] : st.verifiers) {
          if ((now - v.last_heard_us) / 1000 > static_cast<std::int64_t>(proto::heartbeat_liveness) * st.cfg.heartbeat_ms)
            dead.push_back(identity);
          else
            send_node(identity, proto::make_heartbeat());
        }
        for (const auto& identity : dead)
          drop_verifier(self, identity, "missed heartbeats");
        if (!dead.empty())
          dispatch(self);
        self->delayed_send(self, std::chrono::milliseconds(st.cfg.heartbeat_ms), tick_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_verifier_pool(caf::actor_system& sys, const coordinator_config& cfg) {
  return sys.spawn(verifier_pool, cfg);
}

} // namespace haca::actors
