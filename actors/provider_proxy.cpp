// provider_proxy: the coordinator's side of one provider session: liveness (heartbeats both
// ways), credit, jobs in flight, and the checks on every receipt before a result counts.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"
#include "actors/gateway.hpp"
#include "kernels/ops.hpp"
#include "verify/hash.hpp"

namespace haca::actors {
namespace {

struct provider_proxy_state {
  peers p;
  std::string identity;
  proto::capabilities caps;
  int heartbeat_ms = 500;
  int credit = 0;
  std::int64_t last_heard_us = 0;
  std::map<std::int64_t, dispatch_job> in_flight;
  static inline const char* name = "provider_proxy";
};

using self_ptr = caf::stateful_actor<provider_proxy_state>*;

void send_node(self_ptr self, const proto::message& m) { gateway_send(port_kind::node, self->state.identity, m); }

void report_credit(self_ptr self) {
  self->send(self->state.p.scheduler, credit_atom::value, self->state.caps.public_key, self->state.credit);
}

// Leaves: the scheduler re-queues whatever this provider held.
void lose(self_ptr self, const std::string& why) {
  std::vector<dispatch_job> jobs;
  for (auto& [id, job] : self->state.in_flight)
    jobs.push_back(std::move(job));
  self->state.in_flight.clear();
  self->send(self->state.p.scheduler, lost_atom::value, self->state.caps.public_key, jobs, why);
  self->quit();
}

// A receipt counts only if it is signed by this provider and describes exactly the job sent.
status check_done(const provider_proxy_state& st, const proto::job_done& done, const dispatch_job& job) {
  const auto& r = done.receipt;
  if (!verify::verify_receipt(r))
    return make_error(errc::bad_signature,
                      fmt::format("receipt for job {} has a signature that does not verify", done.job_id));
  auto mismatch = [&](const char* field, const std::string& got, const std::string& want) {
    return make_error(errc::bad_receipt, fmt::format("receipt for job {}: {} is {}, expected {}", done.job_id, field,
                                                     got.substr(0, 16), want.substr(0, 16)));
  };
  if (r.provider_key != st.caps.public_key)
    return mismatch("provider_key", r.provider_key, st.caps.public_key);
  if (r.job_id != done.job_id || r.attempt != job.order.attempt)
    return mismatch("job/attempt", fmt::format("{}/{}", r.job_id, r.attempt),
                    fmt::format("{}/{}", done.job_id, job.order.attempt));
  if (r.model_hash != job.order.model)
    return mismatch("model_hash", r.model_hash, job.order.model);
  if (r.input_hash != job.input_hash)
    return mismatch("input_hash", r.input_hash, job.input_hash);
  if (r.price != job.order.price)
    return mismatch("price", std::to_string(r.price), std::to_string(job.order.price));
  if (auto h = verify::sha256_hex(done.output.data); r.output_hash != h)
    return mismatch("output_hash", r.output_hash, h);
  // The receipt signs the output, not `classes`: they must be the output's arg-max per row,
  // or the client would get a prediction nobody signed or verified.
  const auto& out = done.output;
  const auto rows = job.order.input.shape.empty() ? 0 : job.order.input.shape[0];
  if (out.type != kernels::dtype::i8 || out.shape.size() != 2 || out.shape[0] != rows || out.shape[1] < 1)
    return make_error(errc::bad_receipt, fmt::format("DONE for job {}: output must be i8 [{}, classes], got {} [{}]",
                                                     done.job_id, rows, kernels::dtype_name(out.type),
                                                     kernels::shape_string(out.shape)));
  std::vector<std::int32_t> classes(static_cast<std::size_t>(rows));
  kernels::argmax_rows(out.i8(), static_cast<int>(rows), static_cast<int>(out.shape[1]), classes.data());
  if (done.classes != classes)
    return make_error(errc::bad_receipt,
                      fmt::format("DONE for job {}: classes [{}] are not the arg-max of the output rows, [{}]",
                                  done.job_id, fmt::join(done.classes, ","), fmt::join(classes, ",")));
  return ok_status();
}

void on_message(self_ptr self, const inbound& in) {
  auto& st = self->state;
  st.last_heard_us = now_us();
  const auto& cmd = in.msg.command;
  if (cmd == proto::cmd::heartbeat) {
    return;
  } else if (cmd == proto::cmd::ready) {
    auto n = proto::parse_ready(in.msg);
    if (!n) {
      send_node(self, proto::make_error(n.err()));
      return;
    }
    st.credit += n.value();
    report_credit(self);
  } else if (cmd == proto::cmd::done) {
    auto done = proto::parse_done(in.msg);
    if (!done) {
      send_node(self, proto::make_error(done.err()));
      return;
    }
    auto it = st.in_flight.find(done->job_id);
    if (it == st.in_flight.end() || it->second.order.attempt != done->attempt) {
      send_node(self, proto::make_error(make_error(errc::unknown_job,
                                                   fmt::format("job {} attempt {} is not assigned to you",
                                                               done->job_id, done->attempt)),
                                        "", done->job_id));
      return;
    }
    if (auto ok = check_done(st, done.value(), it->second); !ok) {
      spdlog::warn("provider_proxy {}: rejected a receipt: {}", st.caps.name, ok.err().reason);
      send_node(self, proto::make_error(ok.err(), "", done->job_id));
      return; // the job stays in flight: a valid DONE or the provider's loss ends it
    }
    st.in_flight.erase(it);
    ++st.credit;
    self->send(st.p.job_queue, executed_atom::value, executed_job{std::move(done.value())});
    report_credit(self);
  } else if (cmd == proto::cmd::fail) {
    auto f = proto::parse_fail(in.msg);
    if (!f) {
      send_node(self, proto::make_error(f.err()));
      return;
    }
    auto it = st.in_flight.find(f->job_id);
    if (it == st.in_flight.end() || it->second.order.attempt != f->attempt)
      return;
    st.in_flight.erase(it);
    ++st.credit;
    self->send(st.p.job_queue, requeue_atom::value, f->job_id, f->attempt,
               fmt::format("provider {} failed it: {} ({})", st.caps.name, f->reason, f->code));
    report_credit(self);
  } else if (cmd == proto::cmd::disconnect) {
    lose(self, "it disconnected");
  } else {
    send_node(self, proto::make_error(make_error(errc::unknown_command,
                                                 fmt::format("{} is not a provider command here", cmd))));
  }
}

caf::behavior provider_proxy(self_ptr self, peers p, std::string identity, proto::capabilities caps, int heartbeat_ms) {
  auto& st = self->state;
  st.p = std::move(p);
  st.identity = std::move(identity);
  st.caps = std::move(caps);
  st.heartbeat_ms = heartbeat_ms;
  st.last_heard_us = now_us();
  send_node(self, proto::make_welcome({heartbeat_ms, ""}));
  self->delayed_send(self, std::chrono::milliseconds(heartbeat_ms), tick_atom::value);
  // Replaced by a reconnect of the same provider: hand back what it held.
  self->set_exit_handler([=](caf::exit_msg&) { lose(self, "replaced by a new session"); });
  return {
      [=](inbound_atom, const inbound& in) { on_message(self, in); },
      [=](assign_atom, dispatch_job& job) {
        auto& st = self->state;
        --st.credit;
        send_node(self, proto::make_job(job.order));
        st.in_flight.emplace(job.order.job_id, std::move(job));
      },
      [=](tick_atom) {
        auto& st = self->state;
        auto silent_ms = (now_us() - st.last_heard_us) / 1000;
        if (silent_ms > static_cast<std::int64_t>(proto::heartbeat_liveness) * st.heartbeat_ms) {
          lose(self, fmt::format("no message for {} ms", silent_ms));
          return;
        }
        send_node(self, proto::make_heartbeat());
        self->delayed_send(self, std::chrono::milliseconds(st.heartbeat_ms), tick_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_provider_proxy(caf::actor_system& sys, const peers& p, std::string identity, proto::capabilities caps,
                                int heartbeat_ms) {
  return sys.spawn(provider_proxy, p, std::move(identity), std::move(caps), heartbeat_ms);
}

} // namespace haca::actors
