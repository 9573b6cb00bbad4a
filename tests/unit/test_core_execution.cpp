// The execution core as a pure state machine, and the job life cycle's transition table:
// admission and its refusals, escrow holds and the faucet, persist-before-tell for ACK, JOB,
// RESULT and the final ERROR, provider credit, receipt checks on DONE, attempts, liveness,
// assignment timeouts, deadlines, resends, recovery, drain and the wake-up time. Receipts are
// really signed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/execution.hpp"
#include "core/job_state.hpp"
#include "core_fixtures.hpp"
#include "kernels/ops.hpp"
#include "proto/commands.hpp"
#include "proto/protocol.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"
#include "verify/receipt.hpp"
#include "verify/signing.hpp"

using namespace haca;
using namespace haca::core;
using namespace haca::test;

namespace {

constexpr int input_dim = 4;
constexpr int output_dim = 3; // model A's classes (output_for)
constexpr micros faucet = 10'000;
constexpr time_us liveness = proto::heartbeat_liveness * 500 * ms; // with heartbeat_ms = 500

const std::string& model_a() {
  static const std::string m = verify::sha256_hex("model A");
  return m;
}

execution_config config() {
  execution_config c;
  c.models = {{model_a(), {input_dim, output_dim}}};
  c.faucet = faucet;
  c.heartbeat_ms = 500;
  c.assign_timeout_ms = 30000;
  c.default_deadline_ms = 600000;
  c.max_credit = 64;
  c.coordinator_key = verify::sha256_hex("coordinator");
  c.admin_account = "admin";
  return c;
}

kernels::tensor input_of(const std::string& seed, std::int64_t rows = 1, std::int64_t cols = input_dim) {
  kernels::tensor t;
  t.type = kernels::dtype::i8;
  t.shape = {rows, cols};
  t.data.resize(static_cast<std::size_t>(std::max<std::int64_t>(rows * cols, 0)));
  for (std::size_t i = 0; i < t.data.size(); ++i)
    t.data[i] = static_cast<char>((i * 7 + seed.size() * 13 + static_cast<unsigned char>(seed.back())) % 100);
  return t;
}

proto::submit_request request(const std::string& client, const std::string& req, micros max_price = 1000,
                              std::int64_t rows = 1, std::int64_t deadline_ms = 0) {
  proto::submit_request r;
  r.client_id = client;
  r.request_id = req;
  r.model = model_a();
  r.tier = "sampled";
  r.max_price = max_price;
  r.deadline_ms = deadline_ms;
  r.input = input_of(client + "/" + req, rows);
  return r;
}

// ---- providers, receipts ----

struct provider {
  std::string identity;
  micros price = 100;
  verify::key_pair key = verify::generate_key_pair();
  std::vector<std::string> models{model_a()};
};

// A job's block committed, with what it charged (no ruling).
settled_job settled(std::int64_t job_id, std::string client, micros charged, std::string provider_key,
                    job_state verdict) {
  settled_job s;
  s.job_id = job_id;
  s.client_id = std::move(client);
  s.charged = charged;
  s.provider_key = std::move(provider_key);
  s.verdict = verdict;
  return s;
}

proto::capabilities caps_of(const provider& p, const std::string& role = "provider") {
  proto::capabilities c;
  c.role = role;
  c.name = "node-" + p.identity;
  c.public_key = p.key.public_key_hex;
  c.device = "cpu";
  c.backends = {"reference"};
  c.models = p.models;
  c.price = p.price;
  c.timestamp_us = t0;
  return c;
}

// i8 [rows, output_dim] whose arg-max per row is unique.
kernels::tensor output_for(const proto::job_order& o, int classes = output_dim) {
  const std::int64_t rows = o.input.shape.empty() ? 0 : o.input.shape[0];
  kernels::tensor t;
  t.type = kernels::dtype::i8;
  t.shape = {rows, classes};
  for (std::int64_t r = 0; r < rows; ++r)
    for (int c = 0; c < classes; ++c)
      t.data.push_back(static_cast<char>(c == (o.job_id + r) % classes ? 90 : static_cast<int>(r % 20) - c));
  return t;
}

std::vector<std::int32_t> classes_of(const kernels::tensor& out) {
  std::vector<std::int32_t> classes(static_cast<std::size_t>(out.shape[0]));
  kernels::argmax_rows(out.i8(), static_cast<int>(out.shape[0]), static_cast<int>(out.shape[1]), classes.data());
  return classes;
}

// What an honest provider answers to a JOB: the output, its arg-max and a receipt it signed.
proto::job_done done_for(const proto::job_order& o, const provider& p) {
  proto::job_done d;
  d.job_id = o.job_id;
  d.attempt = o.attempt;
  d.output = output_for(o);
  d.classes = classes_of(d.output);
  verify::receipt& r = d.receipt;
  r.job_id = o.job_id;
  r.model_hash = o.model;
  r.input_hash = verify::sha256_hex(o.input.data);
  r.output_hash = verify::sha256_hex(d.output.data);
  d.layer_hashes = {verify::sha256_hex("layer 0 of " + std::to_string(o.job_id)),
                    verify::sha256_hex("layer 1 of " + std::to_string(o.job_id))};
  r.trace_root = verify::merkle_root(d.layer_hashes);
  r.price = o.price;
  r.attempt = o.attempt;
  r.started_at_us = t0;
  r.finished_at_us = t0 + 10;
  verify::sign_receipt(r, p.key);
  REQUIRE(verify::verify_receipt(r));
  return d;
}

// The JOB a provider would get for a request admitted as job `id` (for answers built without one).
proto::job_order order_of(std::int64_t id, std::int32_t attempt, const proto::submit_request& r, micros price) {
  return {id, attempt, r.model, price, r.input};
}

execution_result result_of(const proto::job_done& d) { return {d.classes, d.output, d.receipt, d.layer_hashes}; }

// ---- effects ----


std::vector<job_transition> transitions(const effects& e) { return records_of<job_transition>(e); }

std::vector<job_transition> transitions_to(const effects& e, job_state to) {
  std::vector<job_transition> out;
  for (auto& t : transitions(e))
    if (t.to == to)
      out.push_back(t);
  return out;
}

// The messages to one identity (anyone when empty) with one command (any when empty), in order.
std::vector<outbound> sent(const effects& e, std::string_view cmd = {}, const std::string& identity = {}) {
  std::vector<outbound> out;
  for (const auto& m : e.messages)
    if ((cmd.empty() || m.msg.command == cmd) && (identity.empty() || m.identity == identity))
      out.push_back(m);
  return out;
}

std::size_t count_cmd(const effects& e, std::string_view cmd, const std::string& identity = {}) {
  return sent(e, cmd, identity).size();
}

std::vector<std::string> commands_to(const effects& e, const std::string& identity) {
  std::vector<std::string> out;
  for (const auto& m : sent(e, {}, identity))
    out.emplace_back(m.msg.command);
  return out;
}

template <class T, class Parse>
std::vector<T> parsed(const effects& e, std::string_view cmd, const std::string& identity, Parse parse) {
  std::vector<T> out;
  for (const auto& m : sent(e, cmd, identity)) {
    auto r = parse(m.msg);
    REQUIRE(r.ok());
    out.push_back(r.value());
  }
  return out;
}

std::vector<proto::ack_reply> acks(const effects& e, const std::string& identity) {
  for (const auto& m : sent(e, proto::cmd::ack, identity))
    CHECK(m.to == port::client);
  return parsed<proto::ack_reply>(e, proto::cmd::ack, identity, proto::parse_ack);
}
std::vector<proto::job_result> results(const effects& e, const std::string& identity) {
  for (const auto& m : sent(e, proto::cmd::result, identity))
    CHECK(m.to == port::client);
  return parsed<proto::job_result>(e, proto::cmd::result, identity, proto::parse_result);
}
std::vector<proto::error_reply> errors_to(const effects& e, const std::string& identity) {
  return parsed<proto::error_reply>(e, proto::cmd::error, identity, proto::parse_error);
}
std::vector<proto::job_order> jobs_to(const effects& e, const std::string& identity) {
  for (const auto& m : sent(e, proto::cmd::job, identity))
    CHECK(m.to == port::node);
  return parsed<proto::job_order>(e, proto::cmd::job, identity, proto::parse_job);
}

committed all_ok(const effects& e) {
  committed c;
  c.records = e.records;
  c.outcomes.assign(e.records.size(), outcome{});
  return c;
}

committed confirm_one(record r, outcome o = {}) {
  committed c;
  c.records.push_back(std::move(r));
  c.outcomes.push_back(std::move(o));
  return c;
}

outcome duplicate_of(existing_job x) {
  outcome o;
  o.what = outcome::kind::duplicate;
  o.existing = std::move(x);
  return o;
}

template <class T>
void append_to(std::vector<T>& to, const std::vector<T>& from) {
  to.insert(to.end(), from.begin(), from.end());
}

void append(effects& to, const effects& from) {
  append_to(to.records, from.records);
  append_to(to.messages, from.messages);
  append_to(to.to_verification, from.to_verification);
  append_to(to.admitted_verifiers, from.admitted_verifiers);
  append_to(to.lookups, from.lookups);
  append_to(to.request_lookups, from.request_lookups);
  append_to(to.errors, from.errors);
  append_to(to.notes, from.notes);
  to.wake_at_us = from.wake_at_us;
}

// A core stepped at a clock the test moves, with the adapter's chores as helpers.
struct harness {
  execution_core core;
  time_us now = t0;

  explicit harness(execution_config cfg = config()) : core(std::move(cfg)) {}
  explicit harness(execution_core c, time_us at) : core(std::move(c)), now(at) {}

  effects step(const execution_event& ev) { return core.step(ev, now); }

  // Confirms every record of `e` as ok, then every record that produced, and so on: what the
  // confirmations produced, merged in order.
  effects confirm(const effects& e) {
    effects total;
    effects cur = e;
    for (int round = 0; !cur.records.empty(); ++round) {
      REQUIRE(round < 100);
      auto next = step(all_ok(cur));
      append(total, next);
      cur = std::move(next);
    }
    return total;
  }

  // `e` and everything confirming it produced.
  effects persisted(const effects& e) {
    effects total = e;
    append(total, confirm(e));
    return total;
  }

  effects submit(const proto::submit_request& r, const std::string& identity) {
    return step(client_submit{identity, r.client_id, r});
  }

  // HELLO (its node_seen confirmed) and READY `credit`: what the READY produced.
  effects join(const provider& p, std::int32_t credit) {
    auto hello = step(node_hello{p.identity, caps_of(p)});
    REQUIRE(count_cmd(hello, proto::cmd::welcome, p.identity) == 1);
    REQUIRE(records_of<node_seen>(hello).size() == 1);
    step(all_ok(hello));
    return credit > 0 ? step(node_ready{p.identity, credit}) : effects{};
  }

  // A SUBMIT confirmed through to its ACK (and its JOB, if a provider had credit): the job id.
  std::int64_t admit(const proto::submit_request& r, const std::string& identity, effects* all = nullptr) {
    auto e = persisted(submit(r, identity));
    auto a = acks(e, identity);
    REQUIRE(a.size() == 1);
    CHECK(a[0].request_id == r.request_id);
    if (all)
      *all = e;
    return a[0].job_id;
  }

  // The provider's answer to `order`, confirmed: everything it and its commits produced.
  effects deliver(const provider& p, const proto::job_order& order) {
    return persisted(step(node_done{p.identity, done_for(order, p)}));
  }
};

proto::job_order only_job(const effects& e, const std::string& identity) {
  auto js = jobs_to(e, identity);
  REQUIRE(js.size() == 1);
  return js[0];
}

// What a refusal must leave alone.
struct books {
  std::size_t open = 0;
  std::size_t waiting = 0;
  micros held = 0;
  micros balance = 0;
};

books books_of(const execution_core& c, const std::string& client) {
  return {c.open_jobs(), c.waiting(), c.held(client), c.balance(client)};
}

void check_unchanged(const execution_core& c, const std::string& client, const books& before) {
  const auto now = books_of(c, client);
  CHECK(now.open == before.open);
  CHECK(now.waiting == before.waiting);
  CHECK(now.held == before.held);
  CHECK(now.balance == before.balance);
}

// A refusal sent at once: one ERROR with `code` to the sender, and nothing else.
void check_refused_now(const effects& e, const std::string& identity, const proto::submit_request& r,
                       const char* code) {
  CHECK(e.records.empty());
  CHECK(e.request_lookups.empty());
  REQUIRE(e.messages.size() == 1);
  auto errs = errors_to(e, identity);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(code));
  CHECK(errs[0].request_id == r.request_id);
  CHECK(errs[0].job_id == 0);
}

// A refusal that asks Postgres first: one request_lookup carrying it, nothing sent or stored.
void check_looked_up(const effects& e, const std::string& identity, const proto::submit_request& r, const char* code) {
  CHECK(e.records.empty());
  CHECK(e.messages.empty());
  REQUIRE(e.request_lookups.size() == 1);
  const auto& l = e.request_lookups[0];
  CHECK(l.identity == identity);
  CHECK(l.client_id == r.client_id);
  CHECK(l.request_id == r.request_id);
  CHECK(l.refusal.code == std::string(code));
}

// A job as Postgres has it, for recovery.
stored_job stored(std::int64_t id, const std::string& client, job_state state, micros max_price) {
  stored_job s;
  s.spec.id = id;
  s.spec.client_id = client;
  s.spec.request_id = "req-" + std::to_string(id);
  s.spec.model = model_a();
  s.spec.tier = "sampled";
  s.spec.max_price = max_price;
  s.spec.deadline_us = t0 + 600000 * ms;
  s.spec.input = input_of(s.spec.request_id);
  s.spec.input_hash = verify::sha256_hex(s.spec.input.data);
  s.spec.submitted_us = t0;
  s.state = state;
  s.seq = 1;
  s.updated_us = t0;
  return s;
}

} // namespace

// ======================================================================================
// The transition table (core/job_state.cpp)
// ======================================================================================

namespace {
constexpr job_state all_states[] = {job_state::submitted, job_state::queued,    job_state::assigned,
                                    job_state::executed,  job_state::verified,  job_state::unsampled,
                                    job_state::disputed,  job_state::settled,   job_state::failed,
                                    job_state::expired,   job_state::cancelled};
} // namespace

