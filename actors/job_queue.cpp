// job_queue: the execution core's actor. Decodes client and provider messages into events,
// runs core::execution_core::step, and carries out the effects (actors/core_adapter.hpp).
#include <fmt/format.h>

#include "actors/coordinator.hpp"
#include "actors/core_adapter.hpp"
#include "core/execution.hpp"

namespace haca::actors {
namespace {

struct job_queue_state {
  std::optional<core::execution_core> core;
  core_adapter io{"job_queue"};
  std::shared_ptr<inbound_backlog> client_backlog, node_backlog;
  std::optional<caf::response_promise> drained; // SIGTERM: answered once nothing is owed
  static inline const char* name = "job_queue";
};

using self_ptr = caf::stateful_actor<job_queue_state>*;

// The execution core's gauges; its tables (per client, per provider) on each tick; the
// latency of each RESULT sent.
void publish(self_ptr self, const core::execution_event& ev, const core::effects& fx, std::int64_t now) {
  auto& st = self->state;
  auto* m = st.io.peer().stats.get();
  if (!m)
    return;
  for (const auto& out : fx.messages)
    if (out.msg.command == proto::cmd::result)
      if (auto id = out.msg.header.find("job_id"); id != out.msg.header.end() && id->is_number_integer())
        if (auto j = st.core->job(id->get<std::int64_t>()))
          m->result_latency(static_cast<double>(now - j->submitted_us) / 1e6);
  m->jobs_waiting = static_cast<std::int64_t>(st.core->waiting());
  m->jobs_open = static_cast<std::int64_t>(st.core->open_jobs());
  m->provider_sessions = static_cast<std::int64_t>(st.core->sessions());
  if (!std::holds_alternative<core::tick>(ev))
    return; // what costs a walk over every node or client, once a heartbeat only
  m->staked_total = st.core->stakes().total_staked();
  std::map<std::string, std::int64_t> queues;
  for (const auto& [client, n] : st.core->waiting_by_client())
    if (n > 0)
      queues.emplace(client, static_cast<std::int64_t>(n));
  m->set_queues(std::move(queues));
  std::map<std::string, metrics::provider_row> rows;
  for (const auto& [key, s] : st.core->session_views())
    rows.emplace(key, metrics::provider_row{s.credit, static_cast<double>(now - s.last_heard) / 1e6});
  m->set_providers(std::move(rows));
  m->set_track_records(st.core->track_records());
}

void step(self_ptr self, const core::execution_event& ev) {
  auto& st = self->state;
  const auto now = now_us();
  auto fx = st.core->step(ev, now);
  st.io.carry_out(self, fx);
  publish(self, ev, fx, now);
  if (st.drained && st.core->drained() && st.io.unconfirmed() == 0) {
    st.drained->deliver(true);
    st.drained.reset();
  }
}

// A message that does not make an event is answered here and changes nothing.
std::optional<core::execution_event> decode(self_ptr self, const inbound& in) {
  const auto& m = in.msg;
  auto refuse = [&](const error& e, std::int64_t job_id = 0) {
    self->state.io.send(in.from, in.identity, proto::make_error(e, proto::request_id_of(m), job_id));
    return std::nullopt;
  };
  if (in.from == core::port::client) {
    if (m.command == proto::cmd::submit) {
      auto s = proto::parse_submit(m);
      if (!s)
        return refuse(s.err());
      return core::client_submit{in.identity, in.peer_key, std::move(s.value())};
    }
    if (m.command == proto::cmd::deposit) {
      auto d = proto::parse_deposit(m);
      if (!d)
        return refuse(d.err());
      return core::client_deposit{in.identity, in.peer_key, std::move(d.value())};
    }
    if (m.command == proto::cmd::status || m.command == proto::cmd::receipt || m.command == proto::cmd::proof) {
      auto q = proto::parse_job_query(m);
      if (!q)
        return refuse(q.err());
      return core::client_query{in.identity, in.peer_key, q->job_id, q->command};
    }
    return refuse(make_error(errc::unknown_command,
                             fmt::format("{} is not a client command (SUBMIT, STATUS, RECEIPT, PROOF, DEPOSIT)", m.command)));
  }
  if (auto session = decode_session_command<core::execution_event>(in)) {
    if (!*session)
      return refuse(session->err());
    return std::move(session->value());
  }
  if (m.command == proto::cmd::done) {
    auto d = proto::parse_done(m);
    if (!d)
      return refuse(d.err(), m.header.is_object() && m.header.contains("job_id") && m.header["job_id"].is_number_integer()
                                 ? m.header["job_id"].get<std::int64_t>()
                                 : 0);
    return core::node_done{in.identity, std::move(d.value())};
  }
  if (m.command == proto::cmd::fail) {
    auto f = proto::parse_fail(m);
    if (!f)
      return refuse(f.err());
    return core::node_fail{in.identity, std::move(f.value())};
  }
  return refuse(make_error(errc::unknown_command,
                           fmt::format("{} is not a provider command (HELLO, READY, HEARTBEAT, DONE, FAIL, "
                                       "DISCONNECT)",
                                       m.command)));
}

caf::behavior job_queue(self_ptr self, core::execution_core core, std::shared_ptr<inbound_backlog> client_backlog,
                        std::shared_ptr<inbound_backlog> node_backlog) {
  auto& st = self->state;
  st.core.emplace(std::move(core));
  st.client_backlog = std::move(client_backlog);
  st.node_backlog = std::move(node_backlog);
  return {
      [=](peers_atom, const peers& p) {
        self->state.io.set_peers(p);
        guarded(self, "job_queue", [&] { step(self, core::tick{}); }); // arms the first timers
      },
      [=](inbound_atom, inbound& in) {
        --(in.from == core::port::client ? self->state.client_backlog : self->state.node_backlog)->pending;
        guarded(self, "job_queue", [&] {
          if (auto ev = decode(self, in))
            step(self, *ev);
        });
      },
      [=](committed_atom, records& recs, outcomes& outs) {
        self->state.io.confirmed(recs, outs);
        guarded(self, "job_queue", [&] { step(self, core::committed{std::move(recs), std::move(outs)}); });
      },
      [=](core::request_found& found) {
        guarded(self, "job_queue", [&] { step(self, std::move(found)); });
      },
      [=](handoff_atom, settled_jobs& jobs) {
        guarded(self, "job_queue", [&] { step(self, core::jobs_settled{std::move(jobs)}); });
      },
      [=](handoff_atom, left_nodes& nodes) {
        guarded(self, "job_queue", [&] {
          for (auto& n : nodes)
            step(self, std::move(n));
        });
      },
      [=](admin_atom, core::admin_order& order) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        order.reply_to = self->state.io.await_answer(rp);
        guarded(self, "job_queue", [&] { step(self, std::move(order)); });
        return rp;
      },
      [=](tick_atom) {
        self->state.io.ticked(now_us());
        guarded(self, "job_queue", [&] { step(self, core::tick{}); });
      },
      [=](farewell_atom) {
        for (const auto& m : self->state.core->farewell())
          self->state.io.send(m.to, m.identity, m.msg);
        return true;
      },
      [=](drain_atom) -> caf::result<bool> {
        auto rp = self->make_response_promise<bool>();
        self->state.drained = rp;
        guarded(self, "job_queue", [&] { step(self, core::drain{}); });
        return rp;
      },
  };
}

} // namespace

caf::actor spawn_job_queue(caf::actor_system& sys, core::execution_core core,
                           std::shared_ptr<inbound_backlog> client_backlog,
                           std::shared_ptr<inbound_backlog> node_backlog) {
  return sys.spawn(job_queue, std::move(core), std::move(client_backlog), std::move(node_backlog));
}

} // namespace haca::actors
