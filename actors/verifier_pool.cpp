// verifier_pool: the verification core's actor. Decodes verifier messages into events, runs
// core::verification_core::step, and carries out the effects (actors/core_adapter.hpp).
#include <fmt/format.h>

#include "actors/coordinator.hpp"
#include "actors/core_adapter.hpp"
#include "core/verification.hpp"

namespace haca::actors {
namespace {

struct verifier_pool_state {
  std::optional<core::verification_core> core;
  core_adapter io{"verifier_pool"};
  std::shared_ptr<const core::referee> referee;
  std::shared_ptr<inbound_backlog> backlog;
  static inline const char* name = "verifier_pool";
};

using self_ptr = caf::stateful_actor<verifier_pool_state>*;

void step(self_ptr self, const core::verification_event& ev) {
  auto fx = self->state.core->step(ev, now_us());
  auto referee_tasks = std::move(fx.referee_tasks);
  self->state.io.carry_out(self, fx);
  if (auto* m = self->state.io.peer().stats.get()) {
    m->verification_backlog = static_cast<std::int64_t>(self->state.core->backlog());
    m->verifier_sessions = static_cast<std::int64_t>(self->state.core->sessions());
    if (std::holds_alternative<core::tick>(ev)) { // what walks every session, once a heartbeat only
      const auto now = now_us();
      std::map<std::string, metrics::verifier_row> rows;
      for (const auto& [key, v] : self->state.core->session_views())
        rows.emplace(key, metrics::verifier_row{v.credit, static_cast<double>(now - v.last_heard) / 1e6, v.in_flight});
      m->set_verifiers(std::move(rows), self->state.core->verdicts_given());
    }
  }
  // A dispute's referee re-runs one trace layer here: milliseconds, and only on a dispute.
  for (const auto& task : referee_tasks)
    step(self, self->state.referee->run(task));
}

std::optional<core::verification_event> decode(self_ptr self, const inbound& in) {
  const auto& m = in.msg;
  auto refuse = [&](const error& e) {
    self->state.io.send(in.from, in.identity, proto::make_error(e));
    return std::nullopt;
  };
  if (auto session = decode_session_command<core::verification_event>(in)) {
    if (!*session)
      return refuse(session->err());
    return std::move(session->value());
  }
  if (m.command == proto::cmd::verdict) {
    auto v = proto::parse_verdict(m);
    if (!v)
      return refuse(v.err());
    return core::node_verdict{in.identity, std::move(v.value())};
  }
  if (m.command == proto::cmd::activation) {
    auto a = proto::parse_activation(m);
    if (!a)
      return refuse(a.err());
    return core::node_activation{in.identity, std::move(a.value())};
  }
  return refuse(make_error(errc::unknown_command,
                           fmt::format("{} is not a verifier command (HELLO, READY, HEARTBEAT, VERDICT, ACTIVATION, DISCONNECT)",
                                       m.command)));
}

caf::behavior verifier_pool(self_ptr self, core::verification_core core, std::shared_ptr<const core::referee> referee,
                            std::shared_ptr<inbound_backlog> backlog) {
  self->state.core.emplace(std::move(core));
  self->state.referee = std::move(referee);
  self->state.backlog = std::move(backlog);
  return {
      [=](peers_atom, const peers& p) {
        self->state.io.set_peers(p);
        guarded(self, "verifier_pool", [&] { step(self, core::tick{}); });
      },
      [=](inbound_atom, inbound& in) {
        --self->state.backlog->pending;
        guarded(self, "verifier_pool", [&] {
          if (auto ev = decode(self, in))
            step(self, *ev);
        });
      },
      [=](handoff_atom, executed_jobs& jobs) {
        guarded(self, "verifier_pool", [&] {
          for (auto& j : jobs)
            step(self, std::move(j));
        });
      },
      [=](handoff_atom, admitted_verifiers& hellos) {
        guarded(self, "verifier_pool", [&] {
          for (auto& h : hellos)
            step(self, std::move(h));
        });
      },
      [=](handoff_atom, admin_actions& orders) {
        guarded(self, "verifier_pool", [&] {
          for (auto& o : orders)
            step(self, std::move(o));
        });
      },
      [=](committed_atom, records& recs, outcomes& outs) {
        self->state.io.confirmed(recs, outs);
        guarded(self, "verifier_pool", [&] { step(self, core::committed{std::move(recs), std::move(outs)}); });
      },
      [=](farewell_atom) {
        for (const auto& m : self->state.core->farewell())
          self->state.io.send(m.to, m.identity, m.msg);
        return true;
      },
      [=](tick_atom) {
        self->state.io.ticked(now_us());
        guarded(self, "verifier_pool", [&] { step(self, core::tick{}); });
      },
  };
}

} // namespace

caf::actor spawn_verifier_pool(caf::actor_system& sys, core::verification_core core,
                               std::shared_ptr<const core::referee> referee, std::shared_ptr<inbound_backlog> backlog) {
  return sys.spawn(verifier_pool, std::move(core), std::move(referee), std::move(backlog));
}

} // namespace haca::actors