TEST_CASE("the transition table allows exactly the pairs docs/ARCHITECTURE.md draws") {
  using S = job_state;
  static_assert(std::size(all_states) == job_state_count);
  const std::set<std::pair<S, S>> drawn{
      {S::submitted, S::queued},   {S::submitted, S::assigned},  {S::queued, S::assigned},
      {S::submitted, S::expired},  {S::queued, S::expired},      {S::assigned, S::queued},
      {S::assigned, S::failed},    {S::assigned, S::executed},   {S::assigned, S::expired},
      {S::submitted, S::cancelled}, {S::queued, S::cancelled},   {S::assigned, S::cancelled},
      {S::executed, S::verified},  {S::executed, S::unsampled},  {S::executed, S::disputed},
      {S::verified, S::settled},   {S::unsampled, S::settled},   {S::disputed, S::settled}};
  REQUIRE(drawn.size() == 18);
  int allowed = 0;
  for (auto from : all_states)
    for (auto to : all_states) {
      CAPTURE(state_name(from));
      CAPTURE(state_name(to));
      CHECK(legal(from, to) == (drawn.count({from, to}) > 0));
      allowed += legal(from, to) ? 1 : 0;
    }
  CHECK(allowed == 18);
}

TEST_CASE("the transition table refuses skipped steps, steps back and self-transitions") {
  using S = job_state;
  CHECK_FALSE(legal(S::queued, S::executed));    // no result without an assignment
  CHECK_FALSE(legal(S::submitted, S::executed));
  CHECK_FALSE(legal(S::executed, S::queued));    // a result is never run again
  CHECK_FALSE(legal(S::executed, S::failed));
  CHECK_FALSE(legal(S::executed, S::expired));   // a deadline cannot take back a RESULT
  CHECK_FALSE(legal(S::executed, S::settled));   // judged first
  CHECK_FALSE(legal(S::queued, S::settled));
  CHECK_FALSE(legal(S::queued, S::failed));      // only an attempt fails
  CHECK_FALSE(legal(S::verified, S::disputed));  // one verdict
  CHECK_FALSE(legal(S::unsampled, S::verified));
  CHECK_FALSE(legal(S::queued, S::submitted));
  CHECK_FALSE(legal(S::assigned, S::submitted));
  for (auto s : all_states) {
    CAPTURE(state_name(s));
    CHECK_FALSE(legal(s, s));
  }
}

TEST_CASE("the transition table: final states are settled, failed, expired and cancelled, and they have no exits") {
  const std::set<job_state> finals{job_state::settled, job_state::failed, job_state::expired, job_state::cancelled};
  for (auto from : all_states) {
    CAPTURE(state_name(from));
    CHECK(is_final(from) == (finals.count(from) > 0));
    int exits = 0;
    for (auto to : all_states)
      exits += legal(from, to) ? 1 : 0;
    if (is_final(from))
      CHECK(exits == 0);
    else
      CHECK(exits > 0); // every other state leads somewhere
  }
}

TEST_CASE("the transition table: state names are upper case and parse back; other spellings do not parse") {
  for (auto s : all_states) {
    const std::string name = state_name(s);
    CAPTURE(name);
    CHECK(std::none_of(name.begin(), name.end(), [](unsigned char c) { return std::islower(c); }));
    REQUIRE(parse_state(name).has_value());
    CHECK(*parse_state(name) == s);
  }
  CHECK(std::string(state_name(job_state::queued)) == "QUEUED");
  CHECK_FALSE(parse_state("queued").has_value());
  CHECK_FALSE(parse_state("").has_value());
  CHECK_FALSE(parse_state("RUNNING").has_value());
}

// ======================================================================================
// Persist before tell
// ======================================================================================

TEST_CASE("execution: a SUBMIT is stored as a job_insert first and ACKed exactly once, after its commit") {
  harness h;
  const auto r = request("alice", "r1", 1000);
  auto e = h.submit(r, "c1");
  CHECK(e.messages.empty());
  REQUIRE(e.records.size() == 2); // the faucet grant, then the job
  REQUIRE(std::holds_alternative<transfer>(e.records[0]));
  auto inserts = records_of<job_insert>(e);
  REQUIRE(inserts.size() == 1);
  const auto& spec = inserts[0].spec;
  CHECK(spec.id == 1);
  CHECK(spec.client_id == "alice");
  CHECK(spec.request_id == "r1");
  CHECK(spec.model == model_a());
  CHECK(spec.tier == "sampled");
  CHECK(spec.max_price == 1000);
  CHECK(spec.deadline_us == t0 + 600000 * ms);
  CHECK(spec.input.data == r.input.data);
  CHECK(spec.input_hash == verify::sha256_hex(r.input.data));
  CHECK(spec.submitted_us == t0);
  REQUIRE(h.core.job(1).has_value());
  CHECK(h.core.job(1)->state == job_state::submitted);
  CHECK(h.core.job(1)->durable == job_state::submitted);

  // Time passes, nothing is confirmed: still no ACK.
  h.now += 100 * ms;
  CHECK(count_cmd(h.step(tick{}), proto::cmd::ack) == 0);

  auto c = h.step(all_ok(e));
  CHECK(c.records.empty());
  REQUIRE(c.messages.size() == 1);
  auto a = acks(c, "c1");
  REQUIRE(a.size() == 1);
  CHECK(a[0].job_id == 1);
  CHECK(a[0].request_id == "r1");
  CHECK(h.core.job(1)->state == job_state::queued);
  CHECK(h.core.job(1)->durable == job_state::queued);

  // Nothing later repeats it.
  h.now += 100 * ms;
  CHECK(count_cmd(h.step(tick{}), proto::cmd::ack) == 0);
}

TEST_CASE("execution: an assignment is stored as ASSIGNED before the JOB goes to the provider") {
  harness h;
  provider p{"p1", 150};
  h.join(p, 1);
  const auto r = request("alice", "r1", 1000);
  auto e = h.submit(r, "c1");
  CHECK(e.messages.empty());
  auto inserts = records_of<job_insert>(e);
  auto ts = transitions(e);
  REQUIRE(inserts.size() == 1);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].job_id == 1);
  CHECK(ts[0].seq == 2); // the insert wrote 0 and 1
  CHECK(ts[0].from == job_state::submitted);
  CHECK(ts[0].to == job_state::assigned);
  CHECK(ts[0].attempt == 0);
  CHECK(ts[0].provider_key == p.key.public_key_hex);
  CHECK(ts[0].price == 150);

  auto c1 = h.step(confirm_one(inserts[0]));
  CHECK(acks(c1, "c1").size() == 1);
  CHECK(count_cmd(c1, proto::cmd::job) == 0);
  CHECK(h.core.job(1)->state == job_state::assigned);
  CHECK(h.core.job(1)->durable == job_state::queued);

  auto c2 = h.step(confirm_one(ts[0]));
  auto order = only_job(c2, p.identity);
  CHECK(order.job_id == 1);
  CHECK(order.attempt == 0);
  CHECK(order.model == model_a());
  CHECK(order.price == 150);
  CHECK(order.input.shape == r.input.shape);
  CHECK(order.input.data == r.input.data);
  CHECK(count_cmd(c2, proto::cmd::ack) == 0);
  CHECK(h.core.job(1)->durable == job_state::assigned);
  CHECK(h.core.job(1)->provider_key == p.key.public_key_hex);
}

TEST_CASE("execution: the commit of an assignment that is no longer current sends no JOB") {
  harness h;
  provider p{"p1", 100};
  provider q{"q1", 200};
  h.join(p, 1);
  h.admit(request("alice", "r1"), "ca"); // ACK, and the JOB of attempt 0 to p
  // Attempt 1 is assigned to p, then p is lost before that assignment is stored.
  auto fail = h.step(node_fail{p.identity, {1, 0, "x", "y"}});
  auto a1 = transitions_to(fail, job_state::assigned);
  REQUIRE(a1.size() == 1);
  CHECK(a1[0].attempt == 1);
  auto gone = h.step(node_gone{p.identity, "bye"});
  REQUIRE(transitions_to(gone, job_state::queued).size() == 1);
  h.join(q, 1); // attempt 2 goes to q
  CHECK(h.core.job(1)->attempt == 2);
  CHECK(h.core.job(1)->provider_key == q.key.public_key_hex);
  auto stale = h.step(all_ok(fail)); // attempt 1's assignment is stored now
  CHECK(count_cmd(stale, proto::cmd::job) == 0);
}

TEST_CASE("execution: a DONE is stored as EXECUTED with its result before the RESULT and the hand-off") {
  harness h;
  provider p{"p1"};
  h.join(p, 1);
  const auto r = request("alice", "r1", 1000);
  effects admitted;
  const auto id = h.admit(r, "c1", &admitted);
  auto order = only_job(admitted, p.identity);
  const auto d = done_for(order, p);

  auto e = h.step(node_done{p.identity, d});
  CHECK(count_cmd(e, proto::cmd::result) == 0);
  CHECK(e.to_verification.empty());
  CHECK(errors_to(e, p.identity).empty());
  auto ts = transitions(e);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].job_id == id);
  CHECK(ts[0].seq == 3);
  CHECK(ts[0].from == job_state::assigned);
  CHECK(ts[0].to == job_state::executed);
  CHECK(ts[0].attempt == 0);
  REQUIRE(ts[0].result.has_value());
  CHECK(ts[0].result->classes == d.classes);
  CHECK(ts[0].result->output.data == d.output.data);
  CHECK(ts[0].result->receipt.signature == d.receipt.signature);
  CHECK(h.core.job(id)->state == job_state::executed);
  CHECK(h.core.job(id)->durable == job_state::assigned);
  CHECK(h.core.waiting() == 0);

  auto c = h.step(all_ok(e));
  auto res = results(c, "c1");
  REQUIRE(res.size() == 1);
  CHECK(res[0].job_id == id);
  CHECK(res[0].request_id == "r1");
  CHECK(res[0].classes == d.classes);
  CHECK(res[0].output.data == d.output.data);
  CHECK(res[0].receipt.signature == d.receipt.signature);
  CHECK(verify::verify_receipt(res[0].receipt));
  REQUIRE(c.to_verification.size() == 1);
  const auto& x = c.to_verification[0];
  CHECK(x.job_id == id);
  CHECK(x.attempt == 0);
  CHECK(x.seq == 3);
  CHECK(x.client_id == "alice");
  CHECK(x.tier == "sampled");
  CHECK(x.receipt.signature == d.receipt.signature);
  CHECK(x.input.data == r.input.data);
  CHECK(h.core.job(id)->durable == job_state::executed);
  CHECK(h.core.held("alice") == 1000); // captured at settlement, not before
}

TEST_CASE("execution: a client gets the ACK of a request before its RESULT, however the commits are batched") {
  SUBCASE("the insert, the assignment and the result committed in one transaction") {
    harness h;
    provider p{"p1"};
    h.join(p, 1);
    const auto r = request("alice", "r1");
    auto e = h.submit(r, "c1");
    REQUIRE(transitions_to(e, job_state::assigned).size() == 1);
    // The provider answers before anything is confirmed; then one commit holds it all, in order.
    auto d = h.step(node_done{p.identity, done_for(order_of(1, 0, r, p.price), p)});
    REQUIRE(transitions_to(d, job_state::executed).size() == 1);
    append(e, d);
    auto c = h.step(all_ok(e));
    CHECK(commands_to(c, "c1") == std::vector<std::string>{"ACK", "RESULT"});
  }
  SUBCASE("many requests with commits delayed and merged") {
    harness h;
    provider p{"p1"};
    h.join(p, 2);
    effects log;       // every message, in the order produced
    effects pending;   // records not yet confirmed
    std::vector<proto::job_order> out;
    for (int i = 0; i < 6; ++i) {
      auto e = h.submit(request(i % 2 ? "bob" : "alice", "r" + std::to_string(i)), i % 2 ? "cb" : "ca");
      append(log, e);
      append(pending, e);
      if (i % 2 == 1) { // confirm every second step, all at once
        auto c = h.step(all_ok(pending));
        pending = {};
        append(log, c);
        append(pending, c);
        for (auto& j : jobs_to(c, p.identity))
          out.push_back(j);
      }
      while (!out.empty()) {
        auto d = h.step(node_done{p.identity, done_for(out.front(), p)});
        out.erase(out.begin());
        append(log, d);
        append(pending, d);
      }
    }
    for (int round = 0; round < 20 && !pending.records.empty(); ++round) {
      auto c = h.step(all_ok(pending));
      append(log, c);
      pending = c;
      for (auto& j : jobs_to(c, p.identity)) {
        auto d = h.step(node_done{p.identity, done_for(j, p)});
        append(log, d);
        append(pending, d);
      }
    }
    std::set<std::string> acked, answered;
    for (const auto& m : log.messages) {
      if (m.msg.command == proto::cmd::ack) {
        auto a = proto::parse_ack(m.msg).value();
        CHECK_FALSE(answered.count(a.request_id));
        acked.insert(a.request_id);
      } else if (m.msg.command == proto::cmd::result) {
        auto x = proto::parse_result(m.msg).value();
        CHECK(acked.count(x.request_id) == 1);
        CHECK(answered.insert(x.request_id).second); // one RESULT per request
      }
    }
    CHECK(acked.size() == 6);
    CHECK(answered.size() == 6);
  }
}

// ======================================================================================
// Duplicates from the store
// ======================================================================================

TEST_CASE("execution: an insert the store calls a duplicate answers the existing job and releases the hold") {
  harness h;
  provider p{"p1"};
  h.join(p, 1);
  const auto r = request("alice", "r1", 1000);
  auto e = h.submit(r, "c1");
  CHECK(h.core.held("alice") == 1000);
  REQUIRE(transitions_to(e, job_state::assigned).size() == 1); // it took p's only slot

  // The pair alice/r1 belongs to job 42, which ran and settled before a restart.
  const auto old = done_for(order_of(42, 0, r, 100), p);
  committed c;
  c.records = e.records;
  for (const auto& rec : e.records)
    c.outcomes.push_back(std::holds_alternative<job_insert>(rec)
                             ? duplicate_of({42, job_state::settled, result_of(old)})
                             : outcome{});
  auto out = h.step(c);
  CHECK(commands_to(out, "c1") == std::vector<std::string>{"ACK", "RESULT"});
  auto a = acks(out, "c1");
  REQUIRE(a.size() == 1);
  CHECK(a[0].job_id == 42);
  CHECK(a[0].request_id == "r1");
  auto res = results(out, "c1");
  REQUIRE(res.size() == 1);
  CHECK(res[0].job_id == 42);
  CHECK(res[0].receipt.signature == old.receipt.signature);
  CHECK(res[0].classes == old.classes);
  CHECK(count_cmd(out, proto::cmd::job) == 0); // the duplicate never runs
  CHECK(h.core.held("alice") == 0);
  CHECK(h.core.balance("alice") == faucet); // the grant was stored: it stays
  CHECK(h.core.open_jobs() == 0);
  CHECK(h.core.waiting() == 0);
  CHECK_FALSE(h.core.job(1).has_value());

  // p's slot came back: the next job is assigned to it.
  auto next = h.submit(request("alice", "r2"), "c1");
  auto ts = transitions_to(next, job_state::assigned);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].provider_key == p.key.public_key_hex);
}

