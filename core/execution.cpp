#include "core/execution.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "kernels/ops.hpp"
#include "scheduler/match.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"

namespace haca::core {
namespace {

std::string short_key(const std::string& key) { return key.substr(0, 12); }

outbound to_client(const std::string& identity, proto::message m) { return {port::client, identity, std::move(m)}; }
outbound to_node(const std::string& identity, proto::message m) { return {port::node, identity, std::move(m)}; }

// A receipt counts only if it is signed by the provider the job was assigned to and describes
// exactly the job sent: model, input, price, attempt and the output that came with it.
status check_done(const proto::job_done& done, const job_spec& spec, const model_shape& model,
                  const std::string& provider_key, micros price, std::int32_t attempt) {
  const auto& r = done.receipt;
  auto mismatch = [&](const char* field, const std::string& got, const std::string& want) {
    return make_error(errc::bad_receipt, fmt::format("receipt for job {}: {} is {}, expected {}", done.job_id, field,
                                                     got.substr(0, 16), want.substr(0, 16)));
  };
  if (r.provider_key != provider_key)
    return mismatch("provider_key", r.provider_key, provider_key);
  if (r.job_id != done.job_id || r.attempt != attempt)
    return mismatch("job/attempt", fmt::format("{}/{}", r.job_id, r.attempt), fmt::format("{}/{}", done.job_id, attempt));
  if (r.model_hash != spec.model)
    return mismatch("model_hash", r.model_hash, spec.model);
  if (r.input_hash != spec.input_hash)
    return mismatch("input_hash", r.input_hash, spec.input_hash);
  if (r.price != price)
    return mismatch("price", std::to_string(r.price), std::to_string(price));
  if (auto h = verify::sha256_hex(done.output.data); r.output_hash != h)
    return mismatch("output_hash", r.output_hash, h);
  // The layer hashes it reveals are the ones its signed trace root commits (for bisection).
  if (done.layer_hashes.empty() || verify::merkle_root(done.layer_hashes) != r.trace_root)
    return make_error(errc::bad_receipt, fmt::format("DONE for job {}: the Merkle root of its {} layer_hashes is not "
                                                     "the receipt's trace_root",
                                                     done.job_id, done.layer_hashes.size()));
  // The receipt signs the output, not `classes`: they must be the output's arg-max per row, or
  // the client would get a prediction nobody signed or verified.
  const auto& out = done.output;
  const auto rows = spec.input.shape.empty() ? 0 : spec.input.shape[0];
  if (out.type != kernels::dtype::i8 || out.shape.size() != 2 || out.shape[0] != rows ||
      out.shape[1] != model.output_dim)
    return make_error(errc::bad_receipt, fmt::format("DONE for job {}: model {} gives i8 [{}, {}], got {} [{}]",
                                                     done.job_id, spec.model.substr(0, 12), rows, model.output_dim,
                                                     kernels::dtype_name(out.type), kernels::shape_string(out.shape)));
  std::vector<std::int32_t> classes(static_cast<std::size_t>(rows));
  kernels::argmax_rows(out.i8(), static_cast<int>(rows), static_cast<int>(out.shape[1]), classes.data());
  if (done.classes != classes)
    return make_error(errc::bad_receipt,
                      fmt::format("DONE for job {}: classes [{}] are not the arg-max of the output rows, [{}]",
                                  done.job_id, fmt::join(done.classes, ","), fmt::join(classes, ",")));
  // Last, because it is the expensive check (~37 us).
  if (!verify::verify_receipt(r))
    return make_error(errc::bad_signature,
                      fmt::format("receipt for job {} has a signature that does not verify", done.job_id));
  return ok_status();
}

} // namespace

execution_core::execution_core(execution_config cfg) : cfg_(std::move(cfg)), stake_(cfg_.stake) {}

execution_core execution_core::recover(execution_config cfg, const snapshot& s, time_us now) {
  execution_core c(std::move(cfg));
  c.verdicts_ = s.provider_verdicts;
  c.next_job_id_ = s.next_job_id;
  c.funded_ = s.funded;
  for (const auto& [ref, d] : s.deposits)
    c.deposits_[ref] = {d.first, d.second, ref.substr(ref.find(':') + 1), true, {}};
  for (const auto& [client, balance] : s.client_balances)
    c.escrow_.credit(client, balance);
  c.stake_.restore(s, now);
  c.unslashed_ = s.unslashed; // slashed at the first tick
  c.reruns_ = s.reruns;       // re-run at the first tick
  c.banned_ = s.banned;
  c.drained_ = s.drained;
  c.last_beat_ = now;
  const time_us liveness = static_cast<time_us>(proto::heartbeat_liveness) * c.cfg_.heartbeat_ms * 1000;
  for (const auto& stored : s.open_jobs) {
    if (is_final(stored.state) || stored.state == job_state::submitted)
      continue;
    job_entry j;
    j.spec = stored.spec;
    j.state = j.durable = stored.state;
    j.attempt = stored.attempt;
    j.seq = stored.seq;
    j.inserted = true;
    j.result = stored.result;
    j.avoid_provider = stored.avoid_provider;
    const auto id = j.spec.id;
    // Holds are not stored: they are the max_price of every job not yet settled or final.
    c.escrow_.restore_hold(j.spec.client_id, j.spec.max_price);
    c.by_request_[{j.spec.client_id, j.spec.request_id}] = id;
    if (stored.state == job_state::queued || stored.state == job_state::assigned) {
      j.waiting = true;
      ++c.waiting_;
      ++c.client_waiting_[j.spec.client_id];
      if (j.spec.deadline_us)
        c.deadlines_.insert({j.spec.deadline_us, id});
      if (stored.state == job_state::queued) {
        c.queue_.push(j.spec.client_id, id);
      } else {
        // Its provider may come back and deliver within the liveness timeout; if not, it runs again.
        j.provider_key = stored.provider_key;
        j.provider_operator = stored.provider_operator;
        j.price = stored.price;
        j.timeout_at = now + liveness;
        c.timeouts_.insert({j.timeout_at, id});
        c.recovered_by_key_[j.provider_key].insert(id);
      }
    } else {
      j.spec.input = {}; // executed: the verification core holds the input now
    }
    c.jobs_.emplace(id, std::move(j));
  }
  return c;
}

effects execution_core::step(const execution_event& ev, time_us now) {
  effects out;
  std::visit([&](const auto& e) { on(e, now, out); }, ev);
  out.wake_at_us = next_wake();
  return out;
}

std::optional<execution_core::job_view> execution_core::job(std::int64_t id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end())
    return std::nullopt;
  return job_view{it->second.state, it->second.durable, it->second.attempt, it->second.provider_key,
                  it->second.spec.submitted_us};
}

