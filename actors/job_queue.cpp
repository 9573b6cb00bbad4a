// job_queue: admission (model, input, funds, duplicates, backpressure), durability before ACK,
// per-client fair queueing, deadlines and the one-result-per-job rule.
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "actors/coordinator.hpp"
#include "actors/gateway.hpp"
#include "scheduler/queue_policy.hpp"
#include "verify/hash.hpp"

namespace haca::actors {
namespace {

struct job_entry {
  db::job_record rec;
  std::string identity; // the client's ZeroMQ identity, for RESULT
  std::string state;    // QUEUED | ASSIGNED | EXECUTED
  std::int32_t attempt = 0;
};

struct job_queue_state {
  coordinator_config cfg;
  peers p;
  market::escrow_book escrow;
  scheduler::fair_queue queue{0};
  std::map<std::int64_t, job_entry> jobs;
  std::set<std::pair<std::string, std::string>> requests; // (client, request id) seen since start
  std::size_t persisting = 0;                             // SUBMITs waiting for the store
  static inline const char* name = "job_queue";
};

using self_ptr = caf::stateful_actor<job_queue_state>*;

void send_client(const std::string& identity, const proto::message& m) { gateway_send(port_kind::client, identity, m); }

void note_event(self_ptr self, std::int64_t job_id, const char* state, std::string detail, std::int32_t attempt) {
  self->send(self->state.p.store, note_atom::value,
             db::operation{db::record_events{{{job_id, state, std::move(detail), attempt, "", now_us()}}}});
}

// A job leaves the queue for good without being charged: its hold goes back to the client.
void finish_unpaid(self_ptr self, std::int64_t job_id, const char* state, const char* code, const std::string& reason) {
  auto& st = self->state;
  auto it = st.jobs.find(job_id);
  if (it == st.jobs.end())
    return;
  auto& job = it->second;
  st.escrow.release(job.rec.client_id, job.rec.max_price);
  note_event(self, job_id, state, reason, job.attempt);
  send_client(job.identity, proto::make_error(make_error(code, reason), job.rec.request_id, job_id));
  st.queue.remove(job_id);
  st.jobs.erase(it);
}

void on_submit(self_ptr self, const inbound& in) {
  auto& st = self->state;
  auto parsed = proto::parse_submit(in.msg);
  if (!parsed) {
    auto id = in.msg.header.value("request_id", std::string{});
    send_client(in.identity, proto::make_error(parsed.err(), in.msg.header.contains("request_id") &&
                                                                     in.msg.header["request_id"].is_string()
                                                                 ? id
                                                                 : std::string{}));
    return;
  }
  auto& s = parsed.value();
  auto refuse = [&](const char* code, std::string reason) {
    send_client(in.identity, proto::make_error(make_error(code, std::move(reason)), s.request_id));
  };
  auto model = st.cfg.model_input_dims.find(s.model);
  if (model == st.cfg.model_input_dims.end()) {
    refuse(errc::unknown_model, fmt::format("model {} is not known to this coordinator ({} models loaded)",
                                            s.model.substr(0, 12), st.cfg.model_input_dims.size()));
    return;
  }
  const auto& shape = s.input.shape;
  if (s.input.type != kernels::dtype::i8 || shape.size() != 2 || shape[1] != model->second || shape[0] < 1 ||
      shape[0] > st.cfg.max_rows) {
    refuse(errc::bad_input, fmt::format("model {} takes i8 [rows, {}] with 1 <= rows <= {}, got {} [{}]",
                                        s.model.substr(0, 12), model->second, st.cfg.max_rows,
                                        kernels::dtype_name(s.input.type), kernels::shape_string(shape)));
    return;
  }
  if (st.requests.count({s.client_id, s.request_id})) {
    refuse(errc::duplicate_request,
           fmt::format("client '{}' already submitted request id '{}'", s.client_id, s.request_id));
    return;
  }
  if (st.queue.size() + st.persisting >= st.cfg.max_queue) {
    refuse(errc::queue_full, fmt::format("{} jobs are waiting, the limit is {}; retry later",
                                         st.queue.size() + st.persisting, st.cfg.max_queue));
    return;
  }
  // A client id seen for the first time gets the faucet grant, but only with a job it can pay
  // for: a refused SUBMIT changes nothing.
  bool grant = !st.escrow.known(s.client_id) && st.cfg.faucet > 0;
  if (grant && s.max_price > st.cfg.faucet) {
    refuse(errc::insufficient_funds, fmt::format("client '{}' would have {} available, job max_price is {}",
                                                 s.client_id, st.cfg.faucet, s.max_price));
    return;
  }
  if (grant) {
    st.escrow.credit(s.client_id, st.cfg.faucet);
    self->send(st.p.store, note_atom::value, db::operation{db::fund_client{s.client_id, st.cfg.faucet}});
  }
  if (auto held = st.escrow.hold(s.client_id, s.max_price); !held) {
    refuse(errc::insufficient_funds, held.err().reason);
    return;
  }
  auto now = now_us();
  auto deadline_ms = s.deadline_ms > 0 ? s.deadline_ms : st.cfg.default_deadline_ms;
  db::job_record rec{s.client_id, s.request_id, s.model, s.tier, s.max_price, now + deadline_ms * 1000,
                     std::move(s.input), "", now};
  rec.input_hash = verify::sha256_hex(rec.input.data);
  st.requests.insert({rec.client_id, rec.request_id});
  ++st.persisting;
  auto identity = in.identity;
  self->request(st.p.store, store_timeout, db::operation{db::insert_job{rec}})
      .then(
          [=](store_reply& reply) mutable {
            auto& st = self->state;
            --st.persisting;
            if (!reply) {
              st.escrow.release(rec.client_id, rec.max_price);
              if (reply.err().code != errc::duplicate_request)
                st.requests.erase({rec.client_id, rec.request_id});
              send_client(identity, proto::make_error(reply.err(), rec.request_id));
              return;
            }
            auto job_id = std::get<std::int64_t>(reply.value());
            send_client(identity, proto::make_ack({rec.request_id, job_id}));
            st.queue.push(rec.client_id, job_id);
            st.jobs.emplace(job_id, job_entry{std::move(rec), identity, "QUEUED", 0});
            self->send(st.p.scheduler, ready_atom::value);
          },
          [=](caf::error& e) {
            auto& st = self->state;
            --st.persisting;
            st.escrow.release(rec.client_id, rec.max_price);
            st.requests.erase({rec.client_id, rec.request_id});
            send_client(identity, proto::make_error(make_error(errc::internal, "the job could not be stored: " +
                                                                                   self->system().render(e)),
                                                    rec.request_id));
          });
}

void on_status(self_ptr self, const inbound& in) {
  auto parsed = proto::parse_status_request(in.msg);
  if (!parsed) {
    send_client(in.identity, proto::make_error(parsed.err()));
    return;
  }
  auto job_id = parsed->job_id;
  auto identity = in.identity;
  self->request(self->state.p.store, store_timeout, db::operation{db::read_status{job_id}})
      .then(
          [=](store_reply& reply) {
            if (!reply)
              send_client(identity, proto::make_error(make_error(errc::unknown_job,
                                                                 fmt::format("no job with id {}", job_id)),
                                                      "", job_id));
            else
              send_client(identity, proto::make_status_reply(std::get<proto::status_reply>(reply.value())));
          },
          [=](caf::error& e) {
            send_client(identity, proto::make_error(make_error(errc::internal, self->system().render(e)), "", job_id));
          });
}

void expire_overdue(self_ptr self) {
  auto now = now_us();
  std::vector<std::int64_t> overdue;
  for (const auto& [id, job] : self->state.jobs)
    if (job.state == "QUEUED" && job.rec.deadline_us && job.rec.deadline_us < now)
      overdue.push_back(id);
  for (auto id : overdue)
    finish_unpaid(self, id, "EXPIRED", errc::expired, "the deadline passed before a provider could run the job");
}

caf::behavior job_queue(self_ptr self, coordinator_config cfg) {
  self->state.cfg = std::move(cfg);
  self->state.queue = scheduler::fair_queue{self->state.cfg.max_queue};
  for (const auto& [client, balance] : self->state.cfg.ledger_head.client_balances)
    self->state.escrow.credit(client, balance);
  self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
  return {
      [=](peers_atom, const peers& p) { self->state.p = p; },
      [=](inbound_atom, const inbound& in) {
        if (in.msg.command == proto::cmd::submit)
          on_submit(self, in);
        else if (in.msg.command == proto::cmd::status)
          on_status(self, in);
        else
          send_client(in.identity, proto::make_error(make_error(
                                       errc::unknown_command,
                                       fmt::format("{} is not a client command (SUBMIT, STATUS)", in.msg.command))));
      },
      // The scheduler has `credit` free slots; prices maps each model a provider with credit has
      // to the cheapest such price, so only jobs that can be placed leave the queue.
      [=](pull_atom, int credit, const std::map<std::string, std::int64_t>& prices) {
        auto& st = self->state;
        auto ids = st.queue.take(static_cast<std::size_t>(credit), [&](std::int64_t id) {
          const auto& rec = st.jobs.at(id).rec;
          auto price = prices.find(rec.model);
          return price != prices.end() && price->second <= rec.max_price;
        });
        std::vector<dispatch_job> out;
        for (auto id : ids) {
          auto& job = st.jobs.at(id);
          job.state = "ASSIGNED";
          out.push_back({{id, job.attempt, job.rec.model, 0, job.rec.input}, job.rec.input_hash, job.rec.max_price});
        }
        return out;
      },
      [=](unplaced_atom, const dispatch_job& d) {
        auto& st = self->state;
        auto it = st.jobs.find(d.order.job_id);
        if (it != st.jobs.end() && it->second.state == "ASSIGNED") {
          it->second.state = "QUEUED";
          st.queue.push_front(it->second.rec.client_id, d.order.job_id);
        }
      },
      [=](requeue_atom, std::int64_t job_id, std::int32_t attempt, const std::string& reason) {
        auto& st = self->state;
        auto it = st.jobs.find(job_id);
        if (it == st.jobs.end() || it->second.state != "ASSIGNED" || it->second.attempt != attempt)
          return; // stale: that attempt already ended
        auto& job = it->second;
        if (++job.attempt >= st.cfg.max_attempts) {
          finish_unpaid(self, job_id, "FAILED", errc::failed,
                        fmt::format("gave up after {} attempts; last: {}", job.attempt, reason));
          return;
        }
        job.state = "QUEUED";
        note_event(self, job_id, "QUEUED", "re-queued: " + reason, job.attempt);
        st.queue.push_front(job.rec.client_id, job_id);
        self->send(st.p.scheduler, ready_atom::value);
      },
      [=](executed_atom, executed_job& ex) {
        auto& st = self->state;
        auto& done = ex.done;
        auto it = st.jobs.find(done.job_id);
        if (it == st.jobs.end() || it->second.state != "ASSIGNED" || it->second.attempt != done.attempt) {
          spdlog::warn("job_queue: ignored a second result for job {} attempt {}", done.job_id, done.attempt);
          return; // exactly one result per job
        }
        auto& job = it->second;
        job.state = "EXECUTED";
        send_client(job.identity, proto::make_result({job.rec.request_id, done.job_id, done.classes, done.output,
                                                      done.receipt}));
        self->send(st.p.store, note_atom::value, db::operation{db::save_receipt{done.job_id, done.receipt}});
        note_event(self, done.job_id, "EXECUTED", "", job.attempt);
        self->send(st.p.verifier_pool, executed_atom::value,
                   to_verify{{done.job_id, job.rec.client_id, done.receipt, ""}, job.rec.tier,
                             std::move(job.rec.input)});
        job.rec.input = {};
      },
      [=](settled_atom, const std::vector<final_job>& items) {
        auto& st = self->state;
        for (const auto& f : items) {
          auto it = st.jobs.find(f.job_id);
          if (it == st.jobs.end())
            continue;
          if (f.verdict == "mismatch")
            st.escrow.release(f.client_id, it->second.rec.max_price);
          else
            st.escrow.capture(f.client_id, it->second.rec.max_price, f.receipt.price);
          st.jobs.erase(it);
        }
      },
      [=](tick_atom) {
        expire_overdue(self);
        self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_job_queue(caf::actor_system& sys, const coordinator_config& cfg) { return sys.spawn(job_queue, cfg); }

} // namespace haca::actors