TEST_CASE("execution: a duplicate without a result answers ACK, and the ERROR that ended it") {
  harness h;
  auto e1 = h.submit(request("alice", "r1", 100), "c1");
  auto e2 = h.submit(request("alice", "r2", 100), "c1");
  auto e3 = h.submit(request("alice", "r3", 100), "c1");
  CHECK(h.core.held("alice") == 300);
  auto first = h.step(confirm_one(records_of<job_insert>(e1)[0], duplicate_of({7, job_state::queued, {}})));
  CHECK(commands_to(first, "c1") == std::vector<std::string>{"ACK"});
  CHECK(acks(first, "c1")[0].job_id == 7);
  auto second = h.step(confirm_one(records_of<job_insert>(e2)[0], duplicate_of({8, job_state::expired, {}})));
  CHECK(commands_to(second, "c1") == std::vector<std::string>{"ACK", "ERROR"});
  CHECK(errors_to(second, "c1")[0].code == std::string(errc::expired));
  CHECK(errors_to(second, "c1")[0].job_id == 8);
  auto third = h.step(confirm_one(records_of<job_insert>(e3)[0], duplicate_of({9, job_state::failed, {}})));
  CHECK(errors_to(third, "c1")[0].code == std::string(errc::failed));
  CHECK(h.core.held("alice") == 0);
  CHECK(h.core.open_jobs() == 0);
}

TEST_CASE("execution: an insert the store rejects releases the hold and answers ERROR internal") {
  harness h;
  auto e = h.submit(request("alice", "r1", 700), "c1");
  outcome bad;
  bad.what = outcome::kind::rejected;
  bad.reason = "a check constraint";
  auto out = h.step(confirm_one(records_of<job_insert>(e)[0], bad));
  auto errs = errors_to(out, "c1");
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(errc::internal));
  CHECK(errs[0].request_id == "r1");
  CHECK(count_cmd(out, proto::cmd::ack) == 0);
  CHECK(out.errors.size() == 1);
  CHECK(h.core.held("alice") == 0);
  CHECK(h.core.open_jobs() == 0);
}

// ======================================================================================
// Admission refusals
// ======================================================================================

TEST_CASE("execution: a SUBMIT for an unknown model is refused with unknown_model and changes nothing") {
  harness h;
  h.admit(request("alice", "r0", 100), "c1");
  const auto before = books_of(h.core, "alice");
  auto r = request("alice", "r1");
  r.model = verify::sha256_hex("model B");
  check_refused_now(h.submit(r, "c1"), "c1", r, errc::unknown_model);
  check_unchanged(h.core, "alice", before);
}

TEST_CASE("execution: a SUBMIT whose input is not i8 [rows, input_dim] is refused with bad_input") {
  harness h;
  h.admit(request("alice", "r0", 100), "c1");
  const auto before = books_of(h.core, "alice");
  auto r = request("alice", "r1");
  SUBCASE("dtype i32") {
    r.input.type = kernels::dtype::i32;
    r.input.data.resize(static_cast<std::size_t>(input_dim) * 4);
  }
  SUBCASE("one dimension") { r.input.shape = {input_dim}; }
  SUBCASE("three dimensions") { r.input.shape = {1, input_dim, 1}; }
  SUBCASE("a wrong input_dim") { r.input = input_of("x", 1, input_dim + 1); }
  check_refused_now(h.submit(r, "c1"), "c1", r, errc::bad_input);
  check_unchanged(h.core, "alice", before);
}

TEST_CASE("execution: a SUBMIT with 0 or 65 rows is refused with bad_input; 1 and 64 rows are admitted") {
  harness h;
  h.admit(request("alice", "r0", 100), "c1");
  const auto before = books_of(h.core, "alice");
  for (std::int64_t rows : {0, 65}) {
    CAPTURE(rows);
    auto r = request("alice", "rows" + std::to_string(rows), 100, rows);
    check_refused_now(h.submit(r, "c1"), "c1", r, errc::bad_input);
    check_unchanged(h.core, "alice", before);
  }
  for (std::int64_t rows : {1, 64}) {
    CAPTURE(rows);
    auto e = h.submit(request("alice", "ok" + std::to_string(rows), 100, rows), "c1");
    CHECK(records_of<job_insert>(e).size() == 1);
  }
}

// queue_full is not final (the client resends later), so it is sent at once, without asking
// Postgres about the request id (docs/PROTOCOL.md, section 5.1).
TEST_CASE("execution: queue_full at max_waiting is sent at once, without a look-up, and changes nothing") {
  auto cfg = config();
  cfg.max_waiting = 2;
  harness h(cfg);
  h.admit(request("alice", "r1", 100), "ca");
  h.admit(request("bob", "r1", 100), "cb");
  const auto before = books_of(h.core, "carol");
  const auto r = request("carol", "r1", 100);
  check_refused_now(h.submit(r, "cc"), "cc", r, errc::queue_full);
  check_unchanged(h.core, "carol", before);
  CHECK(h.core.held("alice") == 100);
  CHECK(h.core.held("bob") == 100);
  CHECK(h.core.open_jobs() == 2);
  CHECK(h.core.balance("carol") == 0); // the refusal granted nothing
  // A resend of a request id the core holds is still answered, full queue or not.
  CHECK(acks(h.submit(request("alice", "r1", 100), "ca2"), "ca2").size() == 1);
}

TEST_CASE("execution: queue_full at the per-client limit refuses only that client") {
  auto cfg = config();
  cfg.max_client_waiting = 2;
  harness h(cfg);
  h.submit(request("alice", "r1", 100), "ca");
  h.submit(request("alice", "r2", 100), "ca");
  const auto before = books_of(h.core, "alice");
  const auto r = request("alice", "r3", 100);
  check_refused_now(h.submit(r, "ca"), "ca", r, errc::queue_full);
  check_unchanged(h.core, "alice", before);
  CHECK(records_of<job_insert>(h.submit(request("bob", "r1", 100), "cb")).size() == 1);
}

TEST_CASE("execution: a job that executed frees its place in the queue limits") {
  auto cfg = config();
  cfg.max_waiting = 1;
  harness h(cfg);
  provider p{"p1"};
  h.join(p, 1);
  effects all;
  h.admit(request("alice", "r1", 100), "ca", &all);
  const auto r2 = request("alice", "r2", 100);
  check_refused_now(h.submit(r2, "ca"), "ca", r2, errc::queue_full);
  h.deliver(p, only_job(all, p.identity));
  CHECK(h.core.waiting() == 0);
  CHECK(records_of<job_insert>(h.submit(request("alice", "r3", 100), "ca")).size() == 1);
}

TEST_CASE("execution: insufficient funds asks for the request id first, then refuses or answers") {
  harness h; // faucet 10 000
  h.admit(request("alice", "r1", 6000), "c1");
  const auto before = books_of(h.core, "alice");
  CHECK(before.held == 6000);
  const auto r = request("alice", "r2", 4001);
  auto e = h.submit(r, "c1");
  check_looked_up(e, "c1", r, errc::insufficient_funds);
  check_unchanged(h.core, "alice", before);

  SUBCASE("no job holds it: ERROR insufficient_funds") {
    auto f = h.step(request_found{"c1", "r2", std::nullopt, e.request_lookups[0].refusal, e.request_lookups[0].client_id});
    auto errs = errors_to(f, "c1");
    REQUIRE(errs.size() == 1);
    CHECK(errs[0].code == std::string(errc::insufficient_funds));
    CHECK(errs[0].request_id == "r2");
    CHECK(f.records.empty());
  }
  SUBCASE("a settled job holds it: its ACK and RESULT, nothing charged again") {
    provider p{"p9"};
    const auto old = done_for(order_of(5, 0, r, 100), p);
    auto f = h.step(request_found{"c1", "r2", existing_job{5, job_state::settled, result_of(old)},
                                  e.request_lookups[0].refusal, e.request_lookups[0].client_id});
    CHECK(commands_to(f, "c1") == std::vector<std::string>{"ACK", "RESULT"});
    CHECK(acks(f, "c1")[0].job_id == 5);
    CHECK(results(f, "c1")[0].receipt.signature == old.receipt.signature);
    CHECK(f.records.empty());
  }
  SUBCASE("a job that ended without a result holds it: its ACK and the ERROR that ended it") {
    auto f = h.step(request_found{"c1", "r2", existing_job{3, job_state::expired, {}}, e.request_lookups[0].refusal, e.request_lookups[0].client_id});
    CHECK(commands_to(f, "c1") == std::vector<std::string>{"ACK", "ERROR"});
    CHECK(acks(f, "c1")[0].job_id == 3);
    CHECK(errors_to(f, "c1")[0].code == std::string(errc::expired));
  }
  check_unchanged(h.core, "alice", before);
  // What is available is still admitted.
  CHECK(records_of<job_insert>(h.submit(request("alice", "r3", 4000), "c1")).size() == 1);
}

TEST_CASE("execution: past max_lookups an insufficient_funds is sent as it is") {
  auto cfg = config();
  cfg.max_lookups = 1;
  cfg.faucet = 0;
  harness h(cfg);
  const auto r1 = request("alice", "r1", 10);
  const auto r2 = request("alice", "r2", 10);
  auto e1 = h.submit(r1, "c1");
  check_looked_up(e1, "c1", r1, errc::insufficient_funds);
  check_refused_now(h.submit(r2, "c1"), "c1", r2, errc::insufficient_funds);
  h.step(request_found{"c1", "r1", std::nullopt, e1.request_lookups[0].refusal, e1.request_lookups[0].client_id});
  check_looked_up(h.submit(r2, "c1"), "c1", r2, errc::insufficient_funds);
}

TEST_CASE("execution: the faucet funds a never-funded client once, and a refused SUBMIT grants nothing") {
  harness h; // faucet 10 000
  const auto too_much = request("alice", "r1", faucet + 1);
  check_looked_up(h.submit(too_much, "c1"), "c1", too_much, errc::insufficient_funds);
  auto bad = request("alice", "r2");
  bad.model = verify::sha256_hex("no such model");
  check_refused_now(h.submit(bad, "c1"), "c1", bad, errc::unknown_model);
  CHECK(h.core.balance("alice") == 0);

  auto e = h.submit(request("alice", "r3", 1000), "c1");
  auto grants = records_of<transfer>(e);
  REQUIRE(grants.size() == 1);
  CHECK(grants[0].postings.back().account == "client:alice");
  CHECK(grants[0].postings.back().amount == faucet);
  CHECK(market::balanced(grants[0].postings));
  CHECK(grants[0].ref == "faucet:alice");
  CHECK(grants[0].at_us == t0);
  CHECK(std::holds_alternative<transfer>(e.records.front())); // before the job it pays for
  CHECK(h.core.balance("alice") == faucet);
  h.step(all_ok(e));

  auto again = h.submit(request("alice", "r4", 1000), "c1");
  CHECK(records_of<transfer>(again).empty());
  CHECK(records_of<job_insert>(again).size() == 1);
  CHECK(h.core.balance("alice") == faucet);
  CHECK(h.core.held("alice") == 2000);
  // Another client is funded on its own first SUBMIT.
  CHECK(records_of<transfer>(h.submit(request("bob", "r1", 1), "c2")).size() == 1);
}

TEST_CASE("execution: a faucet grant the store did not keep is taken back") {
  harness h;
  auto e = h.submit(request("alice", "r1", 1000), "c1");
  outcome bad;
  bad.what = outcome::kind::rejected;
  bad.reason = "no";
  auto out = h.step(confirm_one(records_of<transfer>(e)[0], bad));
  CHECK(out.errors.size() == 1);
  CHECK(h.core.balance("alice") == 0);
  // Not funded: the next SUBMIT asks for the grant again.
  CHECK(records_of<transfer>(h.submit(request("alice", "r2", 1), "c1")).size() == 1);
}

// ======================================================================================
// Accounts: the connection's key, deposits
// ======================================================================================

TEST_CASE("execution: a SUBMIT for another account, or from a connection with no key, is forbidden and changes nothing") {
  harness h;
  const auto r = request("alice", "r1");
  for (const auto& account : {std::string("mallory"), std::string()}) {
    auto e = h.step(client_submit{"c1", account, r});
    auto errs = errors_to(e, "c1");
    REQUIRE(errs.size() == 1);
    CHECK(errs[0].code == std::string(errc::forbidden));
    CHECK(errs[0].request_id == "r1");
    CHECK(e.records.empty());
    CHECK(e.request_lookups.empty());
  }
  CHECK(h.core.open_jobs() == 0);
  CHECK(h.core.balance("alice") == 0);
  CHECK(h.core.balance("mallory") == 0);
  // A SUBMIT that leaves client_id out is the connection's own.
  auto own = request("alice", "r2");
  own.client_id.clear();
  auto e = h.step(client_submit{"c1", "alice", own});
  REQUIRE(records_of<job_insert>(e).size() == 1);
  CHECK(records_of<job_insert>(e)[0].spec.client_id == "alice");
}