std::map<std::string, execution_core::session_view> execution_core::session_views() const {
  std::map<std::string, session_view> out;
  for (const auto& [key, s] : sessions_)
    out.emplace(key, session_view{s.credit, s.last_heard});
  return out;
}

bool execution_core::drained() const {
  if (!draining_)
    return false;
  for (const auto& [id, j] : jobs_)
    if (j.state == job_state::assigned || j.state == job_state::submitted || (j.state != j.durable))
      return false;
  return true;
}

std::vector<outbound> execution_core::farewell() const {
  std::vector<outbound> out;
  for (const auto& [key, s] : sessions_)
    out.push_back(to_node(s.identity, proto::make_disconnect("the coordinator is shutting down")));
  return out;
}

execution_core::session* execution_core::session_of(const std::string& identity) {
  auto k = key_of_.find(identity);
  if (k == key_of_.end())
    return nullptr;
  auto s = sessions_.find(k->second);
  return s == sessions_.end() ? nullptr : &s->second;
}

// ---- clients ----

void execution_core::on(const client_submit& e, time_us now, effects& out) {
  const auto& r = e.req;
  auto refuse = [&](const char* code, std::string reason) {
    out.messages.push_back(to_client(e.identity, proto::make_error(make_error(code, std::move(reason)), r.request_id)));
  };
  // The account is the key the connection proved; a SUBMIT may name it, never another one.
  const std::string& client = e.account;
  if (client.empty() || (!r.client_id.empty() && r.client_id != client)) {
    refuse(errc::forbidden, client.empty() ? "this connection proved no key (CurveZMQ), so it has no account"
                                           : fmt::format("client_id '{}' is not this connection's account {} (the "
                                                         "CURVE public key it connected with)",
                                                         r.client_id, client));
    return;
  }
  // A request id this core still holds: the same job, whatever the new SUBMIT says. Its
  // reply identity moves to the sender (a client that reconnected has a new one).
  if (auto known = by_request_.find({client, r.request_id}); known != by_request_.end()) {
    auto& j = jobs_.at(known->second);
    j.reply_to = e.identity;
    if (j.inserted)
      reply_duplicate(e.identity, r.request_id, j, out);
    return; // not stored yet: its ACK goes to the new identity when the insert commits
  }
  if (draining_) {
    refuse(errc::unavailable, "the coordinator is shutting down; resend this request after it restarts");
    return;
  }
  auto model = cfg_.models.find(r.model);
  if (model == cfg_.models.end()) {
    refuse(errc::unknown_model, fmt::format("model {} is not known to this coordinator ({} models loaded)",
                                            r.model.substr(0, 12), cfg_.models.size()));
    return;
  }
  const auto& shape = r.input.shape;
  if (r.input.type != kernels::dtype::i8 || shape.size() != 2 || shape[1] != model->second.input_dim || shape[0] < 1 ||
      shape[0] > cfg_.max_rows) {
    refuse(errc::bad_input, fmt::format("model {} takes i8 [rows, {}] with 1 <= rows <= {}, got {} [{}]",
                                        r.model.substr(0, 12), model->second.input_dim, cfg_.max_rows,
                                        kernels::dtype_name(r.input.type), kernels::shape_string(shape)));
    return;
  }
  // A final refusal (no funds) could be wrong for the resend of a job this core no longer
  // holds: Postgres is asked first, within limits. (queue_full is not final: the client
  // resends later and gets the right answer then, so a flood costs no reads.)
  auto refuse_unless_stored = [&](const char* code, std::string reason) {
    if (lookups_in_flight_ >= cfg_.max_lookups)
      return refuse(code, std::move(reason));
    ++lookups_in_flight_;
    ++lookups_[{client, r.request_id}].in_flight;
    out.request_lookups.push_back({e.identity, client, r.request_id, make_error(code, std::move(reason))});
  };
  // "rerun:<job id>" is the coordinator's: a SUBMIT may only resend it (to fetch the re-run's replies).
  if (r.request_id.rfind(proto::rerun_prefix, 0) == 0) {
    refuse_unless_stored(errc::bad_input, fmt::format("request ids that start with '{}' name the coordinator's "
                                                      "re-runs of disputed jobs, and '{}' is not one of yours",
                                                      proto::rerun_prefix, r.request_id));
    return;
  }
  const auto waiting_of_client = client_waiting_.find(client);
  const std::size_t client_waiting = waiting_of_client == client_waiting_.end() ? 0 : waiting_of_client->second;
  if (waiting_ >= cfg_.max_waiting || client_waiting >= cfg_.max_client_waiting || jobs_.size() >= cfg_.max_open) {
    refuse(errc::queue_full, fmt::format("{} jobs are waiting ({} of this client); the limits are {} and {} per "
                                         "client; retry later",
                                         waiting_, client_waiting, cfg_.max_waiting, cfg_.max_client_waiting));
    return;
  }
  // The faucet funds a client id it never funded, but only with a job it can pay for: a
  // refused SUBMIT changes nothing.
  const bool grant = cfg_.faucet > 0 && !funded_.count(client);
  const micros available = escrow_.available(client) + (grant ? cfg_.faucet : 0);
  if (available < r.max_price) {
    refuse_unless_stored(errc::insufficient_funds,
           fmt::format("client '{}' has {} micro-units available, the job's max_price is {} (fund the account or "
                       "lower max_price)",
                       client, available, r.max_price));
    return;
  }
  if (grant) {
    funded_.insert(client);
    book(transfer{market::funding_postings(market::client_account(client), cfg_.faucet, "faucet"), "faucet:" + client,
                  0, now},
         out);
  }
  escrow_.hold(client, r.max_price);
  job_spec spec;
  spec.client_id = client;
  spec.request_id = r.request_id;
  spec.model = r.model;
  spec.tier = r.tier;
  spec.max_price = r.max_price;
  spec.deadline_us = now + (r.deadline_ms > 0 ? r.deadline_ms : cfg_.default_deadline_ms) * 1000;
  spec.input = r.input;
  enqueue(std::move(spec), e.identity, now, out);
}