TEST_CASE("execution: only the admin account deposits; money counts once stored and once per request id") {
  execution_config cfg = config();
  cfg.faucet = 0;
  harness h{cfg};
  const auto alice = verify::sha256_hex("alice"); // an account id is a key, 64 hex characters
  const proto::deposit_request d{"d1", alice, 5000};

  auto refused = h.step(client_deposit{"m1", "mallory", d});
  REQUIRE(errors_to(refused, "m1").size() == 1);
  CHECK(errors_to(refused, "m1")[0].code == std::string(errc::forbidden));
  CHECK(refused.records.empty());

  auto e = h.step(client_deposit{"a1", "admin", d});
  auto f = records_of<transfer>(e);
  REQUIRE(f.size() == 1);
  CHECK(f[0].postings.back().account == "client:" + alice);
  CHECK(f[0].postings.back().amount == 5000);
  CHECK(f[0].ref == "deposit:d1");
  CHECK(count_cmd(e, proto::cmd::deposited) == 0); // persist before tell
  CHECK(h.core.balance(alice) == 0);              // nor spendable before it is stored
  // Resent before the commit: no second record; both are answered when it commits.
  auto resent = h.step(client_deposit{"a2", "admin", d});
  CHECK(resent.records.empty());
  CHECK(resent.messages.empty());
  auto done = h.step(all_ok(e));
  CHECK(count_cmd(done, proto::cmd::deposited, "a1") == 1);
  CHECK(count_cmd(done, proto::cmd::deposited, "a2") == 1);
  CHECK(h.core.balance(alice) == 5000);

  // Resent after it: answered `repeated`, nothing new.
  auto again = h.step(client_deposit{"a3", "admin", d});
  CHECK(again.records.empty());
  REQUIRE(count_cmd(again, proto::cmd::deposited, "a3") == 1);
  auto reply = proto::parse_deposited(again.messages[0].msg).value();
  CHECK(reply.repeated);
  CHECK(reply.balance == 5000);
  // The same id for another amount is a mistake, said so.
  auto other = h.step(client_deposit{"a4", "admin", proto::deposit_request{"d1", alice, 6000}});
  REQUIRE(errors_to(other, "a4").size() == 1);
  CHECK(errors_to(other, "a4")[0].code == std::string(errc::duplicate_request));
  CHECK(h.core.balance(alice) == 5000);
  // The deposit pays for jobs.
  CHECK(records_of<job_insert>(h.submit(request(alice, "r1", 5000), "c1")).size() == 1);
}

TEST_CASE("execution: a deposit the store refused is not credited and is said so; a recovered one is not made twice") {
  execution_config cfg = config();
  cfg.faucet = 0;
  harness h{cfg};
  const auto alice = verify::sha256_hex("alice"); // an account id is a key, 64 hex characters
  auto e = h.step(client_deposit{"a1", "admin", {"d1", alice, 5000}});
  outcome bad;
  bad.what = outcome::kind::rejected;
  bad.reason = "disk full";
  auto out = h.step(confirm_one(records_of<transfer>(e)[0], bad));
  REQUIRE(errors_to(out, "a1").size() == 1);
  CHECK(errors_to(out, "a1")[0].code == std::string(errc::internal));
  CHECK(h.core.balance(alice) == 0);
  // Not made: the same request id may be tried again.
  CHECK(records_of<transfer>(h.step(client_deposit{"a1", "admin", {"d1", alice, 5000}})).size() == 1);

  snapshot s;
  s.client_balances[alice] = 5000;
  s.deposits["deposit:d1"] = {"client:" + alice, 5000};
  harness r{execution_core::recover(cfg, s, t0), t0};
  auto replay = r.step(client_deposit{"a9", "admin", {"d1", alice, 5000}});
  CHECK(replay.records.empty());
  REQUIRE(count_cmd(replay, proto::cmd::deposited, "a9") == 1);
  CHECK(proto::parse_deposited(replay.messages[0].msg).value().repeated);
  CHECK(r.core.balance(alice) == 5000);
}

// ======================================================================================
// Holds
// ======================================================================================

TEST_CASE("execution: a client's hold is the sum of max_price over its open jobs, captured at settlement") {
  harness h;
  provider p{"p1", 50};
  h.join(p, 2);
  std::vector<proto::job_order> orders;
  micros sum = 0;
  for (micros price : {100, 250, 400}) {
    effects all;
    h.admit(request("alice", "r" + std::to_string(price), price), "ca", &all);
    for (auto& j : jobs_to(all, p.identity))
      orders.push_back(j);
    sum += price;
    CHECK(h.core.held("alice") == sum);
  }
  h.admit(request("bob", "r1", 300), "cb");
  CHECK(h.core.held("alice") == 750);
  CHECK(h.core.held("bob") == 300);
  CHECK(h.core.balance("alice") == faucet);
  REQUIRE(orders.size() == 2); // p's two slots: alice's first two jobs

  // Executed is still open: the hold stays until the block that settles it commits.
  h.deliver(p, orders[0]);
  CHECK(h.core.held("alice") == 750);
  h.step(jobs_settled{{settled(orders[0].job_id, "alice", 50, "", job_state::unsampled)}});
  CHECK(h.core.held("alice") == 650);
  CHECK(h.core.balance("alice") == faucet - 50);
  CHECK_FALSE(h.core.job(orders[0].job_id).has_value());

  // A disputed job settles charging nothing: only the hold goes, and its client is told.
  h.deliver(p, orders[1]);
  CHECK(count_cmd(h.step(jobs_settled{{settled(orders[0].job_id, "alice", 50, "", job_state::unsampled)}}),
                  proto::cmd::notice) == 0);
  auto told = h.step(jobs_settled{{settled(orders[1].job_id, "alice", 0, "", job_state::disputed)}});
  REQUIRE(count_cmd(told, proto::cmd::notice, "ca") == 1);
  auto notice = proto::parse_notice(told.messages[0].msg).value();
  CHECK(notice.job_id == orders[1].job_id);
  CHECK(notice.charged == 0);
  CHECK(h.core.held("alice") == 400);
  CHECK(h.core.balance("alice") == faucet - 50);
  // A settled job this core does not hold changes nothing.
  h.step(jobs_settled{{settled(999, "alice", 77, "", job_state::unsampled)}});
  CHECK(h.core.held("alice") == 400);
  CHECK(h.core.balance("alice") == faucet - 50);
  CHECK(h.core.held("bob") == 300);
}

// ======================================================================================
// Provider credit
// ======================================================================================

TEST_CASE("execution: a provider never has more JOBs out than its READY credit") {
  harness h;
  provider p{"p1"};
  h.join(p, 2);
  std::vector<proto::job_order> out;
  std::size_t assigned = 0;
  for (int i = 0; i < 5; ++i) {
    auto e = h.persisted(h.submit(request("alice", "r" + std::to_string(i), 100), "ca"));
    assigned += transitions_to(e, job_state::assigned).size();
    for (auto& j : jobs_to(e, p.identity))
      out.push_back(j);
  }
  CHECK(assigned == 2);
  CHECK(out.size() == 2);
  CHECK(h.core.waiting() == 5);

  // An accepted DONE returns its slot: one more JOB, not two.
  auto d = h.deliver(p, out[0]);
  out.erase(out.begin());
  CHECK(transitions_to(d, job_state::assigned).size() == 1);
  auto more = jobs_to(d, p.identity);
  REQUIRE(more.size() == 1);
  out.push_back(more[0]);
  CHECK(out.size() == 2);

  // READY raises the credit by what it says.
  auto r = h.persisted(h.step(node_ready{p.identity, 1}));
  CHECK(jobs_to(r, p.identity).size() == 1);
  CHECK(transitions_to(h.step(tick{}), job_state::assigned).empty());
  CHECK(h.core.waiting() == 4);
}

TEST_CASE("execution: a READY above max_credit is answered ERROR bad_input and clamped to it") {
  auto cfg = config();
  cfg.max_credit = 4;
  harness h(cfg);
  provider p{"p1"};
  auto first = h.join(p, 3);
  CHECK(errors_to(first, p.identity).empty());
  auto second = h.step(node_ready{p.identity, 3});
  auto errs = errors_to(second, p.identity);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(errc::bad_input));
  std::size_t assigned = 0;
  for (int i = 0; i < 6; ++i)
    assigned += transitions_to(h.submit(request("alice", "r" + std::to_string(i), 100), "ca"), job_state::assigned)
                    .size();
  CHECK(assigned == 4);
}

TEST_CASE("execution: the cheapest provider with credit, the model and a price within max_price gets the job") {
  harness h;
  provider cheap{"cheap", 80};
  provider dear{"dear", 500};
  provider other{"other", 10};
  other.models = {verify::sha256_hex("model B")};
  h.join(cheap, 1);
  h.join(dear, 1);
  h.join(other, 1);
  auto a = transitions_to(h.submit(request("alice", "r1", 1000), "ca"), job_state::assigned);
  REQUIRE(a.size() == 1);
  CHECK(a[0].provider_key == cheap.key.public_key_hex);
  CHECK(a[0].price == 80);
  // The cheap one is busy; a max_price below the dear one's price leaves the job queued.
  CHECK(transitions_to(h.submit(request("alice", "r2", 400), "ca"), job_state::assigned).empty());
  auto b = transitions_to(h.submit(request("alice", "r3", 500), "ca"), job_state::assigned);
  REQUIRE(b.size() == 1);
  CHECK(b[0].provider_key == dear.key.public_key_hex);
}

// ======================================================================================
// DONE checks
// ======================================================================================

TEST_CASE("execution: a DONE whose receipt does not check is refused and the job stays assigned") {
  harness h;
  provider p{"p1"};
  h.join(p, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1", 1000), "ca", &all);
  const auto order = only_job(all, p.identity);
  h.submit(request("alice", "r2", 1000), "ca"); // waits for p's slot
  auto d = done_for(order, p);
  const char* code = errc::bad_receipt;
  SUBCASE("a signature that does not verify") {
    d.receipt.finished_at_us += 1; // signed before this change
    code = errc::bad_signature;
  }
  SUBCASE("layer hashes whose Merkle root is not the signed trace root") {
    d.layer_hashes[1] = verify::sha256_hex("a layer the receipt does not commit");
  }
  SUBCASE("no layer hashes") { d.layer_hashes.clear(); }
  SUBCASE("a signature in another format") {
    d.receipt.signature[0] = d.receipt.signature[0] == 'a' ? 'b' : 'a';
    code = errc::bad_signature;
  }
  SUBCASE("signed by another key") { verify::sign_receipt(d.receipt, verify::generate_key_pair()); }
  SUBCASE("an output hash that is not the output's") {
    d.receipt.output_hash = verify::sha256_hex("some other output");
    verify::sign_receipt(d.receipt, p.key);
  }
  SUBCASE("an output that is not the one signed") { d.output.data[0] = static_cast<char>(d.output.data[0] + 1); }
  SUBCASE("classes that are not the arg-max of the output") {
    d.classes[0] = (d.classes[0] + 1) % 3;
  }
  SUBCASE("a price that is not the assignment's") {
    d.receipt.price = order.price + 1;
    verify::sign_receipt(d.receipt, p.key);
  }
  SUBCASE("an attempt in the receipt that is not the job's") {
    d.receipt.attempt = order.attempt + 1;
    verify::sign_receipt(d.receipt, p.key);
  }
  SUBCASE("an input hash of another input") {
    d.receipt.input_hash = verify::sha256_hex("another input");
    verify::sign_receipt(d.receipt, p.key);
  }
  SUBCASE("an output of the wrong shape") {
    d.output.shape = {1, 1, 3};
    d.receipt.output_hash = verify::sha256_hex(d.output.data);
    verify::sign_receipt(d.receipt, p.key);
  }
  SUBCASE("an output with a class fewer than the model gives, hash, classes and receipt consistent") {
    d.output = output_for(order, output_dim - 1);
    d.classes = {static_cast<std::int32_t>(order.job_id % (output_dim - 1))};
    d.receipt.output_hash = verify::sha256_hex(d.output.data);
    verify::sign_receipt(d.receipt, p.key);
  }
  SUBCASE("an output of another dtype") {
    d.output.type = kernels::dtype::i32;
    d.receipt.output_hash = verify::sha256_hex(d.output.data);
    verify::sign_receipt(d.receipt, p.key);
  }
  CAPTURE(code);
  auto e = h.step(node_done{p.identity, d});
  auto errs = errors_to(e, p.identity);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(code));
  CHECK(errs[0].job_id == id);
  CHECK(e.records.empty()); // no transition, and no slot came back for job 2
  CHECK(count_cmd(e, proto::cmd::result) == 0);
  CHECK(e.to_verification.empty());
  CHECK(h.core.job(id)->state == job_state::assigned);
  CHECK(h.core.job(id)->attempt == 0);

  // The same provider may still deliver a DONE that checks.
  auto good = h.persisted(h.step(node_done{p.identity, done_for(order, p)}));
  CHECK(transitions_to(good, job_state::executed).size() == 1);
  CHECK(results(good, "ca").size() == 1);
  CHECK(jobs_to(good, p.identity).size() == 1); // now job 2 gets the slot
}

TEST_CASE("execution: a DONE for another attempt or from another provider is answered unknown_job") {
  harness h;
  provider p{"p1", 100};
  provider q{"q1", 100};
  h.join(p, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1", 1000), "ca", &all);
  const auto order = only_job(all, p.identity);
  h.join(q, 1);

  // q signs a perfectly good receipt for p's job: not its job.
  auto from_q = h.step(node_done{q.identity, done_for(order, q)});
  auto errs = errors_to(from_q, q.identity);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(errc::unknown_job));
  CHECK(errs[0].job_id == id);
  CHECK(from_q.records.empty());

  // p answers an attempt that was never made.
  auto later = order;
  later.attempt = 1;
  auto wrong_attempt = h.step(node_done{p.identity, done_for(later, p)});
  errs = errors_to(wrong_attempt, p.identity);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(errc::unknown_job));
  CHECK(wrong_attempt.records.empty());

  // A job that does not exist.
  auto nothing = order;
  nothing.job_id = 12345;
  auto none = h.step(node_done{p.identity, done_for(nothing, p)});
  CHECK(errors_to(none, p.identity).at(0).code == std::string(errc::unknown_job));

  CHECK(h.core.job(id)->state == job_state::assigned);
  CHECK(h.core.job(id)->provider_key == p.key.public_key_hex);
  CHECK(transitions_to(h.step(node_done{p.identity, done_for(order, p)}), job_state::executed).size() == 1);
}

// ======================================================================================
// Attempts
// ======================================================================================

TEST_CASE("execution: a FAIL re-queues with attempt + 1, and the last attempt ends the job FAILED") {
  auto cfg = config();
  cfg.max_attempts = 3;
  harness h(cfg);
  provider p{"p1"};
  h.join(p, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1", 1000), "ca", &all);
  auto order = only_job(all, p.identity);
  std::int32_t seq = 2;
  for (std::int32_t attempt = 0; attempt < 2; ++attempt) {
    CAPTURE(attempt);
    REQUIRE(order.attempt == attempt);
    auto e = h.step(node_fail{p.identity, {id, attempt, "oom", "out of memory"}});
    auto ts = transitions(e);
    REQUIRE(ts.size() == 2); // back in the queue, and at once to p again (its slot came back)
    CHECK(ts[0].from == job_state::assigned);
    CHECK(ts[0].to == job_state::queued);
    CHECK(ts[0].attempt == attempt + 1);
    CHECK(ts[0].seq == seq + 1);
    CHECK(ts[1].to == job_state::assigned);
    CHECK(ts[1].attempt == attempt + 1);
    CHECK(ts[1].seq == seq + 2);
    seq += 2;
    CHECK(e.messages.empty()); // a FAIL gets no reply
    CHECK(h.core.job(id)->attempt == attempt + 1);
    order = only_job(h.confirm(e), p.identity);
    CHECK(order.attempt == attempt + 1);
  }
  auto last = h.step(node_fail{p.identity, {id, 2, "oom", "out of memory again"}});
  auto ts = transitions(last);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].from == job_state::assigned);
  CHECK(ts[0].to == job_state::failed);
  CHECK(ts[0].seq == seq + 1);
  CHECK(last.messages.empty());           // the client hears it after the commit
  CHECK(h.core.held("alice") == 1000);
  CHECK(h.core.waiting() == 0);

  auto c = h.step(all_ok(last));
  auto errs = errors_to(c, "ca");
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(errc::failed));
  CHECK(errs[0].job_id == id);
  CHECK(errs[0].request_id == "r1");
  CHECK(h.core.held("alice") == 0);
  CHECK(h.core.balance("alice") == faucet);
  CHECK_FALSE(h.core.job(id).has_value());
  CHECK(h.core.open_jobs() == 0);
}

TEST_CASE("execution: a FAIL for an attempt that is not current is ignored") {
  harness h;
  provider p{"p1"};
  h.join(p, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1"), "ca", &all);
  h.confirm(h.step(node_fail{p.identity, {id, 0, "x", "first"}}));
  REQUIRE(h.core.job(id)->attempt == 1);
  REQUIRE(h.core.job(id)->state == job_state::assigned);
  auto stale = h.step(node_fail{p.identity, {id, 0, "x", "again"}});
  CHECK(stale.records.empty());
  CHECK(stale.messages.empty());
  CHECK(h.core.job(id)->attempt == 1);
  CHECK(h.core.job(id)->state == job_state::assigned);
}

// ======================================================================================
// Liveness, DISCONNECT, re-HELLO, assignment timeout
// ======================================================================================

TEST_CASE("execution: a provider silent for more than three heartbeats is dropped and its jobs re-queued") {
  harness h;
  provider silent{"silent", 100};
  provider alive{"alive", 200};
  h.join(silent, 1);
  h.join(alive, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1", 1000), "ca", &all);
  REQUIRE(jobs_to(all, silent.identity).size() == 1); // the cheaper one

  h.now = t0 + 1000 * ms;
  h.step(node_heartbeat{alive.identity});
  h.now = t0 + liveness; // exactly three intervals: not yet
  auto not_yet = h.step(tick{});
  CHECK(transitions(not_yet).empty());
  CHECK(h.core.sessions() == 2);

  h.now = t0 + liveness + 1;
  auto e = h.step(tick{});
  CHECK(h.core.sessions() == 1);
  auto ts = transitions(e);
  REQUIRE(ts.size() == 2);
  CHECK(ts[0].to == job_state::queued);
  CHECK(ts[0].attempt == 1);
  CHECK(ts[1].to == job_state::assigned); // the live one had credit
  CHECK(ts[1].provider_key == alive.key.public_key_hex);
  CHECK(ts[1].attempt == 1);
  CHECK(count_cmd(e, proto::cmd::heartbeat, silent.identity) == 0);
  CHECK(h.core.job(id)->provider_key == alive.key.public_key_hex);
  // The dropped node's next message is answered not_registered.
  auto late = h.step(node_heartbeat{silent.identity});
  CHECK(errors_to(late, silent.identity).at(0).code == std::string(errc::not_registered));
}

TEST_CASE("execution: a DISCONNECT ends the session at once and re-queues its jobs") {
  harness h;
  provider p{"p1"};
  h.join(p, 2);
  effects all;
  const auto id = h.admit(request("alice", "r1"), "ca", &all);
  const auto order = only_job(all, p.identity);
  auto e = h.step(node_gone{p.identity, "bye"});
  CHECK(h.core.sessions() == 0);
  auto ts = transitions(e);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].to == job_state::queued);
  CHECK(ts[0].attempt == 1);
  CHECK(h.core.job(id)->state == job_state::queued);
  auto late = h.step(node_done{p.identity, done_for(order, p)});
  CHECK(errors_to(late, p.identity).at(0).code == std::string(errc::not_registered));
  CHECK(late.records.empty());
}

TEST_CASE("execution: a HELLO from the same key on a new identity replaces the session and re-queues") {
  harness h;
  provider p{"old-id"};
  h.join(p, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1"), "ca", &all);
  const auto order = only_job(all, p.identity);

  provider again = p;
  again.identity = "new-id";
  auto hello = h.step(node_hello{again.identity, caps_of(again)});
  CHECK(count_cmd(hello, proto::cmd::welcome, "new-id") == 1);
  CHECK(h.core.sessions() == 1);
  auto ts = transitions(hello);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].to == job_state::queued);
  CHECK(ts[0].attempt == 1);

  // The old identity has no session; the old attempt is not the job's any more.
  CHECK(errors_to(h.step(node_done{p.identity, done_for(order, p)}), p.identity).at(0).code ==
        errc::not_registered);
  CHECK(errors_to(h.step(node_done{again.identity, done_for(order, again)}), again.identity).at(0).code ==
        errc::unknown_job);
  // The new session starts without credit; its READY brings the job back to it, as attempt 1.
  auto ready = h.persisted(h.step(node_ready{again.identity, 1}));
  auto next = only_job(ready, again.identity);
  CHECK(next.job_id == id);
  CHECK(next.attempt == 1);
  CHECK(jobs_to(ready, p.identity).empty());
}

TEST_CASE("execution: a HELLO with another key on the same identity replaces the session too") {
  harness h;
  provider p{"conn"};
  h.join(p, 1);
  h.admit(request("alice", "r1"), "ca");
  provider other{"conn"}; // same connection, a new key
  auto hello = h.step(node_hello{other.identity, caps_of(other)});
  CHECK(h.core.sessions() == 1);
  CHECK(transitions_to(hello, job_state::queued).size() == 1);
}

TEST_CASE("execution: an assignment timeout re-queues the job of a provider that keeps heartbeating") {
  auto cfg = config();
  cfg.assign_timeout_ms = 2000;
  harness h(cfg);
  provider p{"p1"};
  h.join(p, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1"), "ca", &all);
  const auto order = only_job(all, p.identity);
  for (time_us at = 400 * ms; at < 2000 * ms; at += 400 * ms) {
    h.now = t0 + at;
    h.step(node_heartbeat{p.identity});
    CHECK(transitions(h.step(tick{})).empty());
  }
  h.now = t0 + 1999 * ms;
  CHECK(transitions(h.step(tick{})).empty());
  h.now = t0 + 2000 * ms;
  h.step(node_heartbeat{p.identity});
  auto e = h.step(tick{});
  CHECK(h.core.sessions() == 1);
  auto ts = transitions(e);
  REQUIRE(ts.size() == 1); // p keeps its slot until it answers attempt 0: not re-assigned yet
  CHECK(ts[0].to == job_state::queued);
  CHECK(ts[0].attempt == 1);
  h.step(all_ok(e));

  // The late DONE gets unknown_job, its slot comes back, and attempt 1 goes out on it.
  auto late = h.step(node_done{p.identity, done_for(order, p)});
  CHECK(errors_to(late, p.identity).at(0).code == std::string(errc::unknown_job));
  auto again = transitions_to(late, job_state::assigned);
  REQUIRE(again.size() == 1);
  CHECK(again[0].job_id == id);
  CHECK(again[0].attempt == 1);
}

// ======================================================================================
// Deadlines
// ======================================================================================

TEST_CASE("execution: a deadline passing while QUEUED expires the job; the client hears it after the commit") {
  harness h;
  h.admit(request("alice", "r1", 1000, 1, 1000), "ca");
  CHECK(h.core.held("alice") == 1000);
  h.now = t0 + 999 * ms;
  CHECK(h.step(tick{}).records.empty());
  h.now = t0 + 1000 * ms;
  auto e = h.step(tick{});
  auto ts = transitions(e);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].from == job_state::queued);
  CHECK(ts[0].to == job_state::expired);
  CHECK(ts[0].seq == 2);
  CHECK(e.messages.empty());
  CHECK(h.core.held("alice") == 1000); // released with the commit
  CHECK(h.core.waiting() == 0);
  auto c = h.step(all_ok(e));
  auto errs = errors_to(c, "ca");
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(errc::expired));
  CHECK(errs[0].job_id == 1);
  CHECK(errs[0].request_id == "r1");
  CHECK(h.core.held("alice") == 0);
  CHECK(h.core.balance("alice") == faucet);
  CHECK(h.core.open_jobs() == 0);
}

TEST_CASE("execution: a deadline passing while ASSIGNED expires the job, and the late DONE gets unknown_job") {
  harness h;
  provider p{"p1"};
  h.join(p, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1", 1000, 1, 1000), "ca", &all);
  const auto order = only_job(all, p.identity);
  h.now = t0 + 1000 * ms;
  h.step(node_heartbeat{p.identity});
  auto e = h.step(tick{});
  auto ts = transitions(e);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].from == job_state::assigned);
  CHECK(ts[0].to == job_state::expired);
  CHECK(count_cmd(e, proto::cmd::error, "ca") == 0);
  CHECK(h.core.held("alice") == 1000);
  auto c = h.step(all_ok(e));
  CHECK(errors_to(c, "ca").at(0).code == std::string(errc::expired));
  CHECK(h.core.held("alice") == 0);
  CHECK_FALSE(h.core.job(id).has_value());

  auto late = h.step(node_done{p.identity, done_for(order, p)});
  CHECK(errors_to(late, p.identity).at(0).code == std::string(errc::unknown_job));
  CHECK(late.records.empty());
  // Its slot came back with that answer.
  CHECK(transitions_to(h.submit(request("alice", "r2"), "ca"), job_state::assigned).size() == 1);
}

TEST_CASE("execution: a DONE after the deadline is refused with expired and the job EXPIRES, unpaid") {
  harness h;
  provider p{"p1"};
  h.join(p, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1", 1000, 1, 1000), "ca", &all);
  const auto order = only_job(all, p.identity);
  h.admit(request("alice", "r2", 1000), "ca"); // waits for the slot
  h.now = t0 + 1001 * ms;                        // no tick has run yet
  auto e = h.step(node_done{p.identity, done_for(order, p)});
  auto errs = errors_to(e, p.identity);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(errc::expired));
  CHECK(errs[0].job_id == id);
  CHECK(transitions_to(e, job_state::executed).empty());
  auto expired = transitions_to(e, job_state::expired);
  REQUIRE(expired.size() == 1);
  CHECK(expired[0].job_id == id);
  CHECK(transitions_to(e, job_state::assigned).size() == 1); // the slot came back: job 2 takes it
  CHECK(count_cmd(e, proto::cmd::result) == 0);
  auto c = h.step(all_ok(e));
  CHECK(errors_to(c, "ca").at(0).code == std::string(errc::expired));
  CHECK(results(c, "ca").empty());
  CHECK(c.to_verification.empty());
  CHECK(h.core.held("alice") == 1000); // only job 2's
}

TEST_CASE("execution: a deadline before the insert commits expires the job; the client gets ACK, then ERROR") {
  harness h;
  auto e = h.submit(request("alice", "r1", 1000, 1, 1000), "ca");
  h.now = t0 + 1000 * ms;
  auto t = h.step(tick{});
  auto ts = transitions(t);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].from == job_state::submitted);
  CHECK(ts[0].to == job_state::expired);
  append(e, t);
  auto c = h.step(all_ok(e));
  CHECK(commands_to(c, "ca") == std::vector<std::string>{"ACK", "ERROR"});
  CHECK(h.core.held("alice") == 0);
  CHECK(h.core.open_jobs() == 0);
}

// ======================================================================================
// Resends
// ======================================================================================

TEST_CASE("execution: a resend of a request id the core holds answers the new identity and creates nothing") {
  harness h;
  const auto r = request("alice", "r1", 1000);
  const auto id = h.admit(r, "c1");
  auto changed = r;
  changed.max_price = 5; // a resend's other fields do not change the job
  auto resend = h.submit(changed, "c2");
  CHECK(resend.records.empty());
  CHECK(resend.request_lookups.empty());
  CHECK(commands_to(resend, "c2") == std::vector<std::string>{"ACK"});
  CHECK(acks(resend, "c2")[0].job_id == id);
  CHECK(sent(resend, {}, "c1").empty());
  CHECK(h.core.open_jobs() == 1);
  CHECK(h.core.held("alice") == 1000);

  provider p{"p1"};
  auto ready = h.persisted(h.join(p, 1));
  auto done = h.deliver(p, only_job(ready, p.identity));
  CHECK(results(done, "c2").size() == 1);
  CHECK(sent(done, {}, "c1").empty()); // the old identity gets nothing more

  auto third = h.submit(r, "c3");
  CHECK(third.records.empty());
  CHECK(commands_to(third, "c3") == std::vector<std::string>{"ACK", "RESULT"});
  CHECK(results(third, "c3")[0].receipt.signature == results(done, "c2")[0].receipt.signature);
  CHECK(h.core.open_jobs() == 1);
  CHECK(h.core.held("alice") == 1000);
}

TEST_CASE("execution: a resend while the RESULT is not yet stored gets the ACK now and the RESULT on commit") {
  harness h;
  provider p{"p1"};
  h.join(p, 1);
  effects all;
  const auto r = request("alice", "r1");
  const auto id = h.admit(r, "c1", &all);
  auto done = h.step(node_done{p.identity, done_for(only_job(all, p.identity), p)});
  REQUIRE(transitions_to(done, job_state::executed).size() == 1);
  auto resend = h.submit(r, "c2");
  CHECK(commands_to(resend, "c2") == std::vector<std::string>{"ACK"}); // EXECUTED is not durable yet
  CHECK(acks(resend, "c2")[0].job_id == id);
  auto c = h.step(all_ok(done));
  CHECK(results(c, "c2").size() == 1);
  CHECK(sent(c, {}, "c1").empty());
}

TEST_CASE("execution: a resend before the insert commits moves the ACK to the new identity") {
  harness h;
  const auto r = request("alice", "r1");
  auto e = h.submit(r, "c1");
  auto resend = h.submit(r, "c2");
  CHECK(resend.records.empty());
  CHECK(resend.messages.empty());
  auto c = h.step(all_ok(e));
  CHECK(acks(c, "c2").size() == 1);
  CHECK(sent(c, {}, "c1").empty());
}

// ======================================================================================
// Recovery
// ======================================================================================