// A job admitted (its hold taken): stored, queued, and dispatched when a provider can take it.
void execution_core::enqueue(job_spec spec, const std::string& reply_to, time_us now, effects& out,
                             std::string avoid_provider) {
  job_entry j;
  spec.id = next_job_id_++;
  spec.input_hash = verify::sha256_hex(spec.input.data);
  spec.submitted_us = now;
  j.spec = std::move(spec);
  j.reply_to = reply_to;
  j.avoid_provider = std::move(avoid_provider);
  j.waiting = true;
  j.seq = 1; // the insert's events are SUBMITTED (0) and QUEUED (1)
  const auto id = j.spec.id;
  const auto& client = j.spec.client_id;
  out.records.push_back(job_insert{j.spec});
  ++waiting_;
  ++client_waiting_[client];
  by_request_[{client, j.spec.request_id}] = id;
  if (auto l = lookups_.find({client, j.spec.request_id}); l != lookups_.end())
    l->second.stale = true;
  deadlines_.insert({j.spec.deadline_us, id});
  queue_.push(client, id);
  jobs_.emplace(id, std::move(j));
  dispatch(now, out);
}

// A job whose provider lost a referee's ruling runs again for its client, as a new job with the
// request id "rerun:<job id>" on another provider, paid for as any job (the disputed one was
// not). It needs the client's funds for max_price, like a SUBMIT; without them there is no
// re-run (the NOTICE says so). The request id makes it idempotent: one re-run per job.
std::string execution_core::rerun(const job_spec& parent, kernels::tensor input, const std::string& reply_to,
                                  const std::string& avoid_provider, time_us now, effects& out) {
  const auto request_id = proto::rerun_prefix + std::to_string(parent.id);
  if (by_request_.count({parent.client_id, request_id}))
    return request_id; // made before
  if (input.data.empty())
    return {};
  if (draining_ || !escrow_.hold(parent.client_id, parent.max_price).ok()) {
    out.notes.push_back(fmt::format("job {}: no re-run ({})", parent.id,
                                    draining_ ? "draining" : "the client cannot cover max_price"));
    return {};
  }
  job_spec spec;
  spec.client_id = parent.client_id;
  spec.request_id = request_id;
  spec.model = parent.model;
  spec.tier = "full"; // a job that was cheated on once is always verified: another cheat is caught too
  spec.max_price = parent.max_price;
  const time_us allowed = parent.deadline_us - parent.submitted_us; // the same time the client gave the job
  spec.deadline_us = now + (allowed > 0 ? allowed : cfg_.default_deadline_ms * 1000);
  spec.input = std::move(input);
  out.notes.push_back(fmt::format("job {}: re-run as request {} (its provider lost the ruling)", parent.id, request_id));
  enqueue(std::move(spec), reply_to, now, out, avoid_provider);
  return request_id;
}

void execution_core::on(const client_query& e, time_us, effects& out) {
  // Answered from Postgres by a reader (what is committed is what may be told), never
  // through the write queue; the reader answers only the job's own account.
  out.lookups.push_back({e.identity, e.account, e.job_id, e.command});
}

// A deposit's reply: the account's key, which account it was, and its balance now.
static proto::message deposited(const std::string& request_id, const std::string& account, micros amount, micros balance,
                         bool repeated) {
  const auto node = market::owner_of(account, "provider:");
  return proto::make_deposited({request_id, node.empty() ? market::owner_of(account, "client:") : node, amount, balance,
                                repeated, node.empty() ? "client" : "node"});
}

micros execution_core::balance_of(const std::string& account) const {
  if (auto node = market::owner_of(account, "provider:"); !node.empty())
    return stake_.balance(node);
  return escrow_.balance(market::owner_of(account, "client:"));
}

void execution_core::on(const client_deposit& e, time_us now, effects& out) {
  const auto& d = e.req;
  if (cfg_.admin_account.empty() || e.account != cfg_.admin_account) {
    out.messages.push_back(to_client(
        e.identity, proto::make_error(make_error(errc::forbidden, "DEPOSIT needs the coordinator's admin key"),
                                      d.request_id)));
    return;
  }
  const auto account = d.to == "node" ? market::provider_account(d.account) : market::client_account(d.account);
  const auto ref = "deposit:" + d.request_id;
  auto [it, fresh] = deposits_.try_emplace(ref);
  auto& dep = it->second;
  if (!fresh) {
    // The same request id again (a resend after a lost reply): nothing new is credited.
    if (dep.account != account || dep.amount != d.amount) {
      out.messages.push_back(to_client(
          e.identity, proto::make_error(make_error(errc::duplicate_request,
                                                   fmt::format("deposit '{}' was made for {} micro-units to {}; use a "
                                                               "new request id",
                                                               d.request_id, dep.amount, dep.account)),
                                        d.request_id)));
      return;
    }
    if (dep.stored)
      out.messages.push_back(
          to_client(e.identity, deposited(d.request_id, account, d.amount, balance_of(account), true)));
    else
      dep.waiting.push_back(e.identity); // answered when its record commits
    return;
  }
  // Credited when stored: money nobody may spend before Postgres holds it.
  dep.account = account;
  dep.amount = d.amount;
  dep.request_id = d.request_id;
  dep.waiting.push_back(e.identity);
  out.records.push_back(transfer{market::funding_postings(account, d.amount, "deposit"), ref, 0, now});
}

void execution_core::on(const admin_order& e, time_us now, effects& out) {
  using kind = admin_action::kind;
  const auto& a = e.action;
  auto refuse = [&](std::string reason) {
    out.messages.push_back(to_client(e.reply_to, proto::make_error(make_error(errc::bad_input, std::move(reason)))));
  };
  if (a.what == kind::deposit) {
    // A DEPOSIT from the admin key, recorded with who asked in the same commit. A resend of
    // the same request id is answered like one (nothing credited twice, no second record).
    const auto before = out.records.size();
    on(client_deposit{e.reply_to, cfg_.admin_account, e.deposit}, now, out);
    if (out.records.size() > before) {
      auto recorded = a;
      recorded.target = std::get<transfer>(out.records.back()).postings.back().account;
      out.records.push_back(std::move(recorded));
    }
    return;
  }
  const bool node_order = a.what == kind::drain || a.what == kind::undrain || a.what == kind::ban || a.what == kind::unban;
  if (node_order && !verify::is_hash_hex(a.target))
    return refuse(fmt::format("{}: the node key must be 64 lowercase hex characters", action_name(a.what)));
  if (a.what == kind::fee && (a.value < 0 || a.value > 10000))
    return refuse(fmt::format("fee: basis points from 0 to 10000, got {}", a.value));
  if (a.what == kind::sample_rate && (a.value < 0 || a.value > 1'000'000))
    return refuse(fmt::format("sample rate: parts per million from 0 to 1000000, got {}", a.value));
  order_replies_[a.ref].push_back(e.reply_to);
  out.records.push_back(a);
}

void execution_core::on(const request_found& e, time_us, effects& out) {
  if (lookups_in_flight_ > 0)
    --lookups_in_flight_;
  // A resend admitted while Postgres was asked holds the request id (or held it, and ended):
  // that job answered for itself, and the look-up's answer is stale.
  bool stale = false;
  if (auto l = lookups_.find({e.client_id, e.request_id}); l != lookups_.end()) {
    stale = l->second.stale;
    if (--l->second.in_flight <= 0)
      lookups_.erase(l);
  }
  if (stale || by_request_.count({e.client_id, e.request_id}))
    return;
  if (e.job)
    reply_stored(e.identity, e.request_id, *e.job, out);
  else
    out.messages.push_back(to_client(e.identity, proto::make_error(e.refusal, e.request_id)));
}

// A request id held by a job this core no longer holds (settled, or from before a restart):
// that job's ACK, and its RESULT when it has one. Nothing is charged again.
void execution_core::reply_stored(const std::string& identity, const std::string& request_id, const existing_job& x,
                                  effects& out) {
  out.messages.push_back(to_client(identity, proto::make_ack({request_id, x.job_id})));
  if (x.result)
    out.messages.push_back(to_client(
        identity, proto::make_result({request_id, x.job_id, x.result->classes, x.result->output, x.result->receipt})));
  else if (x.state == job_state::failed || x.state == job_state::expired || x.state == job_state::cancelled)
    out.messages.push_back(
        to_client(identity, proto::make_error(make_error(x.state == job_state::expired ? errc::expired : errc::failed,
                                                         fmt::format("job {} ended {}", x.job_id, state_name(x.state))),
                                              request_id, x.job_id)));
}

// The same for a job this core holds: what is committed of it (a result not yet stored is
// sent by that commit, to the identity that asked last).
void execution_core::reply_duplicate(const std::string& identity, const std::string& request_id, const job_entry& j,
                                     effects& out) {
  existing_job x;
  x.job_id = j.spec.id;
  x.state = j.durable;
  if (j.durable >= job_state::executed && !is_final(j.durable))
    x.result = j.result;
  reply_stored(identity, request_id, x, out);
}

// ---- nodes ----

// Every node's HELLO comes here first: a node joins only with its stake (core/stake.hpp). A
// verifier, once admitted, is handed to the verification core, which runs its session.
void execution_core::on(const node_hello& e, time_us now, effects& out) {
  const auto& caps = e.caps;
  if (caps.role != "provider" && caps.role != "verifier") {
    out.messages.push_back(to_node(e.identity, proto::make_error(make_error(
                                                   errc::bad_input, "a node's role is 'provider' or 'verifier', got '" +
                                                                        caps.role + "'"))));
    return;
  }
  const auto& key = caps.public_key;
  if (banned_.count(key)) {
    out.messages.push_back(to_node(
        e.identity, proto::make_error(make_error(errc::forbidden, "this node key is banned by an operator"))));
    return;
  }
  if (stake_.holding(key)) {
    awaiting_stake_[key].push_back(e); // welcomed when the hold in flight commits
    return;
  }
  auto admission = stake_.admit(key, now);
  if (admission.refusal) {
    out.messages.push_back(to_node(e.identity, proto::make_error(*admission.refusal)));
    out.notes.push_back(fmt::format("{} {} refused: {}", caps.role, short_key(key), admission.refusal->reason));
    return;
  }
  if (admission.hold) {
    // Persist before tell: WELCOME only once its stake is held in Postgres.
    awaiting_stake_[key].push_back(e);
    book(std::move(*admission.hold), out);
    return;
  }
  welcome(e, now, out);
}

void execution_core::welcome(const node_hello& e, time_us now, effects& out) {
  const auto& caps = e.caps;
  if (caps.role == "verifier") {
    stake_.joined(caps.public_key, caps.role);
    verifier_identity_[caps.public_key] = e.identity;
    out.admitted_verifiers.push_back(e);
    return;
  }
  // A provider that reconnects (a new identity for its key, or a new key on an identity)
  // replaces its old session; what the old one held goes back to the queue.
  if (auto old = key_of_.find(e.identity); old != key_of_.end() && old->second != caps.public_key)
    lose_session(old->second, now, out, "its connection now speaks for another key");
  if (sessions_.count(caps.public_key))
    lose_session(caps.public_key, now, out, "replaced by a new session");
  stake_.joined(caps.public_key, caps.role);
  session s;
  s.identity = e.identity;
  s.caps = caps;
  s.last_heard = now;
  sessions_.emplace(caps.public_key, std::move(s));
  key_of_[e.identity] = caps.public_key;
  out.records.push_back(node_seen{caps, now});
  out.messages.push_back(to_node(e.identity, proto::make_welcome({cfg_.heartbeat_ms, cfg_.coordinator_key})));
  out.notes.push_back(fmt::format("provider '{}' ({}) joined: {} models, price {}, {} at stake", caps.name,
                                  short_key(caps.public_key), caps.models.size(), caps.price,
                                  stake_.staked(caps.public_key)));
}

void execution_core::on(const node_left& e, time_us now, effects&) {
  stake_.left(e.key, e.role, now);
  if (e.role == "verifier")
    verifier_identity_.erase(e.key);
}

void execution_core::on(const node_ready& e, time_us now, effects& out) {
  auto* s = session_of(e.identity);
  if (!s) {
    out.messages.push_back(to_node(e.identity, proto::make_error(make_error(
                                                   errc::not_registered, "READY from a node that has not sent HELLO (or "
                                                                         "was dropped after missing heartbeats); send "
                                                                         "HELLO first"))));
    return;
  }
  s->last_heard = now;
  const std::int64_t credit = static_cast<std::int64_t>(s->credit) + e.credit;
  if (credit > cfg_.max_credit)
    out.messages.push_back(to_node(e.identity, proto::make_error(make_error(
                                                   errc::bad_input, fmt::format("READY would raise credit to {}; the "
                                                                                "limit is {}, credit stays at it",
                                                                                credit, cfg_.max_credit)))));
  s->credit = static_cast<std::int32_t>(std::min<std::int64_t>(credit, cfg_.max_credit));
  dispatch(now, out);
}

void execution_core::on(const node_heartbeat& e, time_us now, effects& out) {
  if (auto* s = session_of(e.identity))
    s->last_heard = now;
  else
    out.messages.push_back(to_node(e.identity, proto::make_error(make_error(
                                                   errc::not_registered, "HEARTBEAT from a node without a session; "
                                                                         "send HELLO"))));
}

void execution_core::release_slot(session& s, std::int64_t job_id, std::int32_t attempt) {
  if (s.held.erase({job_id, attempt}))
    ++s.credit;
}