namespace {

struct recovered_world {
  provider p{"p-back", 100};      // held job 11 before the restart
  snapshot snap;
  proto::job_done result12;
  time_us at = t0 + 5000 * ms;
};

recovered_world recovered() {
  recovered_world w;
  auto& s = w.snap;
  s.client_balances = {{"alice", 5000}, {"bob", 2000}};
  s.funded = {"alice", "bob"};
  s.next_job_id = 100;
  s.open_jobs.push_back(stored(10, "alice", job_state::queued, 300));
  auto assigned = stored(11, "alice", job_state::assigned, 400);
  assigned.attempt = 1;
  assigned.seq = 4;
  assigned.provider_key = w.p.key.public_key_hex;
  assigned.price = 100;
  s.open_jobs.push_back(assigned);
  auto executed = stored(12, "bob", job_state::executed, 500);
  executed.seq = 3;
  w.result12 = done_for(order_of(12, 0, request("bob", "x"), 100), w.p);
  executed.result = result_of(w.result12);
  s.open_jobs.push_back(executed);
  auto unsampled = stored(13, "bob", job_state::unsampled, 600);
  unsampled.seq = 4;
  s.open_jobs.push_back(unsampled);
  s.open_jobs.push_back(stored(14, "alice", job_state::failed, 900)); // final: not open
  return w;
}

} // namespace

TEST_CASE("execution recovery rebuilds jobs, holds and balances exactly") {
  auto w = recovered();
  auto c = execution_core::recover(config(), w.snap, w.at);
  CHECK(c.open_jobs() == 4);
  CHECK(c.waiting() == 2);
  CHECK(c.held("alice") == 700);
  CHECK(c.held("bob") == 1100);
  CHECK(c.balance("alice") == 5000);
  CHECK(c.balance("bob") == 2000);
  CHECK(c.sessions() == 0);
  REQUIRE(c.job(11).has_value());
  CHECK(c.job(11)->state == job_state::assigned);
  CHECK(c.job(11)->durable == job_state::assigned);
  CHECK(c.job(11)->attempt == 1);
  CHECK(c.job(11)->provider_key == w.p.key.public_key_hex);
  CHECK(c.job(12)->state == job_state::executed);
  CHECK_FALSE(c.job(14).has_value());

  harness h(std::move(c), w.at);
  // Funded before: no second grant; ids continue after the stored ones.
  auto e = h.submit(request("alice", "new", 100), "ca");
  CHECK(records_of<transfer>(e).empty());
  REQUIRE(records_of<job_insert>(e).size() == 1);
  CHECK(records_of<job_insert>(e)[0].spec.id == 100);
  CHECK(h.core.held("alice") == 800);
  // Settling a recovered job captures its escrow.
  h.step(jobs_settled{{settled(13, "bob", 100, "", job_state::unsampled)}});
  CHECK(h.core.held("bob") == 500);
  CHECK(h.core.balance("bob") == 1900);
}

TEST_CASE("execution recovery: QUEUED jobs are assigned once a provider says READY") {
  auto w = recovered();
  harness h(execution_core::recover(config(), w.snap, w.at), w.at);
  provider q{"q1", 100};
  auto ready = h.join(q, 1);
  auto ts = transitions_to(ready, job_state::assigned);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].job_id == 10);
  CHECK(ts[0].seq == 2); // after the stored seq 1
  CHECK(ts[0].from == job_state::queued);
  auto order = only_job(h.confirm(ready), q.identity);
  CHECK(order.job_id == 10);
  CHECK(order.input.data == w.snap.open_jobs[0].spec.input.data);
}

TEST_CASE("execution recovery: an ASSIGNED job is re-queued after the liveness timeout") {
  auto w = recovered();
  harness h(execution_core::recover(config(), w.snap, w.at), w.at);
  CHECK(h.step(tick{}).wake_at_us == w.at + liveness);
  // Its provider comes back and heartbeats, but delivers nothing.
  h.join(w.p, 0);
  h.now = w.at + liveness - 1;
  h.step(node_heartbeat{w.p.identity});
  CHECK(transitions(h.step(tick{})).empty());
  h.now = w.at + liveness;
  h.step(node_heartbeat{w.p.identity});
  auto e = h.step(tick{});
  auto ts = transitions(e);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].job_id == 11);
  CHECK(ts[0].from == job_state::assigned);
  CHECK(ts[0].to == job_state::queued);
  CHECK(ts[0].attempt == 2);
  CHECK(ts[0].seq == 5);
  // Its DONE for attempt 1 now gets unknown_job.
  auto late = h.step(node_done{w.p.identity, done_for(order_of(11, 1, {}, 100), w.p)});
  CHECK(errors_to(late, w.p.identity).at(0).code == std::string(errc::unknown_job));
}

TEST_CASE("execution recovery: an ASSIGNED job whose provider returns and delivers in time is executed") {
  auto w = recovered();
  harness h(execution_core::recover(config(), w.snap, w.at), w.at);
  h.now = w.at + 200 * ms;
  h.join(w.p, 0);
  const auto& spec = w.snap.open_jobs[1].spec;
  proto::job_order order{11, 1, spec.model, 100, spec.input};
  auto e = h.step(node_done{w.p.identity, done_for(order, w.p)});
  CHECK(errors_to(e, w.p.identity).empty());
  auto ts = transitions(e);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].to == job_state::executed);
  CHECK(ts[0].seq == 5);
  CHECK(ts[0].attempt == 1);
  auto c = h.step(all_ok(e));
  REQUIRE(c.to_verification.size() == 1);
  CHECK(c.to_verification[0].job_id == 11);
  CHECK(c.to_verification[0].input.data == spec.input.data);
  // Past the old liveness deadline nothing re-queues it.
  h.now = w.at + liveness + 1;
  h.step(node_heartbeat{w.p.identity});
  CHECK(transitions(h.step(tick{})).empty());
  CHECK(h.core.job(11)->state == job_state::executed);
}

TEST_CASE("execution recovery: a provider losing its session again re-queues its recovered jobs at once") {
  auto w = recovered();
  harness h(execution_core::recover(config(), w.snap, w.at), w.at);
  h.join(w.p, 0);
  auto gone = h.step(node_gone{w.p.identity, "bye"});
  auto ts = transitions(gone);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].job_id == 11);
  CHECK(ts[0].to == job_state::queued);
}

TEST_CASE("execution recovery: a resend of a recovered EXECUTED job gets its ACK and stored RESULT") {
  auto w = recovered();
  harness h(execution_core::recover(config(), w.snap, w.at), w.at);
  auto r = request("bob", "req-12");
  auto e = h.submit(r, "cb");
  CHECK(e.records.empty());
  CHECK(commands_to(e, "cb") == std::vector<std::string>{"ACK", "RESULT"});
  CHECK(acks(e, "cb")[0].job_id == 12);
  CHECK(results(e, "cb")[0].receipt.signature == w.result12.receipt.signature);
  // A recovered QUEUED one: ACK only.
  auto q = h.submit(request("alice", "req-10"), "ca");
  CHECK(commands_to(q, "ca") == std::vector<std::string>{"ACK"});
  CHECK(acks(q, "ca")[0].job_id == 10);
}

// ======================================================================================
// Drain
// ======================================================================================

TEST_CASE("execution: drain refuses new SUBMITs with unavailable and still answers resends") {
  harness h;
  const auto r = request("alice", "r1");
  const auto id = h.admit(r, "ca");
  CHECK_FALSE(h.core.drained());
  auto d = h.step(drain{});
  CHECK(d.notes.size() == 1);
  const auto before = books_of(h.core, "alice");
  const auto fresh = request("alice", "r2");
  check_refused_now(h.submit(fresh, "ca"), "ca", fresh, errc::unavailable);
  const auto stranger = request("zed", "r1");
  check_refused_now(h.submit(stranger, "cz"), "cz", stranger, errc::unavailable);
  check_unchanged(h.core, "alice", before);
  CHECK(h.core.balance("zed") == 0);
  auto resend = h.submit(r, "ca2");
  CHECK(acks(resend, "ca2").at(0).job_id == id);
}

TEST_CASE("execution: while draining nothing is assigned, and drained() turns true once no job is out") {
  harness h;
  provider p{"p1"};
  provider q{"q1"};
  h.join(p, 1);
  effects all;
  h.admit(request("alice", "r1"), "ca", &all);
  const auto order = only_job(all, p.identity);
  h.admit(request("alice", "r2"), "ca"); // queued: p has no credit left
  h.step(drain{});
  CHECK_FALSE(h.core.drained()); // job 1 is with p
  auto ready = h.join(q, 4);
  CHECK(transitions(ready).empty()); // q has credit, but nothing is assigned while draining
  auto e = h.step(node_done{p.identity, done_for(order, p)});
  CHECK(transitions_to(e, job_state::executed).size() == 1);
  CHECK(transitions_to(e, job_state::assigned).empty());
  CHECK_FALSE(h.core.drained()); // EXECUTED is not committed yet
  h.step(all_ok(e));
  CHECK(h.core.drained()); // job 2 stays QUEUED, stored
  auto bye = h.core.farewell();
  REQUIRE(bye.size() == 2);
  std::set<std::string> to;
  for (const auto& m : bye) {
    CHECK(m.to == port::node);
    CHECK(m.msg.command == proto::cmd::disconnect);
    to.insert(m.identity);
  }
  CHECK(to == std::set<std::string>{"p1", "q1"});
}

TEST_CASE("execution: drained() is false while an admitted job's insert is not committed") {
  harness h;
  auto e = h.submit(request("alice", "r1"), "ca");
  h.step(drain{});
  CHECK_FALSE(h.core.drained());
  h.step(all_ok(e));
  CHECK(h.core.drained());
}

// ======================================================================================
// Timers, sessions, look-ups
// ======================================================================================

TEST_CASE("execution: wake_at_us follows sessions, deadlines and assignment timeouts") {
  auto cfg = config();
  cfg.assign_timeout_ms = 300;
  harness h(cfg);
  CHECK(h.step(tick{}).wake_at_us == 0); // nothing to watch (this tick also starts the heartbeat clock)
  auto e = h.submit(request("alice", "r1", 100, 1, 5000), "ca");
  CHECK(e.wake_at_us == t0 + 5000 * ms); // the deadline
  h.step(all_ok(e));

  provider p{"p1"};
  auto hello = h.step(node_hello{p.identity, caps_of(p)});
  CHECK(hello.wake_at_us == t0 + 500 * ms); // a session: the next heartbeat
  h.now = t0 + 100 * ms;
  auto t = h.step(tick{});
  CHECK(count_cmd(t, proto::cmd::heartbeat, p.identity) == 0); // not due yet
  CHECK(t.wake_at_us == t0 + 500 * ms);
  h.now = t0 + 500 * ms;
  t = h.step(tick{});
  CHECK(count_cmd(t, proto::cmd::heartbeat, p.identity) == 1);
  CHECK(t.wake_at_us == t0 + 1000 * ms);
  h.step(node_heartbeat{p.identity});
  auto r = h.step(node_ready{p.identity, 1}); // job 1 assigned now: it times out at t0 + 800 ms
  CHECK(transitions_to(r, job_state::assigned).size() == 1);
  CHECK(r.wake_at_us == t0 + 800 * ms);
  h.step(node_gone{p.identity, "bye"});
  // No session, nothing assigned: the deadline again.
  CHECK(h.step(tick{}).wake_at_us == t0 + 5000 * ms);
}

TEST_CASE("execution: a fresh core's first session asks for a wake-up at once or within a heartbeat") {
  harness h;
  provider p{"p1"};
  auto hello = h.step(node_hello{p.identity, caps_of(p)});
  CHECK(hello.wake_at_us > 0);
  CHECK(hello.wake_at_us <= t0 + 500 * ms);
  auto t = h.step(tick{});
  CHECK(count_cmd(t, proto::cmd::heartbeat, p.identity) == 1);
  CHECK(t.wake_at_us == t0 + 500 * ms);
}

TEST_CASE("execution: READY, HEARTBEAT, DONE and FAIL from a node without a session get not_registered") {
  harness h;
  provider p{"nobody"};
  for (auto e : {h.step(node_ready{p.identity, 1}), h.step(node_heartbeat{p.identity}),
                 h.step(node_done{p.identity, done_for(order_of(1, 0, request("a", "b"), 100), p)}),
                 h.step(node_fail{p.identity, {1, 0, "x", "y"}})}) {
    auto errs = errors_to(e, p.identity);
    REQUIRE(errs.size() == 1);
    CHECK(errs[0].code == std::string(errc::not_registered));
    CHECK(e.records.empty());
  }
  CHECK(h.core.sessions() == 0);
}

TEST_CASE("execution: a verifier's HELLO is admitted here and handed to the verification core; another role is refused") {
  harness h;
  provider v{"v1"};
  auto e = h.step(node_hello{v.identity, caps_of(v, "verifier")});
  CHECK(errors_to(e, v.identity).empty());
  REQUIRE(e.admitted_verifiers.size() == 1);
  CHECK(e.admitted_verifiers[0].identity == v.identity);
  CHECK(count_cmd(e, proto::cmd::welcome) == 0); // the verification core welcomes it
  CHECK(h.core.sessions() == 0);                 // no provider session
  CHECK(h.core.stakes().present(v.key.public_key_hex));

  provider x{"x1"};
  auto odd = h.step(node_hello{x.identity, caps_of(x, "auditor")});
  CHECK(errors_to(odd, x.identity).at(0).code == std::string(errc::bad_input));
  CHECK(odd.admitted_verifiers.empty());
  CHECK(odd.records.empty());
}

TEST_CASE("execution: a STATUS is answered from Postgres through a look-up, never from memory") {
  harness h;
  const auto id = h.admit(request("alice", "r1"), "ca");
  auto e = h.step(client_query{"cs", "alice", id});
  CHECK(e.messages.empty());
  CHECK(e.records.empty());
  REQUIRE(e.lookups.size() == 1);
  CHECK(e.lookups[0].identity == "cs");
  CHECK(e.lookups[0].account == "alice"); // the reader answers only the job's own account
  CHECK(e.lookups[0].job_id == id);
}

TEST_CASE("execution: while draining a lost job goes back to the queue, not to another provider") {
  harness h;
  provider p{"p1", 100};
  provider q{"q1", 200};
  h.join(p, 1);
  h.join(q, 1);
  effects all;
  const auto id = h.admit(request("alice", "r1"), "ca", &all);
  REQUIRE(jobs_to(all, p.identity).size() == 1);
  h.step(drain{});
  auto e = h.step(node_fail{p.identity, {id, 0, "x", "failed"}});
  CHECK(transitions_to(e, job_state::queued).size() == 1);
  CHECK(transitions_to(e, job_state::assigned).empty()); // q has credit, but nothing is assigned now
  CHECK_FALSE(h.core.drained());
  h.step(all_ok(e));
  CHECK(h.core.drained());
}

// A SUBMIT refused for funds asks Postgres about its request id. If the client resends that
// request id while the look-up is in flight, and the resend is admitted (a hold was released
// meanwhile), the look-up's answer ("no stored job") is stale and must not refuse it.
TEST_CASE("execution: a look-up's answer does not refuse a request id admitted while it was in flight") {
  harness h; // faucet 10 000
  h.admit(request("alice", "r1", 6000, 1, 1000), "c1");
  const auto r2 = request("alice", "r2", 6000);
  auto e = h.submit(r2, "c1");
  check_looked_up(e, "c1", r2, errc::insufficient_funds);

  // While Postgres is asked, job 1 expires and its hold is released ...
  h.now = t0 + 1000 * ms;
  h.confirm(h.step(tick{}));
  REQUIRE(h.core.held("alice") == 0);
  // ... and the client resends r2 on the same connection, which the protocol allows: admitted.
  auto resend = h.persisted(h.submit(r2, "c1"));
  auto a = acks(resend, "c1");
  REQUIRE(a.size() == 1);
  REQUIRE(h.core.held("alice") == 6000);

  // The look-up answers: Postgres had no job for r2 when it read.
  auto f = h.step(request_found{"c1", "r2", std::nullopt, e.request_lookups[0].refusal, "alice"});
  for (const auto& err : errors_to(f, "c1")) {
    CAPTURE(err.reason);
    CHECK(err.code != std::string(errc::insufficient_funds));
  }
  for (const auto& ack : acks(f, "c1"))
    CHECK(ack.job_id == a[0].job_id);
}

TEST_CASE("execution: a look-up's answer is stale even when the request id admitted meanwhile has ended and left") {
  harness h; // faucet 10 000
  h.admit(request("alice", "r1", 6000, 1, 1000), "c1");
  const auto r2 = request("alice", "r2", 6000, 1, 1000);
  auto e = h.submit(r2, "c1");
  check_looked_up(e, "c1", r2, errc::insufficient_funds);
  h.now = t0 + 1000 * ms; // job 1 expires: funds come back
  h.confirm(h.step(tick{}));
  auto resend = h.persisted(h.submit(r2, "c1"));
  auto a = acks(resend, "c1");
  REQUIRE(a.size() == 1);
  h.now = t0 + 2000 * ms; // the resend expires too, and leaves memory
  auto ended = h.confirm(h.step(tick{}));
  REQUIRE(errors_to(ended, "c1").size() == 1);
  CHECK(errors_to(ended, "c1")[0].code == std::string(errc::expired));
  REQUIRE_FALSE(h.core.job(a[0].job_id));

  // Postgres read before the resend was stored: no job for r2. That is no longer true.
  auto f = h.step(request_found{"c1", "r2", std::nullopt, e.request_lookups[0].refusal, "alice"});
  CHECK(errors_to(f, "c1").empty());
  CHECK(acks(f, "c1").empty());
}

TEST_CASE("execution: a lost dispute lowers a provider's reputation; matching prefers the better one and keeps a floor") {
  auto cfg = config();
  cfg.min_reputation = 500;
  harness h(cfg);
  provider p1{"p1"}, p2{"p2"}; // the same price
  CHECK(h.core.reputation_of(p1.key.public_key_hex) == 1000);
  // p1 is caught once: its reputation falls below the floor.
  h.step(jobs_settled{{settled(77, "alice", 0, p1.key.public_key_hex, job_state::disputed)}});
  CHECK(h.core.reputation_of(p1.key.public_key_hex) == 90);
  h.join(p1, 4);
  h.join(p2, 1);
  effects all;
  h.admit(request("alice", "r1", 1000), "ca", &all);
  CHECK(jobs_to(all, p2.identity).size() == 1); // p2: equal price, better reputation
  CHECK(jobs_to(all, p1.identity).empty());
  // p2 has no credit left; p1 has credit but is below the floor: the job waits.
  effects second;
  const auto id2 = h.admit(request("alice", "r2", 1000), "ca", &second);
  CHECK(jobs_to(second, p1.identity).empty());
  CHECK(h.core.job(id2)->state == job_state::queued);
  // Verified jobs bring it back: (v + 1) / (v + 1 + 10) >= 0.5 from v = 10.
  for (int i = 0; i < 10; ++i)
    h.step(jobs_settled{{settled(1000 + i, "alice", 10, p1.key.public_key_hex, job_state::verified)}});
  CHECK(h.core.reputation_of(p1.key.public_key_hex) == 523);
  // Unsampled jobs say nothing about it.
  h.step(jobs_settled{{settled(2000, "alice", 10, p1.key.public_key_hex, job_state::unsampled)}});
  CHECK(h.core.reputation_of(p1.key.public_key_hex) == 523);
}

TEST_CASE("execution: reputations are rebuilt from the settled verdicts of the snapshot") {
  snapshot s;
  const auto k = verify::generate_key_pair().public_key_hex;
  s.provider_verdicts[k] = {99, 1};
  auto c = execution_core::recover(config(), s, t0);
  CHECK(c.reputation_of(k) == 909);
  CHECK(c.reputation_of("someone new") == 1000);
}

// ======================================================================================
// Stake: held when a node joins, released after a cool-down, slashed after a ruling
// ======================================================================================

namespace {

constexpr micros min_stake = 1000;

execution_config staked_config() {
  execution_config cfg = config();
  cfg.stake = {min_stake, 5000};
  return cfg;
}

// The one transfer of `e` with this ref prefix ("stake:", "unstake:", "slash:<job>:provider").
transfer only_transfer(const effects& e, const std::string& prefix) {
  std::vector<transfer> found;
  for (const auto& t : records_of<transfer>(e))
    if (t.ref.rfind(prefix, 0) == 0)
      found.push_back(t);
  REQUIRE(found.size() == 1);
  CHECK(market::balanced(found[0].postings));
  return found[0];
}

micros amount_to(const transfer& t, const std::string& account) {
  micros sum = 0;
  for (const auto& p : t.postings)
    if (p.account == account)
      sum += p.amount;
  return sum;
}

// Funds a node's account through a committed DEPOSIT.
void fund_node(harness& h, const provider& p, micros amount) {
  auto e = h.step(client_deposit{"admin-conn", "admin", {"fund-" + p.identity, p.key.public_key_hex, amount, "node"}});
  auto done = h.step(all_ok(e));
  REQUIRE(count_cmd(done, proto::cmd::deposited) == 1);
}

// A node joins with its stake held: the HELLO's hold, committed.
effects join_staked(harness& h, const provider& p, const std::string& role = "provider") {
  auto hello = h.step(node_hello{p.identity, caps_of(p, role)});
  CHECK(count_cmd(hello, proto::cmd::welcome) == 0);
  CHECK(hello.admitted_verifiers.empty());
  only_transfer(hello, "stake:");
  return h.persisted(h.step(all_ok(hello)));
}

settled_job judged_against(const provider& provider_node, std::int64_t job, micros price, ruling_parties r) {
  auto s = settled(job, "alice", 0, provider_node.key.public_key_hex,
                   r.provider_lost ? job_state::disputed : job_state::verified);
  s.price = price;
  s.ruling = std::move(r);
  return s;
}

} // namespace

TEST_CASE("stake: a node joins only once its stake is held from its account; without the money it is refused") {
  harness h{staked_config()};
  provider p{"p1"};
  const auto key = p.key.public_key_hex;

  auto broke = h.step(node_hello{p.identity, caps_of(p)});
  REQUIRE(errors_to(broke, p.identity).size() == 1);
  CHECK(errors_to(broke, p.identity)[0].code == std::string(errc::insufficient_funds));
  CHECK(broke.records.empty());
  CHECK(h.core.sessions() == 0);

  fund_node(h, p, 2500);
  CHECK(h.core.stakes().balance(key) == 2500);
  auto hello = h.step(node_hello{p.identity, caps_of(p)});
  const auto hold = only_transfer(hello, "stake:" + key);
  CHECK(amount_to(hold, market::provider_account(key)) == -min_stake);
  CHECK(amount_to(hold, market::stake_account(key)) == min_stake);
  CHECK(count_cmd(hello, proto::cmd::welcome) == 0); // persist before tell
  CHECK(h.core.sessions() == 0);
  // A second HELLO while the hold is in flight holds nothing more; both are answered by its commit.
  auto again = h.step(node_hello{p.identity, caps_of(p)});
  CHECK(again.records.empty());
  auto welcomed = h.step(all_ok(hello));
  CHECK(count_cmd(welcomed, proto::cmd::welcome, p.identity) >= 1);
  CHECK(h.core.sessions() == 1);
  CHECK(h.core.stakes().staked(key) == min_stake);
  CHECK(h.core.stakes().balance(key) == 2500 - min_stake);
  // Reconnecting with the stake in place holds nothing.
  auto back = h.step(node_hello{p.identity, caps_of(p)});
  CHECK(records_of<transfer>(back).empty());
  CHECK(count_cmd(back, proto::cmd::welcome, p.identity) == 1);

  // A verifier the same way; once held it is handed to the verification core.
  provider v{"v1"};
  fund_node(h, v, min_stake);
  auto vh = h.step(node_hello{v.identity, caps_of(v, "verifier")});
  CHECK(vh.admitted_verifiers.empty());
  auto vdone = h.step(all_ok(vh));
  REQUIRE(vdone.admitted_verifiers.size() == 1);
  CHECK(h.core.stakes().staked(v.key.public_key_hex) == min_stake);
  CHECK(h.core.stakes().balance(v.key.public_key_hex) == 0);
}

TEST_CASE("stake: a hold the store did not keep is taken back and its HELLO refused") {
  harness h{staked_config()};
  provider p{"p1"};
  fund_node(h, p, min_stake);
  auto hello = h.step(node_hello{p.identity, caps_of(p)});
  outcome bad;
  bad.what = outcome::kind::rejected;
  bad.reason = "disk full";
  auto out = h.step(confirm_one(only_transfer(hello, "stake:"), bad));
  CHECK(count_cmd(out, proto::cmd::welcome) == 0);
  CHECK(errors_to(out, p.identity).size() == 1);
  CHECK(h.core.sessions() == 0);
  CHECK(h.core.stakes().staked(p.key.public_key_hex) == 0);
  CHECK(h.core.stakes().balance(p.key.public_key_hex) == min_stake);
}

TEST_CASE("stake: released to the account after the node left and the cool-down passed, not before") {
  harness h{staked_config()};
  provider p{"p1"};
  const auto key = p.key.public_key_hex;
  fund_node(h, p, min_stake);
  join_staked(h, p);
  h.now += 60'000 * ms; // connected for a long time: nothing is released while it stays
  h.step(node_heartbeat{p.identity});
  CHECK(records_of<transfer>(h.step(tick{})).empty());

  h.step(node_gone{p.identity, "bye"});
  h.now += 4999 * ms;
  CHECK(records_of<transfer>(h.step(tick{})).empty());
  h.now += 1 * ms;
  auto released = h.step(tick{});
  const auto t = only_transfer(released, "unstake:" + key);
  CHECK(amount_to(t, market::stake_account(key)) == -min_stake);
  CHECK(h.core.stakes().staked(key) == 0);
  CHECK(h.core.stakes().balance(key) == min_stake);
  CHECK(records_of<transfer>(h.step(tick{})).empty()); // once

  // A verifier's cool-down starts when the verification core says it left.
  provider v{"v1"};
  fund_node(h, v, min_stake);
  join_staked(h, v, "verifier");
  h.now += 10'000 * ms;
  CHECK(records_of<transfer>(h.step(tick{})).empty());
  h.step(node_left{v.key.public_key_hex, "verifier"});
  h.now += 5000 * ms;
  only_transfer(h.step(tick{}), "unstake:" + v.key.public_key_hex);
}

TEST_CASE("stake: a ruling is paid from the loser's stake, as far as it goes; a provider below the minimum tops up or is dropped") {
  harness h{staked_config()};
  provider p{"p1"}, v{"v1"}, liar{"v2"};
  const auto pk = p.key.public_key_hex, vk = v.key.public_key_hex, lk = liar.key.public_key_hex;
  for (auto* n : {&p, &v, &liar})
    fund_node(h, *n, min_stake);
  join_staked(h, p);
  join_staked(h, v, "verifier");
  join_staked(h, liar, "verifier");
  const micros alice_before = h.core.balance("alice");

  // A lying provider: the client's compensation, then the honest verifier's reward (the price each).
  ruling_parties provider_lied;
  provider_lied.provider_lost = true;
  provider_lied.honest_verifier = vk;
  auto out = h.step(jobs_settled{{judged_against(p, 41, 300, provider_lied)}});
  auto slash = only_transfer(out, "slash:41:provider");
  CHECK(slash.job_id == 41);
  CHECK(amount_to(slash, market::stake_account(pk)) == -600);
  CHECK(amount_to(slash, market::client_account("alice")) == 300);
  CHECK(amount_to(slash, market::provider_account(vk)) == 300);
  CHECK(h.core.stakes().staked(pk) == 400);
  CHECK(h.core.balance("alice") == alice_before + 300);
  CHECK(h.core.stakes().balance(vk) == 300);
  // Below the minimum: its session ends, with a DISCONNECT that says why.
  CHECK(count_cmd(out, proto::cmd::disconnect, p.identity) == 1);
  CHECK(h.core.sessions() == 0);

  // The stake runs short: the client first, then what is left for the verifier.
  out = h.step(jobs_settled{{judged_against(p, 42, 300, provider_lied)}});
  slash = only_transfer(out, "slash:42:provider");
  CHECK(amount_to(slash, market::client_account("alice")) == 300);
  CHECK(amount_to(slash, market::provider_account(vk)) == 100);
  CHECK(h.core.stakes().staked(pk) == 0);
  // Nothing left: still written (a posting of 0), so the ruling counts as carried out.
  out = h.step(jobs_settled{{judged_against(p, 43, 300, provider_lied)}});
  slash = only_transfer(out, "slash:43:provider");
  CHECK(market::sum(slash.postings) == 0);
  CHECK(amount_to(slash, market::stake_account(pk)) == 0);

  // A lying verifier loses its whole stake to the provider it lied about.
  ruling_parties verifier_lied;
  verifier_lied.liar_verifier = lk;
  out = h.step(jobs_settled{{judged_against(p, 44, 300, verifier_lied)}});
  slash = only_transfer(out, "slash:44:verifier");
  CHECK(amount_to(slash, market::stake_account(lk)) == -min_stake);
  CHECK(amount_to(slash, market::provider_account(pk)) == min_stake);
  CHECK(h.core.stakes().staked(lk) == 0);
  CHECK(count_cmd(out, proto::cmd::disconnect, liar.identity) == 1); // its account cannot top the stake up

  // Both lied: the provider compensates the client, and the verifier's stake goes to the client.
  // This provider's account can bring its stake back to the minimum: it stays, topped up.
  provider q{"p2"};
  fund_node(h, q, 2 * min_stake);
  join_staked(h, q);
  provider w{"v3"};
  fund_node(h, w, min_stake);
  join_staked(h, w, "verifier");
  ruling_parties both;
  both.provider_lost = true;
  both.liar_verifier = w.key.public_key_hex;
  out = h.step(jobs_settled{{judged_against(q, 45, 200, both)}});
  auto from_provider = only_transfer(out, "slash:45:provider");
  CHECK(amount_to(from_provider, market::client_account("alice")) == 200);
  CHECK(amount_to(from_provider, market::provider_account(w.key.public_key_hex)) == 0); // no reward for a liar
  auto from_verifier = only_transfer(out, "slash:45:verifier");
  CHECK(amount_to(from_verifier, market::client_account("alice")) == min_stake);
  const auto top_up = only_transfer(out, "stake:" + q.key.public_key_hex);
  CHECK(amount_to(top_up, market::stake_account(q.key.public_key_hex)) == 200);
  CHECK(count_cmd(out, proto::cmd::disconnect, q.identity) == 0);
  CHECK(count_cmd(out, proto::cmd::disconnect, w.identity) == 1); // the verifier's account is empty
  CHECK(h.core.sessions() == 1);
  CHECK(h.core.stakes().staked(q.key.public_key_hex) == min_stake);
}