void execution_core::on(const node_done& e, time_us now, effects& out) {
  auto* s = session_of(e.identity);
  const auto& done = e.done;
  if (!s) {
    out.messages.push_back(to_node(e.identity, proto::make_error(make_error(errc::not_registered,
                                                                            "DONE from a node without a session; send "
                                                                            "HELLO first"),
                                                                 "", done.job_id)));
    return;
  }
  s->last_heard = now;
  const std::string key = s->caps.public_key;
  auto it = jobs_.find(done.job_id);
  if (it == jobs_.end() || it->second.state != job_state::assigned || it->second.attempt != done.attempt ||
      it->second.provider_key != key) {
    release_slot(*s, done.job_id, done.attempt); // it is done with it, whatever became of the job
    out.messages.push_back(to_node(e.identity, proto::make_error(make_error(errc::unknown_job,
                                                                            fmt::format("job {} attempt {} is not "
                                                                                        "assigned to you (any more)",
                                                                                        done.job_id, done.attempt)),
                                                                 "", done.job_id)));
    dispatch(now, out);
    return;
  }
  auto& j = it->second;
  if (j.spec.deadline_us && now > j.spec.deadline_us) {
    release_slot(*s, done.job_id, done.attempt);
    finish_unpaid(j, job_state::expired, now, out, errc::expired,
                  "the deadline passed before the provider's result arrived");
    out.messages.push_back(to_node(e.identity, proto::make_error(make_error(errc::expired,
                                                                            fmt::format("job {} passed its deadline "
                                                                                        "before your DONE; not paid",
                                                                                        done.job_id)),
                                                                 "", done.job_id)));
    dispatch(now, out);
    return;
  }
  const auto model = cfg_.models.find(j.spec.model);
  if (auto ok = model == cfg_.models.end()
                    ? status{make_error(errc::unknown_model, fmt::format("model {} of job {} is no longer loaded",
                                                                         j.spec.model.substr(0, 12), done.job_id))}
                    : check_done(done, j.spec, model->second, key, j.price, j.attempt);
      !ok) {
    // Refused, and nothing changes: the job stays with this provider until a DONE that checks,
    // a FAIL, its loss or the assignment timeout.
    out.messages.push_back(to_node(e.identity, proto::make_error(ok.err(), "", done.job_id)));
    out.notes.push_back(fmt::format("provider {} sent a bad DONE: {}", short_key(key), ok.err().reason));
    return;
  }
  release_slot(*s, done.job_id, done.attempt);
  timeouts_.erase({j.timeout_at, j.spec.id});
  stop_waiting(j);
  j.provider_operator = s->caps.operator_key; // also for a job assigned before a restart
  transition(j, job_state::executed, now, out, "",
             execution_result{done.classes, done.output, done.receipt, done.layer_hashes});
  dispatch(now, out);
}

void execution_core::on(const node_fail& e, time_us now, effects& out) {
  auto* s = session_of(e.identity);
  const auto& f = e.fail;
  if (!s) {
    out.messages.push_back(to_node(e.identity, proto::make_error(make_error(errc::not_registered,
                                                                            "FAIL from a node without a session"),
                                                                 "", f.job_id)));
    return;
  }
  s->last_heard = now;
  release_slot(*s, f.job_id, f.attempt);
  auto it = jobs_.find(f.job_id);
  if (it != jobs_.end() && it->second.state == job_state::assigned && it->second.attempt == f.attempt &&
      it->second.provider_key == s->caps.public_key)
    requeue(it->second, now, out,
            fmt::format("provider {} failed it: {} ({})", short_key(s->caps.public_key), f.reason, f.code));
  dispatch(now, out);
}

void execution_core::on(const node_gone& e, time_us now, effects& out) {
  if (auto k = key_of_.find(e.identity); k != key_of_.end())
    lose_session(k->second, now, out, e.reason.empty() ? "it disconnected" : e.reason);
  dispatch(now, out);
}

void execution_core::lose_session(std::string key, time_us now, effects& out, const std::string& why) {
  auto it = sessions_.find(key);
  if (it == sessions_.end())
    return;
  auto held = it->second.held;
  key_of_.erase(it->second.identity);
  sessions_.erase(it);
  stake_.left(key, "provider", now);
  if (auto r = recovered_by_key_.find(key); r != recovered_by_key_.end()) {
    for (auto id : r->second)
      if (auto j = jobs_.find(id); j != jobs_.end())
        held.insert({id, j->second.attempt});
    recovered_by_key_.erase(r);
  }
  std::size_t requeued = 0;
  for (const auto& [job_id, attempt] : held) {
    auto j = jobs_.find(job_id);
    if (j != jobs_.end() && j->second.state == job_state::assigned && j->second.attempt == attempt &&
        j->second.provider_key == key) {
      requeue(j->second, now, out, fmt::format("provider {} lost: {}", short_key(key), why));
      ++requeued;
    }
  }
  out.notes.push_back(fmt::format("provider {} lost ({}); {} jobs re-queued", short_key(key), why, requeued));
}

// ---- the job life cycle ----

bool execution_core::transition(job_entry& j, job_state to, time_us now, effects& out, std::string detail,
                                std::optional<execution_result> result) {
  if (!legal(j.state, to)) {
    out.errors.push_back(fmt::format("job {}: illegal transition {} -> {} refused", j.spec.id, state_name(j.state),
                                     state_name(to)));
    return false;
  }
  ++j.seq;
  job_transition t;
  t.job_id = j.spec.id;
  t.seq = j.seq;
  t.from = j.state;
  t.to = to;
  t.attempt = j.attempt;
  if (to == job_state::assigned) {
    t.provider_key = j.provider_key;
    t.price = j.price;
  }
  t.detail = std::move(detail);
  t.at_us = now;
  if (result)
    j.result = result;
  t.result = std::move(result);
  out.records.push_back(std::move(t));
  j.state = to;
  return true;
}

void execution_core::stop_waiting(job_entry& j) {
  if (!j.waiting)
    return;
  j.waiting = false;
  --waiting_;
  if (auto c = client_waiting_.find(j.spec.client_id); c != client_waiting_.end() && --c->second == 0)
    client_waiting_.erase(c);
  deadlines_.erase({j.spec.deadline_us, j.spec.id});
}