TEST_CASE("stake: after a restart, stakes and balances come from the snapshot, and owed slashes are made at once") {
  provider p{"p1"}, v{"v1"};
  const auto pk = p.key.public_key_hex, vk = v.key.public_key_hex;
  snapshot s;
  s.node_balances[pk] = 50;
  s.node_stakes[pk] = min_stake;
  s.node_stakes[vk] = min_stake;
  ruling_parties r;
  r.provider_lost = true;
  r.honest_verifier = vk;
  s.unslashed.push_back(judged_against(p, 7, 100, r));
  harness h{execution_core::recover(staked_config(), s, t0), t0};
  CHECK(h.core.stakes().staked(pk) == min_stake);
  CHECK(h.core.stakes().balance(pk) == 50);
  auto first = h.step(tick{});
  auto slash = only_transfer(first, "slash:7:provider");
  CHECK(amount_to(slash, market::stake_account(pk)) == -200);
  CHECK(records_of<transfer>(h.step(tick{})).size() == 0); // once
  // Its node is not back: the stake cools down from the restart.
  h.now = t0 + 5000 * ms;
  auto released = h.step(tick{});
  CHECK(amount_to(only_transfer(released, "unstake:" + pk), market::provider_account(pk)) == min_stake - 200);
  only_transfer(released, "unstake:" + vk);
}

TEST_CASE("re-run: a job settled DISPUTED against its provider runs again for its client on another provider") {
  harness h;
  provider cheat{"p1", 50}, honest{"p2", 80};
  h.join(cheat, 1);
  effects all;
  const auto req = request("alice", "r1", 500);
  const auto id = h.admit(req, "ca", &all);
  const auto order = only_job(all, cheat.identity); // the cheaper one
  h.deliver(cheat, order);
  h.join(honest, 4);
  const micros before = h.core.balance("alice");

  auto s = settled(id, "alice", 0, cheat.key.public_key_hex, job_state::disputed);
  s.price = 50;
  s.ruling.provider_lost = true;
  s.ruling.input = req.input;
  h.join(cheat, 4); // credit again: it would be the cheapest for the re-run
  auto out = h.step(jobs_settled{{s}});
  // The NOTICE names the re-run; the re-run is a new job of the same client, input and model.
  REQUIRE(count_cmd(out, proto::cmd::notice, "ca") == 1);
  proto::dispute_notice notice;
  for (const auto& m : out.messages)
    if (m.msg.command == proto::cmd::notice)
      notice = proto::parse_notice(m.msg).value();
  CHECK(notice.rerun_request_id == "rerun:" + std::to_string(id));
  auto inserts = records_of<job_insert>(out);
  REQUIRE(inserts.size() == 1);
  const auto& spec = inserts[0].spec;
  CHECK(spec.client_id == "alice");
  CHECK(spec.request_id == notice.rerun_request_id);
  CHECK(spec.model == req.model);
  CHECK(spec.input.data == req.input.data);
  CHECK(spec.tier == "full"); // verified for sure: a second cheat is caught too
  CHECK(spec.max_price == req.max_price);
  CHECK(h.core.held("alice") == req.max_price); // held like any job; the disputed one cost nothing
  CHECK(h.core.balance("alice") == before);
  // It goes to the honest provider, not to the one that lost the ruling, though that is cheaper.
  auto done = h.persisted(out);
  CHECK(jobs_to(done, cheat.identity).empty());
  REQUIRE(jobs_to(done, honest.identity).size() == 1);
  CHECK(acks(done, "ca").size() == 1); // the re-run's ACK, under its own request id
  // Settled again (a resent hand-off): no second re-run.
  CHECK(records_of<job_insert>(h.step(jobs_settled{{s}})).empty());
  // A client may not take a request id of that form for itself.
  auto refused = h.submit(request("alice", "rerun:77", 100), "ca");
  REQUIRE(refused.request_lookups.size() == 1); // unless Postgres holds it: then that job's replies
  CHECK(refused.request_lookups[0].refusal.code == std::string(errc::bad_input));
  CHECK(records_of<job_insert>(refused).empty());
}

TEST_CASE("stake: HELLOs from ever new keys without money leave nothing in memory once they are gone") {
  for (micros minimum : {micros{0}, min_stake}) {
    execution_config cfg = config();
    cfg.stake = {minimum, 5000};
    harness h{cfg};
    for (int i = 0; i < 200; ++i) {
      provider n{"n" + std::to_string(i)};
      auto e = h.step(node_hello{n.identity, caps_of(n, i % 2 ? "verifier" : "provider")});
      if (i % 2)
        h.step(node_left{n.key.public_key_hex, "verifier"});
      else
        h.step(node_gone{n.identity, "bye"});
    }
    CHECK(h.core.stakes().known_nodes() == 0);
    CHECK(h.core.sessions() == 0);
  }
}

TEST_CASE("re-run: after a restart a queued re-run still avoids the provider that lost its ruling") {
  provider cheat{"p1", 50}, honest{"p2", 80};
  snapshot s;
  s.client_balances["alice"] = 10000;
  auto rerun_job = stored(21, "alice", job_state::queued, 500);
  rerun_job.spec.request_id = "rerun:20";
  rerun_job.avoid_provider = cheat.key.public_key_hex; // as load_snapshot finds it from job 20's receipt
  s.open_jobs.push_back(rerun_job);
  s.next_job_id = 22;
  harness h{execution_core::recover(config(), s, t0), t0};
  auto to_cheat = h.persisted(h.join(cheat, 4));
  CHECK(jobs_to(to_cheat, cheat.identity).empty()); // the cheaper one, but not for this job
  auto to_honest = h.persisted(h.join(honest, 4));
  REQUIRE(jobs_to(to_honest, honest.identity).size() == 1);
  CHECK(jobs_to(to_honest, honest.identity)[0].job_id == 21);
}

// ---- operators' actions (the admin API) ----

namespace {

admin_order order_of(admin_action::kind what, const std::string& target, std::int64_t value = 0,
                     const std::string& reply_to = "http1") {
  admin_order o;
  o.reply_to = reply_to;
  o.action.what = what;
  o.action.who = "alice";
  o.action.ref = "admin:" + reply_to;
  o.action.target = target;
  o.action.value = value;
  o.action.at_us = t0;
  return o;
}

std::size_t answers_to(const effects& e, const std::string& identity) { return count_cmd(e, "ADMIN", identity); }

} // namespace

TEST_CASE("execution: an operator's action is recorded with who took it, done only once committed, then answered") {
  harness h;
  provider p{"p1"};
  h.join(p, 4);
  auto e = h.step(order_of(admin_action::kind::drain, p.key.public_key_hex));
  auto recorded = records_of<admin_action>(e);
  REQUIRE(recorded.size() == 1);
  CHECK(recorded[0].who == "alice");
  CHECK(answers_to(e, "http1") == 0); // persist before tell
  CHECK_FALSE(h.core.drained(p.key.public_key_hex));
  auto done = h.step(all_ok(e));
  CHECK(answers_to(done, "http1") == 1);
  CHECK(h.core.drained(p.key.public_key_hex));
  REQUIRE(done.orders.size() == 1); // handed to the verification and settlement cores
  CHECK(done.orders[0].what == admin_action::kind::drain);
}

TEST_CASE("execution: a drained provider keeps what it holds and gets no new JOB; undrained, it does again") {
  harness h;
  provider p{"p1"};
  h.join(p, 4);
  effects first;
  h.admit(request("alice", "r1"), "ca", &first);
  const auto held = only_job(first, p.identity);
  h.confirm(h.step(order_of(admin_action::kind::drain, p.key.public_key_hex)));
  effects queued;
  const auto id = h.admit(request("alice", "r2"), "ca", &queued);
  CHECK(jobs_to(queued, p.identity).empty());
  CHECK(h.core.job(id)->state == job_state::queued);
  // What it held before the drain is still its own to deliver.
  auto delivered = h.deliver(p, held);
  CHECK(count_cmd(delivered, proto::cmd::result, "ca") == 1);
  auto back = h.confirm(h.step(order_of(admin_action::kind::undrain, p.key.public_key_hex, 0, "http2")));
  CHECK(jobs_to(back, p.identity).size() == 1);
}

TEST_CASE("execution: a banned node is disconnected, its jobs re-queued, and its HELLO refused until unbanned") {
  harness h;
  provider p{"p1"};
  h.join(p, 4);
  effects first;
  const auto id = h.admit(request("alice", "r1"), "ca", &first);
  only_job(first, p.identity);
  auto banned = h.confirm(h.step(order_of(admin_action::kind::ban, p.key.public_key_hex)));
  CHECK(count_cmd(banned, proto::cmd::disconnect, p.identity) == 1);
  CHECK(h.core.sessions() == 0);
  CHECK(h.core.job(id)->state == job_state::queued);
  auto again = h.step(node_hello{"p1-new", caps_of(p)});
  REQUIRE(errors_to(again, "p1-new").size() == 1);
  CHECK(errors_to(again, "p1-new")[0].code == std::string(errc::forbidden));
  CHECK(count_cmd(again, proto::cmd::welcome) == 0);
  h.confirm(h.step(order_of(admin_action::kind::unban, p.key.public_key_hex, 0, "http2")));
  CHECK(count_cmd(h.step(node_hello{"p1-new", caps_of(p)}), proto::cmd::welcome, "p1-new") == 1);
}

TEST_CASE("execution: a bad operator's action is refused with bad_input and records nothing") {
  harness h;
  for (const auto& o : {order_of(admin_action::kind::ban, "not-a-key"), order_of(admin_action::kind::fee, "", 10001),
                        order_of(admin_action::kind::fee, "", -1),
                        order_of(admin_action::kind::sample_rate, "", 1'000'001)}) {
    auto e = h.step(o);
    CHECK(e.records.empty());
    REQUIRE(errors_to(e, "http1").size() == 1);
    CHECK(errors_to(e, "http1")[0].code == std::string(errc::bad_input));
  }
}

TEST_CASE("execution: an operator's deposit is a DEPOSIT from the admin key, recorded with who made it, once") {
  harness h;
  const auto bob = verify::sha256_hex("bob");
  auto o = order_of(admin_action::kind::deposit, "", 7000);
  o.deposit = proto::deposit_request{"dep-1", bob, 7000};
  auto e = h.step(o);
  REQUIRE(records_of<transfer>(e).size() == 1);
  auto recorded = records_of<admin_action>(e);
  REQUIRE(recorded.size() == 1);
  CHECK(recorded[0].target == "client:" + bob);
  auto done = h.step(all_ok(e));
  CHECK(count_cmd(done, proto::cmd::deposited, "http1") == 1);
  CHECK(h.core.balance(bob) == 7000);
  // The same request again: answered `repeated`, no second record, nothing credited.
  auto again = h.step(o);
  CHECK(again.records.empty());
  CHECK(count_cmd(again, proto::cmd::deposited, "http1") == 1);
  CHECK(h.core.balance(bob) == 7000);
}

TEST_CASE("execution recovery: bans and drains of the snapshot hold after a restart") {
  provider banned{"b"}, drained{"d"};
  snapshot s;
  s.banned = {banned.key.public_key_hex};
  s.drained = {drained.key.public_key_hex};
  harness h{execution_core::recover(config(), s, t0), t0};
  CHECK(errors_to(h.step(node_hello{"b", caps_of(banned)}), "b").at(0).code == std::string(errc::forbidden));
  h.join(drained, 4);
  effects e;
  h.admit(request("alice", "r1"), "ca", &e);
  CHECK(jobs_to(e, drained.identity).empty());
}

TEST_CASE("stake: a node banned while its stake hold is in flight is refused when it commits, and its stake cools down") {
  harness h{staked_config()};
  provider p{"p1"};
  const auto key = p.key.public_key_hex;
  fund_node(h, p, 2500);
  auto hello = h.step(node_hello{p.identity, caps_of(p)});
  only_transfer(hello, "stake:" + key);
  auto ban = h.step(order_of(admin_action::kind::ban, key));
  h.step(all_ok(ban));
  auto held = h.step(all_ok(hello));
  CHECK(count_cmd(held, proto::cmd::welcome) == 0);
  REQUIRE(errors_to(held, p.identity).size() == 1);
  CHECK(errors_to(held, p.identity)[0].code == std::string(errc::forbidden));
  CHECK(h.core.sessions() == 0);
  // Never joined: the stake goes back to its account at the next tick after the cool-down.
  h.now += 6000 * ms;
  auto tick_fx = h.step(tick{});
  CHECK(only_transfer(tick_fx, "unstake:").postings.size() == 2);
}