void execution_core::requeue(job_entry& j, time_us now, effects& out, const std::string& why) {
  timeouts_.erase({j.timeout_at, j.spec.id});
  if (j.attempt + 1 >= cfg_.max_attempts) {
    finish_unpaid(j, job_state::failed, now, out, errc::failed,
                  fmt::format("gave up after {} attempts; last: {}", j.attempt + 1, why));
    return;
  }
  ++j.attempt;
  j.provider_key.clear();
  j.price = 0;
  if (transition(j, job_state::queued, now, out, "re-queued: " + why))
    queue_.push_front(j.spec.client_id, j.spec.id);
}

// The job ends without a result: nothing is charged. Its hold is released and the client told
// once the record of the end is committed.
void execution_core::finish_unpaid(job_entry& j, job_state to, time_us now, effects& out, const char* code,
                                   const std::string& why) {
  if (j.state == job_state::queued || j.state == job_state::submitted)
    queue_.remove(j.spec.id);
  timeouts_.erase({j.timeout_at, j.spec.id});
  stop_waiting(j);
  j.end_code = code;
  j.end_reason = why;
  transition(j, to, now, out, why);
}

void execution_core::drop_job(std::int64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end())
    return;
  auto& j = it->second;
  if (j.state == job_state::queued || j.state == job_state::submitted)
    queue_.remove(id);
  timeouts_.erase({j.timeout_at, id});
  stop_waiting(j);
  by_request_.erase({j.spec.client_id, j.spec.request_id});
  jobs_.erase(it);
}

void execution_core::assign(job_entry& j, session& s, time_us now, effects& out) {
  j.provider_key = s.caps.public_key;
  j.provider_operator = s.caps.operator_key;
  j.price = s.caps.price;
  if (!transition(j, job_state::assigned, now, out, "provider " + short_key(s.caps.public_key)))
    return;
  j.timeout_at = now + cfg_.assign_timeout_ms * 1000;
  timeouts_.insert({j.timeout_at, j.spec.id});
  --s.credit;
  s.held.insert({j.spec.id, j.attempt});
}

int execution_core::reputation_of(const std::string& provider_key) const {
  auto it = verdicts_.find(provider_key);
  return it == verdicts_.end() ? market::reputation({}) : market::reputation(it->second);
}

void execution_core::dispatch(time_us now, effects& out) {
  if (draining_ || queue_.size() == 0)
    return;
  std::vector<scheduler::provider_view> views;
  std::size_t total = 0;
  for (const auto& [key, s] : sessions_) {
    if (s.credit <= 0 || drained_.count(key))
      continue;
    views.push_back({key, s.caps.device, std::set<std::string>(s.caps.models.begin(), s.caps.models.end()), s.credit,
                     s.caps.price, reputation_of(key)});
    total += static_cast<std::size_t>(s.credit);
  }
  if (views.empty())
    return;
  std::map<std::int64_t, std::string> choice;
  auto ids = queue_.take(total, [&](std::int64_t id) {
    const auto& j = jobs_.at(id);
    if (j.spec.deadline_us && j.spec.deadline_us <= now)
      return false; // the next tick expires it
    auto m = scheduler::match({j.spec.model, "", j.spec.max_price, cfg_.min_reputation}, views);
    if (m.provider_key && *m.provider_key == j.avoid_provider) { // a re-run: any provider but the one that lost
      auto others = views;
      std::erase_if(others, [&](const auto& v) { return v.key == j.avoid_provider; });
      m = scheduler::match({j.spec.model, "", j.spec.max_price, cfg_.min_reputation}, others);
    }
    if (!m.provider_key)
      return false;
    for (auto& v : views)
      if (v.key == *m.provider_key)
        --v.credit;
    choice[id] = *m.provider_key;
    return true;
  });
  for (auto id : ids)
    assign(jobs_.at(id), sessions_.at(choice.at(id)), now, out);
}

// ---- commits ----

void execution_core::on(const committed& e, time_us now, effects& out) {
  for (std::size_t i = 0; i < e.records.size(); ++i) {
    if (i >= e.outcomes.size()) {
      out.errors.push_back(fmt::format("a commit confirmed {} records with {} outcomes", e.records.size(),
                                       e.outcomes.size()));
      return;
    }
    on_commit(e.records[i], e.outcomes[i], now, out);
  }
  dispatch(now, out);
}

void execution_core::on_commit(const record& rec, const outcome& o, time_us now, effects& out) {
  if (const auto* ins = std::get_if<job_insert>(&rec)) {
    auto it = jobs_.find(ins->spec.id);
    if (it == jobs_.end())
      return;
    auto& j = it->second;
    if (o.what == outcome::kind::ok) {
      j.inserted = true;
      if (j.durable == job_state::submitted)
        j.durable = job_state::queued;
      if (j.state == job_state::submitted)
        j.state = job_state::queued;
      if (!j.reply_to.empty())
        out.messages.push_back(to_client(j.reply_to, proto::make_ack({j.spec.request_id, j.spec.id})));
      return;
    }
    // Not stored: undo the admission (the hold, a slot taken on a provider) and answer.
    const auto reply_to = j.reply_to;
    const auto request_id = j.spec.request_id;
    const auto client = j.spec.client_id;
    escrow_.release(client, j.spec.max_price);
    if (j.state == job_state::assigned)
      if (auto s = sessions_.find(j.provider_key); s != sessions_.end())
        release_slot(s->second, j.spec.id, j.attempt);
    drop_job(ins->spec.id);
    if (reply_to.empty())
      return;
    if (o.what == outcome::kind::duplicate && o.existing) {
      reply_stored(reply_to, request_id, *o.existing, out);
    } else {
      out.errors.push_back(fmt::format("job {} of client '{}' was not stored: {}", ins->spec.id, client, o.reason));
      out.messages.push_back(to_client(
          reply_to, proto::make_error(make_error(errc::internal, "the job could not be stored; nothing was charged"),
                                      request_id)));
    }
    return;
  }
  if (const auto* t = std::get_if<job_transition>(&rec)) {
    auto it = jobs_.find(t->job_id);
    if (it == jobs_.end())
      return; // dropped (its insert was a duplicate)
    auto& j = it->second;
    if (o.what != outcome::kind::ok) {
      out.errors.push_back(fmt::format("job {}: the {} record was not stored: {}", t->job_id, state_name(t->to),
                                       o.reason));
      return;
    }
    j.durable = t->to;
    switch (t->to) {
    case job_state::assigned: {
      // Tell the provider only if this is still the job's current assignment.
      if (j.state != job_state::assigned || j.attempt != t->attempt || j.provider_key != t->provider_key)
        return;
      auto s = sessions_.find(j.provider_key);
      if (s == sessions_.end())
        return;
      out.messages.push_back(
          to_node(s->second.identity, proto::make_job({j.spec.id, j.attempt, j.spec.model, j.price, j.spec.input})));
      return;
    }
    case job_state::executed: {
      if (!j.result)
        return;
      if (!j.reply_to.empty())
        out.messages.push_back(to_client(j.reply_to, proto::make_result({j.spec.request_id, j.spec.id,
                                                                         j.result->classes, j.result->output,
                                                                         j.result->receipt})));
      out.to_verification.push_back({j.spec.id, j.attempt, j.seq, j.spec.client_id, j.spec.tier, j.result->receipt,
                                     j.provider_operator, std::move(j.spec.input), j.result->layer_hashes});
      j.spec.input = {};
      return;
    }
    case job_state::failed:
    case job_state::expired:
    case job_state::cancelled: {
      escrow_.release(j.spec.client_id, j.spec.max_price);
      if (!j.reply_to.empty())
        out.messages.push_back(to_client(
            j.reply_to, proto::make_error(error{j.end_code, j.end_reason}, j.spec.request_id, j.spec.id)));
      out.notes.push_back(fmt::format("job {} {}: {}", j.spec.id, state_name(t->to), j.end_reason));
      drop_job(t->job_id);
      return;
    }
    default:
      return;
    }
  }
  if (const auto* t = std::get_if<transfer>(&rec)) {
    on_commit(*t, o, now, out);
    return;
  }
  if (const auto* n = std::get_if<node_seen>(&rec)) {
    if (o.what != outcome::kind::ok)
      out.notes.push_back(fmt::format("node {} not recorded: {}", short_key(n->caps.public_key), o.reason));
  }
  if (const auto* a = std::get_if<admin_action>(&rec)) {
    if (o.what == outcome::kind::rejected) {
      for (const auto& to : order_replies_[a->ref])
        out.messages.push_back(to_client(to, proto::make_error(make_error(errc::internal, "not recorded: " + o.reason))));
      order_replies_.erase(a->ref);
      return;
    }
    on_commit(*a, now, out);
  }
}

// An operator's action, carried out once its record (the audit trail) is committed; the
// verification and settlement cores get theirs as a hand-off.
void execution_core::on_commit(const admin_action& a, time_us now, effects& out) {
  using kind = admin_action::kind;
  const auto& key = a.target;
  switch (a.what) {
  case kind::drain:
    drained_.insert(key);
    break;
  case kind::undrain:
    drained_.erase(key);
    break;
  case kind::ban: {
    banned_.insert(key);
    const auto why = fmt::format("this node key was banned by an operator ({})", a.who);
    if (auto it = sessions_.find(key); it != sessions_.end()) {
      const auto identity = it->second.identity;
      lose_session(key, now, out, "banned by " + a.who);
      out.messages.push_back(to_node(identity, proto::make_disconnect(why)));
    }
    if (auto v = verifier_identity_.find(key); v != verifier_identity_.end()) {
      out.messages.push_back(to_node(v->second, proto::make_disconnect(why)));
      verifier_identity_.erase(v);
    }
    break;
  }
  case kind::unban:
    banned_.erase(key);
    break;
  case kind::fee:
  case kind::sample_rate:
  case kind::deposit: // carried out by its transfer, committed with it
    break;
  }
  if (a.what != kind::deposit) {
    out.orders.push_back(a);
    out.notes.push_back(fmt::format("operator {}: {} {} {}", a.who, action_name(a.what), short_key(key), a.value));
  }
  auto replies = order_replies_.find(a.ref);
  if (replies == order_replies_.end())
    return;
  for (const auto& to : replies->second) {
    proto::message m;
    m.command = "ADMIN";
    m.header = {{"ref", a.ref}, {"action", action_name(a.what)}, {"target", a.target}, {"value", a.value}, {"who", a.who}};
    out.messages.push_back(to_client(to, std::move(m)));
  }
  order_replies_.erase(replies);
}

void execution_core::on_commit(const transfer& t, const outcome& o, time_us now, effects& out) {
  const bool stored = o.what != outcome::kind::rejected;
  if (auto d = deposits_.find(t.ref); d != deposits_.end()) {
    // A deposit is credited only now: money nobody may spend before Postgres holds it.
    auto& dep = d->second;
    if (stored) {
      dep.stored = true;
      apply(t, +1);
    }
    for (const auto& identity : dep.waiting)
      out.messages.push_back(to_client(
          identity, stored ? deposited(dep.request_id, dep.account, dep.amount, balance_of(dep.account), false)
                           : proto::make_error(make_error(errc::internal, "the deposit was not stored: " + o.reason),
                                               dep.request_id)));
    dep.waiting.clear();
    if (!stored) {
      out.errors.push_back(fmt::format("deposit '{}' was not stored: {}", dep.request_id, o.reason));
      deposits_.erase(d);
    }
    return;
  }
  // Anything else was applied when it was booked: a transfer not stored must not be spent.
  if (!stored) {
    apply(t, -1);
    out.errors.push_back(fmt::format("transfer '{}' was not stored: {}", t.ref, o.reason));
    if (t.ref.rfind("faucet:", 0) == 0)
      funded_.erase(t.ref.substr(7));
  }
  if (t.ref.rfind("stake:", 0) != 0)
    return;
  // A stake hold: the HELLOs that waited for it are welcomed (or refused, when it failed).
  const auto key = t.ref.substr(6, t.ref.rfind(':') - 6);
  stake_.hold_done(key, t.ref);
  if (auto waiting = awaiting_stake_.find(key); waiting != awaiting_stake_.end()) {
    auto hellos = std::move(waiting->second);
    awaiting_stake_.erase(waiting);
    for (const auto& h : hellos) {
      if (stored && banned_.count(key)) // banned while its hold was in flight: its stake cools down unused
        out.messages.push_back(to_node(
            h.identity, proto::make_error(make_error(errc::forbidden, "this node key is banned by an operator"))));
      else if (stored)
        welcome(h, now, out);
      else
        out.messages.push_back(to_node(h.identity, proto::make_error(make_error(
                                                       errc::internal, "the stake could not be held: " + o.reason))));
    }
  }
  // Slashed again while this top-up was in flight: top up once more, as far as the account goes.
  if (stored && stake_.present(key) && stake_.below_minimum(key))
    if (auto again = stake_.admit(key, now); again.hold)
      book(std::move(*again.hold), out);
}

void execution_core::book(transfer t, effects& out) {
  apply(t, +1);
  out.records.push_back(std::move(t));
}

void execution_core::apply(const transfer& t, int sign) {
  for (auto p : t.postings) {
    p.amount *= sign;
    if (stake_.apply(p))
      continue;
    if (auto client = market::owner_of(p.account, "client:"); !client.empty())
      escrow_.credit(client, p.amount);
  }
}

// A ruling's slashes, once the job's block is committed. A connected node left below the
// minimum stake tops it up from its account, or is sent DISCONNECT when the account cannot pay
// (its next HELLO is refused until a deposit comes).
void execution_core::slash(const settled_job& s, time_us now, effects& out) {
  for (auto& t : stake_.slash(s, now)) {
    out.notes.push_back(fmt::format("job {}: slashed ({})", s.job_id, t.ref));
    book(std::move(t), out);
  }
  if (s.ruling.provider_lost)
    top_up(s.provider_key, s.job_id, now, out);
  if (!s.ruling.liar_verifier.empty())
    top_up(s.ruling.liar_verifier, s.job_id, now, out);
}

void execution_core::top_up(const std::string& key, std::int64_t job_id, time_us now, effects& out) {
  if (!stake_.present(key) || !stake_.below_minimum(key) || stake_.holding(key))
    return;
  auto admission = stake_.admit(key, now);
  if (admission.hold) {
    book(std::move(*admission.hold), out);
    return;
  }
  const auto why = fmt::format("your stake was slashed after job {} (the referee ruled against you) and your "
                               "account cannot bring it back to {}",
                               job_id, cfg_.stake.min_stake);
  if (auto it = sessions_.find(key); it != sessions_.end()) {
    const auto identity = it->second.identity;
    lose_session(key, now, out, "slashed below the minimum stake");
    out.messages.push_back(to_node(identity, proto::make_disconnect(why)));
  }
  if (auto v = verifier_identity_.find(key); v != verifier_identity_.end()) {
    // The verification core drops the session once the verifier, gone, stops heartbeating.
    out.messages.push_back(to_node(v->second, proto::make_disconnect(why)));
    verifier_identity_.erase(v);
  }
}

void execution_core::on(const jobs_settled& e, time_us now, effects& out) {
  for (const auto& s : e.jobs) {
    // Reputation: from every settled verdict, also of jobs this core no longer holds.
    if (s.verdict == job_state::verified)
      ++verdicts_[s.provider_key].verified;
    else if (s.verdict == job_state::disputed)
      ++verdicts_[s.provider_key].disputes_lost;
    // The provider's earnings are in its account now (the block is committed).
    stake_.apply({market::provider_account(s.provider_key), s.earned, "job earnings"});
    if (s.ruling.any())
      slash(s, now, out);
    auto it = jobs_.find(s.job_id);
    if (it == jobs_.end())
      continue;
    const auto& j = it->second;
    escrow_.capture(j.spec.client_id, j.spec.max_price, s.charged);
    if (s.verdict == job_state::disputed) { // its block is committed: the client may be told
      const auto rerun_id = s.ruling.provider_lost
                                ? rerun(j.spec, s.ruling.input, j.reply_to, s.provider_key, now, out)
                                : std::string();
      out.messages.push_back(to_client(
          j.reply_to,
          proto::make_notice({j.spec.id, j.spec.request_id, "disputed", s.charged,
                              "a verifier disagreed with this job's result and the referee ruled against the "
                              "provider: do not use the RESULT; you were charged " +
                                  std::to_string(s.charged) + " (STATUS shows the evidence); " +
                                  (rerun_id.empty() ? "it is not re-run"
                                                    : "it runs again on another provider as request " + rerun_id),
                              rerun_id})));
    }
    drop_job(s.job_id);
  }
}

// ---- time ----

void execution_core::on(const tick&, time_us now, effects& out) {
  const time_us beat = static_cast<time_us>(cfg_.heartbeat_ms) * 1000;
  const time_us liveness = beat * proto::heartbeat_liveness;
  std::vector<std::string> dead;
  for (const auto& [key, s] : sessions_)
    if (now - s.last_heard > liveness)
      dead.push_back(key);
  for (const auto& key : dead)
    lose_session(key, now, out, fmt::format("no message for {} ms", (now - sessions_.at(key).last_heard) / 1000));
  if (now - last_beat_ >= beat) {
    last_beat_ = now;
    for (const auto& [key, s] : sessions_)
      out.messages.push_back(to_node(s.identity, proto::make_heartbeat()));
  }
  while (!timeouts_.empty() && timeouts_.begin()->first <= now) {
    const auto id = timeouts_.begin()->second;
    timeouts_.erase(timeouts_.begin());
    auto it = jobs_.find(id);
    if (it != jobs_.end() && it->second.state == job_state::assigned)
      requeue(it->second, now, out,
              fmt::format("provider {} did not answer within {} ms", short_key(it->second.provider_key),
                          cfg_.assign_timeout_ms));
  }
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const auto id = deadlines_.begin()->second;
    auto it = jobs_.find(id);
    if (it == jobs_.end()) {
      deadlines_.erase(deadlines_.begin());
      continue;
    }
    finish_unpaid(it->second, job_state::expired, now, out, errc::expired,
                  fmt::format("the deadline passed while the job was {}", state_name(it->second.state)));
    deadlines_.erase({it->second.spec.deadline_us, id}); // finish_unpaid did unless the transition was refused
  }
  for (const auto& settled : std::exchange(unslashed_, {}))
    slash(settled, now, out);
  for (auto& owed : std::exchange(reruns_, {}))
    rerun(owed.parent, std::move(owed.parent.input), {}, owed.provider_key, now, out);
  for (auto& t : stake_.releases_due(now)) {
    out.notes.push_back(fmt::format("stake released ({}): its node left {} ms ago or more", t.ref,
                                    cfg_.stake.cooldown_ms));
    book(std::move(t), out);
  }
  dispatch(now, out);
}

void execution_core::on(const drain&, time_us, effects& out) {
  draining_ = true;
  out.notes.push_back("draining: no more jobs are admitted or assigned");
}

time_us execution_core::next_wake() const {
  const time_us beat = static_cast<time_us>(cfg_.heartbeat_ms) * 1000;
  time_us wake = sessions_.empty() ? 0 : last_beat_ + beat;
  auto earlier = [&](time_us t) {
    if (t > 0 && (wake == 0 || t < wake))
      wake = t;
  };
  for (const auto& [key, s] : sessions_)
    earlier(s.last_heard + beat * proto::heartbeat_liveness + 1);
  if (!timeouts_.empty())
    earlier(timeouts_.begin()->first);
  if (!deadlines_.empty())
    earlier(deadlines_.begin()->first);
  earlier(stake_.next_release());
  if (!unslashed_.empty() || !reruns_.empty())
    earlier(1);
  return wake;
}

} // namespace haca::core
