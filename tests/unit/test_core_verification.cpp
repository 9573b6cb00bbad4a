// The verification core as a pure state machine: sampling, blind dispatch, verdicts, timeouts,
// lost verifiers, persist-before-hand-off and recovery. Receipts are really signed.
#include <doctest/doctest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/verification.hpp"
#include "core_fixtures.hpp"
#include "proto/commands.hpp"
#include "verify/hash.hpp"
#include "verify/receipt.hpp"
#include "verify/sampling.hpp"
#include "verify/signing.hpp"

using namespace haca;
using namespace haca::core;
using namespace haca::test;

namespace {

kernels::tensor input_of(std::int64_t job_id) {
  kernels::tensor t;
  t.type = kernels::dtype::i8;
  t.shape = {1, 4};
  t.data = std::string{static_cast<char>(job_id), 2, 3, 4};
  return t;
}

executed_job executed(std::int64_t job_id, const std::string& tier, const verify::key_pair& provider,
                      std::int32_t seq = 4) {
  executed_job e;
  e.job_id = job_id;
  e.attempt = 1;
  e.seq = seq;
  e.client_id = "alice";
  e.tier = tier;
  e.input = input_of(job_id);
  e.receipt = signed_receipt(job_id, provider);
  e.receipt.input_hash = verify::sha256_hex(e.input.data); // what the execution core checked
  verify::sign_receipt(e.receipt, provider);
  e.provider_layers = trace_layers(job_id); // revealed in its DONE
  REQUIRE(verify::verify_receipt(e.receipt));
  return e;
}

proto::capabilities caps_of(const verify::key_pair& k, const std::string& name, const std::string& role = "verifier") {
  proto::capabilities c;
  c.role = role;
  c.name = name;
  c.public_key = k.public_key_hex;
  c.device = "cpu";
  c.backends = {"reference"};
  c.models = {verify::sha256_hex("model")}; // signed_receipt's
  c.timestamp_us = t0;
  return c;
}

verification_config config(double p = 0.1) {
  verification_config c;
  c.sample_rate = p;
  c.sampling_secret = "test sampling secret";
  c.heartbeat_ms = 500;
  c.verify_timeout_ms = 10000;
  c.max_credit = 16;
  c.coordinator_key = verify::sha256_hex("coordinator");
  return c;
}

std::vector<job_transition> transitions(const effects& e) {
  std::vector<job_transition> out;
  for (const auto& r : e.records)
    if (const auto* t = std::get_if<job_transition>(&r))
      out.push_back(*t);
  return out;
}

// The VERIFY tasks sent to one identity (or to anyone when identity is empty).
std::vector<proto::verify_task> verifies(const effects& e, const std::string& identity = {}) {
  std::vector<proto::verify_task> out;
  for (const auto& m : e.messages) {
    if (m.msg.command != proto::cmd::verify || (!identity.empty() && m.identity != identity))
      continue;
    CHECK(m.to == port::node);
    auto v = proto::parse_verify(m.msg);
    REQUIRE(v.ok());
    out.push_back(v.value());
  }
  return out;
}

std::vector<proto::error_reply> errors_to(const effects& e, const std::string& identity) {
  std::vector<proto::error_reply> out;
  for (const auto& m : e.messages) {
    if (m.msg.command != proto::cmd::error || m.identity != identity)
      continue;
    auto r = proto::parse_error(m.msg);
    REQUIRE(r.ok());
    out.push_back(r.value());
  }
  return out;
}

std::size_t count_cmd(const effects& e, std::string_view cmd, const std::string& identity) {
  return static_cast<std::size_t>(std::count_if(e.messages.begin(), e.messages.end(), [&](const outbound& m) {
    return m.msg.command == cmd && m.identity == identity;
  }));
}

committed all_ok(const effects& e) {
  committed c;
  c.records = e.records;
  c.outcomes.assign(e.records.size(), outcome{});
  return c;
}

// A verifier that said HELLO and READY n.
struct verifier {
  verify::key_pair key = verify::generate_key_pair();
  std::string identity;
  std::string name;
};

// What `by` signs after re-running the task blind: the honest run (signed_receipt's hashes,
// which it never saw), or one whose trace (a layer) or output differs.
proto::verdict_reply verdict_for(const proto::verify_task& t, const verifier& by, bool honest_trace = true,
                                 bool honest_output = true) {
  verify::verdict d;
  d.job_id = t.job_id;
  d.model_hash = t.model;
  d.input_hash = verify::sha256_hex(t.input.data);
  d.output_hash = verify::sha256_hex(honest_output ? "output " + std::to_string(t.job_id) : "another output");
  d.layer_hashes = trace_layers(t.job_id);
  if (!honest_trace)
    d.layer_hashes[1] = verify::sha256_hex("a different layer 1");
  d.trace_root = verify::merkle_root(d.layer_hashes);
  verify::sign_verdict(d, by.key);
  proto::verdict_reply r;
  r.job_id = t.job_id;
  r.verdict = std::move(d);
  return r;
}

effects join(verification_core& c, const verifier& v, std::int32_t credit, time_us now,
             const std::optional<proto::capabilities>& caps = std::nullopt) {
  auto e = c.step(node_hello{v.identity, caps ? *caps : caps_of(v.key, v.name)}, now);
  REQUIRE(count_cmd(e, proto::cmd::welcome, v.identity) == 1);
  auto r = c.step(node_ready{v.identity, credit}, now);
  r.records.insert(r.records.begin(), e.records.begin(), e.records.end());
  return r;
}

} // namespace

TEST_CASE("verification never samples tier none and always samples tier full") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config(0.5));
  verifier v{verify::generate_key_pair(), "v-id", "v1"};
  join(c, v, 16, t0);
  for (int id = 1; id <= 40; ++id) {
    auto e = c.step(executed(id, "none", provider), t0);
    CHECK(e.records.empty());
    REQUIRE(e.to_settlement.size() == 1);
    CHECK(e.to_settlement[0].verdict == job_state::unsampled);
    CHECK(verifies(e).empty());
  }
  for (int id = 41; id <= 56; ++id) {
    auto e = c.step(executed(id, "full", provider), t0);
    CHECK(transitions(e).empty());
    CHECK(verifies(e, v.identity).size() == 1);
  }
  CHECK(c.backlog() == 16);
}

TEST_CASE("verification samples about p of the receipts of tier sampled, the same ones for the same secret") {
  const auto provider = verify::generate_key_pair();
  verification_core a(config(0.1));
  verification_core same(config(0.1));
  auto other_cfg = config(0.1);
  other_cfg.sampling_secret = "another secret";
  verification_core other(other_cfg);
  const int n = 2000;
  std::set<std::int64_t> sampled_a, sampled_other;
  for (int id = 1; id <= n; ++id) {
    auto job = executed(id, "sampled", provider);
    auto ea = a.step(job, t0);
    auto es = same.step(job, t0);
    auto eo = other.step(job, t0);
    CHECK(ea.to_settlement.size() == es.to_settlement.size());
    if (ea.to_settlement.empty())
      sampled_a.insert(id);
    if (eo.to_settlement.empty())
      sampled_other.insert(id);
  }
  // No verifier yet: the sampled ones wait; the rest went on to settlement as UNSAMPLED.
  CHECK(a.pending() == sampled_a.size());
  CHECK(a.judging() == 0);
  CHECK(same.pending() == a.pending());
  // Binomial(2000, 0.1): mean 200, sd ~13.4; 140..260 is beyond 4 sd.
  CHECK(sampled_a.size() > 140);
  CHECK(sampled_a.size() < 260);
  CHECK(sampled_other.size() > 140);
  CHECK(sampled_other.size() < 260);
  CHECK(sampled_a != sampled_other); // the secret decides, not the receipt alone
}

TEST_CASE("an unsampled job goes to settlement at once and stores nothing: its block records UNSAMPLED") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  auto e = c.step(executed(7, "none", provider, 4), t0);
  CHECK(e.records.empty());
  REQUIRE(e.to_settlement.size() == 1);
  const auto& j = e.to_settlement[0];
  CHECK(j.job_id == 7);
  CHECK(j.attempt == 1);
  CHECK(j.seq == 5); // the UNSAMPLED transition's, written with SETTLED at 6
  CHECK(j.verdict == job_state::unsampled);
  CHECK(j.client_id == "alice");
  CHECK(verify::verify_receipt(j.receipt));
  CHECK(c.judging() == 0);
  CHECK(c.backlog() == 0);
}

TEST_CASE("a verdict record the store rejects is logged and not handed to settlement") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier v{verify::generate_key_pair(), "v-id", "v"};
  join(c, v, 1, t0);
  auto sent = verifies(c.step(executed(8, "full", provider), t0), v.identity);
  REQUIRE(sent.size() == 1);
  auto e = c.step(node_verdict{v.identity, verdict_for(sent[0], v)}, t0 + 10);
  REQUIRE(transitions(e).size() == 1);
  committed rej = all_ok(e);
  rej.outcomes[0].what = outcome::kind::rejected;
  rej.outcomes[0].reason = "job 8 is not EXECUTED";
  auto out = c.step(rej, t0 + 11);
  CHECK(out.to_settlement.empty());
  REQUIRE(out.errors.size() == 1);
  CHECK(out.errors[0].find("job 8 is not EXECUTED") != std::string::npos);
  CHECK(c.judging() == 0);
}

TEST_CASE("a provider never verifies its own job: only another verifier gets the VERIFY") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier self{provider, "self-id", "self"};
  join(c, self, 16, t0);
  auto e = c.step(executed(1, "full", provider), t0);
  CHECK(verifies(e).empty());
  CHECK(c.pending() == 1);
  CHECK(c.credit_of(provider.public_key_hex) == 16);

  verifier other{verify::generate_key_pair(), "other-id", "other"};
  auto j = join(c, other, 1, t0 + 1);
  auto sent = verifies(j);
  REQUIRE(sent.size() == 1);
  CHECK(verifies(j, other.identity).size() == 1);
  CHECK(c.verifier_of(1) == other.key.public_key_hex);
}

TEST_CASE("a VERIFY carries the model hash and the input only, never the receipt or its hashes, and takes one credit") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier v{verify::generate_key_pair(), "v-id", "v"};
  join(c, v, 3, t0);
  auto job = executed(11, "full", provider);
  auto e = c.step(job, t0 + 5);
  auto sent = verifies(e, v.identity);
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].job_id == 11);
  CHECK(sent[0].model == job.receipt.model_hash);
  CHECK(sent[0].input.data == job.input.data);
  CHECK(sent[0].input.shape == job.input.shape);
  // Blind: nothing of the provider's claim travels, so a verifier cannot copy it.
  for (const auto& m : e.messages) {
    if (m.msg.command != proto::cmd::verify)
      continue;
    std::set<std::string> keys;
    for (const auto& [k, val] : m.msg.header.items())
      keys.insert(k);
    CHECK(keys == std::set<std::string>{"job_id", "model"});
    const auto wire = m.msg.header.dump();
    for (const auto& claim : {job.receipt.output_hash, job.receipt.trace_root, job.receipt.signature,
                              job.receipt.provider_key, verify::receipt_hash(job.receipt)})
      CHECK(wire.find(claim) == std::string::npos);
  }
  CHECK(c.credit_of(v.key.public_key_hex) == 2);
  CHECK(e.wake_at_us > 0);
  CHECK(e.wake_at_us <= t0 + 5 + 10000 * ms); // the VERIFY's deadline at the latest
}

TEST_CASE("a VERDICT from an identity that never said HELLO to verification is refused with not_registered") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier v{verify::generate_key_pair(), "v-id", "v"};
  join(c, v, 1, t0);
  auto sent = verifies(c.step(executed(3, "full", provider), t0));
  REQUIRE(sent.size() == 1);
  auto e = c.step(node_verdict{"stranger", verdict_for(sent[0], v)}, t0 + 1);
  auto errs = errors_to(e, "stranger");
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == errc::not_registered);
  CHECK(e.records.empty());
  CHECK(e.to_settlement.empty());
  CHECK(c.verifier_of(3) == v.key.public_key_hex);
  CHECK(c.credit_of(v.key.public_key_hex) == 0);
  CHECK(c.judging() == 0);
}

TEST_CASE("a VERDICT for a job in flight to another verifier is refused with unknown_job and changes nothing") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier a{verify::generate_key_pair(), "a-id", "a"};
  verifier b{verify::generate_key_pair(), "b-id", "b"};
  join(c, a, 2, t0);
  join(c, b, 1, t0);
  auto sent = verifies(c.step(executed(5, "full", provider), t0), a.identity); // a has the most credit
  REQUIRE(sent.size() == 1);
  CHECK(c.verifier_of(5) == a.key.public_key_hex);
  auto e = c.step(node_verdict{b.identity, verdict_for(sent[0], b)}, t0 + 1);
  auto errs = errors_to(e, b.identity);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == errc::unknown_job);
  CHECK(errs[0].job_id == 5);
  CHECK(e.records.empty());
  CHECK(c.verifier_of(5) == a.key.public_key_hex);
  CHECK(c.credit_of(a.key.public_key_hex) == 1);
  CHECK(c.credit_of(b.key.public_key_hex) == 1);
  // A verdict for a job nobody verifies is refused the same way.
  proto::verdict_reply ghost = verdict_for(sent[0], a);
  ghost.job_id = 999;
  auto g = c.step(node_verdict{a.identity, ghost}, t0 + 2);
  REQUIRE(errors_to(g, a.identity).size() == 1);
  CHECK(errors_to(g, a.identity)[0].code == errc::unknown_job);
  CHECK(g.records.empty());
}

TEST_CASE("a matching VERDICT verifies the job, returns the verifier's credit and settles after commit") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier v{verify::generate_key_pair(), "v-id", "v"};
  join(c, v, 1, t0);
  auto sent = verifies(c.step(executed(9, "full", provider, 4), t0), v.identity);
  REQUIRE(sent.size() == 1);
  auto e = c.step(node_verdict{v.identity, verdict_for(sent[0], v)}, t0 + 10);
  auto ts = transitions(e);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].to == job_state::verified);
  CHECK(ts[0].seq == 5);
  CHECK(e.to_settlement.empty());
  CHECK(c.credit_of(v.key.public_key_hex) == 1);
  CHECK_FALSE(c.verifier_of(9).has_value());
  auto done = c.step(all_ok(e), t0 + 20);
  REQUIRE(done.to_settlement.size() == 1);
  CHECK(done.to_settlement[0].verdict == job_state::verified);
  CHECK(c.backlog() == 0);
}

// ---- disputes: bisection and the referee ----

namespace {

struct dispute_fixture {
  verify::key_pair provider = verify::generate_key_pair();
  verification_core c{config()};
  verifier v{verify::generate_key_pair(), "v-id", "the-v"};
  proto::verdict_reply reply;
  effects mismatch; // what the disputing VERDICT produced

  explicit dispute_fixture(bool honest_trace = false, bool honest_output = true, bool with_layers = true) {
    join(c, v, 1, t0);
    auto e = executed(4, "full", provider);
    if (!with_layers)
      e.provider_layers.clear(); // executed before a restart
    auto sent = verifies(c.step(e, t0), v.identity);
    REQUIRE(sent.size() == 1);
    reply = verdict_for(sent[0], v, honest_trace, honest_output);
    mismatch = c.step(node_verdict{v.identity, reply}, t0 + 10);
  }
};

std::vector<proto::probe_request> probes(const effects& e, const std::string& identity) {
  std::vector<proto::probe_request> out;
  for (const auto& m : e.messages)
    if (m.msg.command == proto::cmd::probe && m.identity == identity)
      out.push_back(proto::parse_probe(m.msg).value());
  return out;
}


referee_checked layer_result(std::int64_t job_id, std::string layer_hash, std::string output_hash = {}) {
  return {job_id, referee_result{std::move(layer_hash), std::move(output_hash), {}}, {}};
}

} // namespace

TEST_CASE("a mismatch is bisected to the first differing layer, and the referee asks the verifier for the agreed "
          "activation entering it") {
  dispute_fixture f; // the verifier's layer 1 differs
  CHECK(transitions(f.mismatch).empty()); // no verdict before the referee's ruling
  CHECK(f.mismatch.to_settlement.empty());
  CHECK(f.c.disputes() == 1);
  auto p = probes(f.mismatch, f.v.identity);
  REQUIRE(p.size() == 1);
  CHECK(p[0].job_id == 4);
  CHECK(p[0].layer == 0); // the output of layer 0 enters layer 1
  CHECK(p[0].input.data == input_of(4).data);
  CHECK(f.mismatch.referee_tasks.empty());

  SUBCASE("the activation hashes to the agreed layer hash: the referee re-runs that one layer from it") {
    auto e = f.c.step(node_activation{f.v.identity, {4, 0, layer_activation(4, 0)}}, t0 + 20);
    REQUIRE(e.referee_tasks.size() == 1);
    const auto& t = e.referee_tasks[0];
    CHECK(t.how == referee_task::mode::one_layer);
    CHECK(t.layer == 1);
    CHECK(t.entering.data == layer_activation(4, 0).data);
    CHECK(t.model == signed_receipt(4, f.provider).model_hash);
  }
  SUBCASE("the shape is the job's, whatever the sender said: only the bytes are agreed") {
    auto odd = layer_activation(4, 0);
    odd.shape = {static_cast<std::int64_t>(odd.data.size()), 1};
    auto e = f.c.step(node_activation{f.v.identity, {4, 0, odd}}, t0 + 20);
    REQUIRE(e.referee_tasks.size() == 1);
    CHECK(e.referee_tasks[0].how == referee_task::mode::one_layer);
    CHECK(e.referee_tasks[0].entering.shape == layer_activation(4, 0).shape);
  }
  SUBCASE("an activation that does not hash to it, or none in time: the referee computes it from the input") {
    auto bad = f.c.step(node_activation{f.v.identity, {4, 0, layer_activation(4, 1)}}, t0 + 20);
    REQUIRE(bad.referee_tasks.size() == 1);
    CHECK(bad.referee_tasks[0].how == referee_task::mode::from_input);
    CHECK(bad.referee_tasks[0].entering.data == input_of(4).data);
    CHECK(bad.referee_tasks[0].layer == 1);
  }
  SUBCASE("no ACTIVATION: after the timeout the referee computes it from the input") {
    CHECK(f.c.step(tick{}, t0 + 10 + 9999 * ms).referee_tasks.empty());
    auto late = f.c.step(tick{}, t0 + 10 + 10000 * ms);
    REQUIRE(late.referee_tasks.size() == 1);
    CHECK(late.referee_tasks[0].how == referee_task::mode::from_input);
    // The late ACTIVATION is refused: nobody waits for it.
    auto e = f.c.step(node_activation{f.v.identity, {4, 0, layer_activation(4, 0)}}, t0 + 20 * 1000 * ms);
    CHECK(e.referee_tasks.empty());
    CHECK(errors_to(e, f.v.identity).at(0).code == std::string(errc::unknown_job));
  }
  SUBCASE("an ACTIVATION from another node, or for another layer, is refused and changes nothing") {
    auto other = f.c.step(node_activation{"someone", {4, 0, layer_activation(4, 0)}}, t0 + 20);
    CHECK(other.referee_tasks.empty());
    CHECK(errors_to(other, "someone").at(0).code == std::string(errc::unknown_job));
    auto wrong_layer = f.c.step(node_activation{f.v.identity, {4, 1, layer_activation(4, 1)}}, t0 + 20);
    CHECK(wrong_layer.referee_tasks.empty());
    CHECK(f.c.disputes() == 1);
  }
}

TEST_CASE("the referee's ruling: a lying provider's job is DISPUTED, with the evidence recorded") {
  dispute_fixture f;
  f.c.step(node_activation{f.v.identity, {4, 0, layer_activation(4, 0)}}, t0 + 20);
  // The referee computes what the verifier signed for layer 1: the provider's receipt is wrong.
  auto layer = f.c.step(layer_result(4, f.reply.verdict->layer_hashes[1], f.reply.verdict->output_hash), t0 + 30);
  // Before the ruling is recorded, a whole run checks the verifier's later layers.
  CHECK(records_of<dispute_ruling>(layer).empty());
  CHECK(transitions(layer).empty());
  REQUIRE(layer.referee_tasks.size() == 1);
  CHECK(layer.referee_tasks[0].how == referee_task::mode::whole_job);
  const auto& v = *f.reply.verdict;
  SUBCASE("the verifier lied after the provider's bad layer: both lost") {
    auto e = f.c.step(referee_checked{4, referee_result{{}, v.output_hash, verify::sha256_hex("honest root")}, {}},
                      t0 + 35);
    REQUIRE(records_of<dispute_ruling>(e).size() == 1);
    CHECK(records_of<dispute_ruling>(e)[0].loser == "both");
    CHECK(records_of<dispute_ruling>(e)[0].layer == 1);
    REQUIRE(transitions(e).size() == 1);
    CHECK(transitions(e)[0].to == job_state::disputed);
    auto done = f.c.step(all_ok(e), t0 + 40);
    REQUIRE(done.to_settlement.size() == 1);
    CHECK(done.to_settlement[0].ruling.provider_lost);
    CHECK(done.to_settlement[0].ruling.liar_verifier == f.v.key.public_key_hex);
    CHECK(done.to_settlement[0].ruling.honest_verifier.empty());
    return;
  }
  auto e = f.c.step(referee_checked{4, referee_result{{}, v.output_hash, v.trace_root}, {}}, t0 + 35);
  auto rulings = records_of<dispute_ruling>(e);
  REQUIRE(rulings.size() == 1);
  CHECK(rulings[0].loser == "provider");
  CHECK(rulings[0].layer == 1);
  CHECK(rulings[0].provider_hash == trace_layers(4)[1]);
  CHECK(rulings[0].verifier_hash == f.reply.verdict->layer_hashes[1]);
  CHECK(rulings[0].referee_hash == f.reply.verdict->layer_hashes[1]);
  CHECK(rulings[0].provider_key == f.provider.public_key_hex);
  CHECK(rulings[0].verifier_key == f.v.key.public_key_hex);
  auto ts = transitions(e);
  REQUIRE(ts.size() == 1);
  CHECK(ts[0].to == job_state::disputed);
  CHECK(ts[0].detail.find("the provider lost") != std::string::npos);
  CHECK(ts[0].detail.find("trace layer 1") != std::string::npos);
  CHECK(ts[0].detail.find("the-v") != std::string::npos);
  auto done = f.c.step(all_ok(e), t0 + 40);
  REQUIRE(done.to_settlement.size() == 1);
  CHECK(done.to_settlement[0].verdict == job_state::disputed);
  CHECK(done.to_settlement[0].ruling.provider_lost);
  CHECK(done.to_settlement[0].ruling.honest_verifier == f.v.key.public_key_hex);
  CHECK(done.to_settlement[0].ruling.input.data == input_of(4).data); // for the re-run
  CHECK(f.c.backlog() == 0);
}

TEST_CASE("the referee's ruling: a lying verifier loses, and the referee re-runs the whole job before it is VERIFIED") {
  dispute_fixture f;
  f.c.step(node_activation{f.v.identity, {4, 0, layer_activation(4, 0)}}, t0 + 20);
  auto e = f.c.step(layer_result(4, trace_layers(4)[1], signed_receipt(4, f.provider).output_hash), t0 + 30);
  auto rulings = records_of<dispute_ruling>(e);
  REQUIRE(rulings.size() == 1);
  CHECK(rulings[0].loser == "verifier");
  CHECK(transitions(e).empty()); // not judged on one layer: the rest is checked whole
  REQUIRE(e.referee_tasks.size() == 1);
  CHECK(e.referee_tasks[0].how == referee_task::mode::whole_job);
  CHECK(e.referee_tasks[0].entering.data == input_of(4).data);
  const auto receipt = signed_receipt(4, f.provider);
  SUBCASE("the whole job matches the receipt: VERIFIED by the referee") {
    auto w = f.c.step(referee_checked{4, referee_result{{}, receipt.output_hash, receipt.trace_root}, {}}, t0 + 40);
    auto ts = transitions(w);
    REQUIRE(ts.size() == 1);
    CHECK(ts[0].to == job_state::verified);
    CHECK(ts[0].detail.find("referee") != std::string::npos);
    CHECK(ts[0].detail.find("lied") != std::string::npos);
  }
  SUBCASE("a later layer of the receipt is wrong too: DISPUTED") {
    auto w = f.c.step(referee_checked{4, referee_result{{}, receipt.output_hash, verify::sha256_hex("x")}, {}}, t0 + 40);
    REQUIRE(transitions(w).size() == 1);
    CHECK(transitions(w)[0].to == job_state::disputed);
  }
}

TEST_CASE("a verifier that lost a ruling is dropped and refused from then on, also after a restart") {
  dispute_fixture f; // max_verifier_lies 1, the default
  f.c.step(node_activation{f.v.identity, {4, 0, layer_activation(4, 0)}}, t0 + 20);
  auto e = f.c.step(layer_result(4, trace_layers(4)[1], signed_receipt(4, f.provider).output_hash), t0 + 30);
  CHECK(records_of<dispute_ruling>(e).at(0).loser == "verifier");
  CHECK(count_cmd(e, proto::cmd::disconnect, f.v.identity) == 1);
  CHECK(f.c.sessions() == 0);
  auto again = f.c.step(node_hello{"v-id-2", caps_of(f.v.key, "the-v")}, t0 + 40);
  CHECK(count_cmd(again, proto::cmd::welcome, "v-id-2") == 0);
  CHECK(errors_to(again, "v-id-2").at(0).code == std::string(errc::forbidden));
  snapshot s;
  s.verifier_lies[f.v.key.public_key_hex] = 1;
  auto r = verification_core::recover(config(), s, t0);
  CHECK(errors_to(r.step(node_hello{"v-id-3", caps_of(f.v.key, "the-v")}, t0), "v-id-3").at(0).code ==
        std::string(errc::forbidden));
  auto cfg = config();
  cfg.max_verifier_lies = 0; // no bar
  auto open = verification_core::recover(cfg, s, t0);
  CHECK(count_cmd(open.step(node_hello{"v-id-4", caps_of(f.v.key, "the-v")}, t0), proto::cmd::welcome, "v-id-4") == 1);
}

TEST_CASE("disputes at layer 0, on the output alone, and without the provider's layer hashes") {
  SUBCASE("layer 0: the input is the agreed activation, no PROBE") {
    dispute_fixture f; // its verifier has credit again: a second job, disputed at layer 0
    const auto provider = verify::generate_key_pair();
    auto sent = verifies(f.c.step(executed(8, "full", provider), t0 + 30), f.v.identity);
    REQUIRE(sent.size() == 1);
    auto r = verdict_for(sent[0], f.v);
    r.verdict->layer_hashes[0] = verify::sha256_hex("another layer 0");
    r.verdict->trace_root = verify::merkle_root(r.verdict->layer_hashes);
    verify::sign_verdict(*r.verdict, f.v.key);
    auto e = f.c.step(node_verdict{f.v.identity, r}, t0 + 40);
    CHECK(probes(e, f.v.identity).empty());
    REQUIRE(e.referee_tasks.size() == 1);
    CHECK(e.referee_tasks[0].how == referee_task::mode::one_layer);
    CHECK(e.referee_tasks[0].layer == 0);
    CHECK(e.referee_tasks[0].entering.data == input_of(8).data);
  }
  SUBCASE("every layer agrees, the outputs differ: the last layer decides, output hash included") {
    dispute_fixture f(true, false);
    auto p = probes(f.mismatch, f.v.identity);
    REQUIRE(p.size() == 1);
    CHECK(p[0].layer == 0); // entering layer 1, the last
    f.c.step(node_activation{f.v.identity, {4, 0, layer_activation(4, 0)}}, t0 + 20);
    // Same layer hash, the verifier's output: the provider's output hash is the wrong one.
    auto layer = f.c.step(layer_result(4, trace_layers(4)[1], f.reply.verdict->output_hash), t0 + 30);
    REQUIRE(layer.referee_tasks.size() == 1); // the verifier's whole run is checked before the ruling
    const auto& v = *f.reply.verdict;
    auto e = f.c.step(referee_checked{4, referee_result{{}, v.output_hash, v.trace_root}, {}}, t0 + 35);
    REQUIRE(records_of<dispute_ruling>(e).size() == 1);
    CHECK(records_of<dispute_ruling>(e)[0].loser == "provider");
    CHECK(transitions(e).at(0).to == job_state::disputed);
  }
  SUBCASE("no provider layer hashes (a restart): the referee re-runs the whole job and rules on it") {
    dispute_fixture f(false, true, false);
    CHECK(probes(f.mismatch, f.v.identity).empty());
    REQUIRE(f.mismatch.referee_tasks.size() == 1);
    CHECK(f.mismatch.referee_tasks[0].how == referee_task::mode::whole_job);
    const auto receipt = signed_receipt(4, f.provider);
    auto e = f.c.step(referee_checked{4, referee_result{{}, receipt.output_hash, receipt.trace_root}, {}}, t0 + 20);
    REQUIRE(records_of<dispute_ruling>(e).size() == 1);
    CHECK(records_of<dispute_ruling>(e)[0].loser == "verifier");
    CHECK(records_of<dispute_ruling>(e)[0].layer == -1);
    CHECK(transitions(e).at(0).to == job_state::verified);
  }
  SUBCASE("a referee that cannot run (no such model here): the mismatch stands, said so") {
    dispute_fixture f;
    f.c.step(node_activation{f.v.identity, {4, 0, layer_activation(4, 0)}}, t0 + 20);
    auto e = f.c.step(referee_checked{4, std::nullopt, "model 12ab is not loaded"}, t0 + 30);
    CHECK(e.errors.size() == 1);
    REQUIRE(transitions(e).size() == 1);
    CHECK(transitions(e)[0].to == job_state::disputed);
    CHECK(transitions(e)[0].detail.find("no referee ruling") != std::string::npos);
  }
}

TEST_CASE("a VERIFY that times out is dispatched again to another verifier and the late VERDICT is refused") {
  const auto provider = verify::generate_key_pair();
  auto cfg = config();
  verification_core c(cfg);
  verifier a{verify::generate_key_pair(), "a-id", "a"};
  verifier b{verify::generate_key_pair(), "b-id", "b"};
  join(c, a, 2, t0);
  join(c, b, 1, t0);
  auto first = c.step(executed(12, "full", provider), t0);
  REQUIRE(verifies(first, a.identity).size() == 1);
  const time_us deadline = t0 + cfg.verify_timeout_ms * ms;

  // Both verifiers stay alive (heartbeats) until the deadline.
  for (time_us t = t0 + 400 * ms; t < deadline; t += 400 * ms) {
    c.step(node_heartbeat{a.identity}, t);
    c.step(node_heartbeat{b.identity}, t);
    auto e = c.step(tick{}, t);
    CHECK(verifies(e).empty());
  }
  CHECK(c.verifier_of(12) == a.key.public_key_hex);
  c.step(node_heartbeat{a.identity}, deadline);
  c.step(node_heartbeat{b.identity}, deadline);
  auto e = c.step(tick{}, deadline);
  CHECK(verifies(e, a.identity).empty());
  REQUIRE(verifies(e, b.identity).size() == 1);
  CHECK(c.verifier_of(12) == b.key.public_key_hex);
  CHECK(c.credit_of(a.key.public_key_hex) == 2); // the slot came back
  CHECK(c.credit_of(b.key.public_key_hex) == 0);
  CHECK_FALSE(e.notes.empty());

  auto late = c.step(node_verdict{a.identity, verdict_for(verifies(first, a.identity)[0], a)}, deadline + 1);
  REQUIRE(errors_to(late, a.identity).size() == 1);
  CHECK(errors_to(late, a.identity)[0].code == errc::unknown_job);
  CHECK(late.records.empty());
}

TEST_CASE("a timed-out VERIFY goes back to the same verifier when it is the only one") {
  const auto provider = verify::generate_key_pair();
  auto cfg = config();
  cfg.verify_timeout_ms = 1000;
  verification_core c(cfg);
  verifier a{verify::generate_key_pair(), "a-id", "a"};
  join(c, a, 1, t0);
  REQUIRE(verifies(c.step(executed(2, "full", provider), t0), a.identity).size() == 1);
  c.step(node_heartbeat{a.identity}, t0 + 999 * ms);
  CHECK(verifies(c.step(tick{}, t0 + 999 * ms)).empty());
  auto e = c.step(tick{}, t0 + 1000 * ms);
  CHECK(verifies(e, a.identity).size() == 1);
  CHECK(c.verifier_of(2) == a.key.public_key_hex);
  CHECK(c.credit_of(a.key.public_key_hex) == 0);
}

TEST_CASE("a silent verifier is lost after three heartbeat intervals and its tasks go to another verifier") {
  const auto provider = verify::generate_key_pair();
  auto cfg = config();
  verification_core c(cfg);
  verifier a{verify::generate_key_pair(), "a-id", "a"};
  verifier b{verify::generate_key_pair(), "b-id", "b"};
  join(c, a, 5, t0);
  join(c, b, 2, t0);
  auto e1 = c.step(executed(1, "full", provider), t0);
  auto e2 = c.step(executed(2, "full", provider), t0);
  CHECK(verifies(e1, a.identity).size() == 1);
  CHECK(verifies(e2, a.identity).size() == 1);
  CHECK(c.credit_of(a.key.public_key_hex) == 3);

  // b keeps talking; a says nothing.
  time_us t = t0;
  for (; t < t0 + 1500 * ms; t += 250 * ms) {
    c.step(node_heartbeat{b.identity}, t);
    auto e = c.step(tick{}, t);
    CHECK(c.sessions() == 2);
  }
  c.step(node_heartbeat{b.identity}, t);
  auto e = c.step(tick{}, t); // 1500 ms = 3 x 500 ms of silence
  CHECK(c.sessions() == 1);
  CHECK(verifies(e, b.identity).size() == 2);
  CHECK(c.verifier_of(1) == b.key.public_key_hex);
  CHECK(c.verifier_of(2) == b.key.public_key_hex);
  CHECK(c.credit_of(a.key.public_key_hex) == 0);
  // The lost verifier is now a stranger.
  auto late = c.step(node_ready{a.identity, 1}, t + 1);
  REQUIRE(errors_to(late, a.identity).size() == 1);
  CHECK(errors_to(late, a.identity)[0].code == errc::not_registered);
}

TEST_CASE("a verifier's DISCONNECT puts its tasks back for the other verifiers") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier a{verify::generate_key_pair(), "a-id", "a"};
  join(c, a, 1, t0);
  REQUIRE(verifies(c.step(executed(1, "full", provider), t0), a.identity).size() == 1);
  auto gone = c.step(node_gone{a.identity, "bye"}, t0 + 1);
  CHECK(c.sessions() == 0);
  CHECK(c.pending() == 1);
  CHECK_FALSE(c.verifier_of(1).has_value());
  CHECK(gone.wake_at_us == 0); // no session, nothing in flight: no timer
  verifier b{verify::generate_key_pair(), "b-id", "b"};
  auto j = join(c, b, 1, t0 + 2);
  CHECK(verifies(j, b.identity).size() == 1);
}

TEST_CASE("a new verifier HELLO for the same key replaces the old session and re-dispatches its tasks") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier a{verify::generate_key_pair(), "a-old", "a"};
  join(c, a, 1, t0);
  auto first = verifies(c.step(executed(1, "full", provider), t0), a.identity);
  REQUIRE(first.size() == 1);
  verifier again = a;
  again.identity = "a-new";
  auto e = join(c, again, 1, t0 + 5);
  CHECK(c.sessions() == 1);
  CHECK(verifies(e, "a-new").size() == 1);
  CHECK(c.verifier_of(1) == a.key.public_key_hex);
  // The old connection is no longer the session.
  auto old = c.step(node_verdict{"a-old", verdict_for(first[0], a)}, t0 + 6);
  REQUIRE(errors_to(old, "a-old").size() == 1);
  CHECK(errors_to(old, "a-old")[0].code == errc::not_registered);
  CHECK(old.records.empty());
}

TEST_CASE("a verifier HELLO gets WELCOME and a node_seen record; a provider HELLO to verification is refused") {
  verification_core c(config());
  const auto k = verify::generate_key_pair();
  auto e = c.step(node_hello{"p-id", caps_of(k, "p", "provider")}, t0);
  REQUIRE(errors_to(e, "p-id").size() == 1);
  CHECK(errors_to(e, "p-id")[0].code == errc::bad_input);
  CHECK(e.records.empty());
  CHECK(c.sessions() == 0);

  auto w = c.step(node_hello{"v-id", caps_of(k, "v")}, t0);
  REQUIRE(count_cmd(w, proto::cmd::welcome, "v-id") == 1);
  auto welcome = proto::parse_welcome(w.messages[0].msg);
  REQUIRE(welcome.ok());
  CHECK(welcome->heartbeat_ms == 500);
  CHECK(welcome->coordinator_key == config().coordinator_key);
  REQUIRE(w.records.size() == 1);
  REQUIRE(std::holds_alternative<node_seen>(w.records[0]));
  CHECK(std::get<node_seen>(w.records[0]).caps.public_key == k.public_key_hex);
  CHECK(c.sessions() == 1);
}

TEST_CASE("a verifier READY before HELLO is refused and one beyond max_credit is clamped with an ERROR") {
  verification_core c(config()); // max_credit 16
  auto e = c.step(node_ready{"nobody", 3}, t0);
  REQUIRE(errors_to(e, "nobody").size() == 1);
  CHECK(errors_to(e, "nobody")[0].code == errc::not_registered);

  verifier v{verify::generate_key_pair(), "v-id", "v"};
  join(c, v, 10, t0);
  CHECK(c.credit_of(v.key.public_key_hex) == 10);
  auto over = c.step(node_ready{v.identity, 10}, t0 + 1);
  CHECK(errors_to(over, v.identity).size() == 1);
  CHECK(c.credit_of(v.key.public_key_hex) == 16);
  auto zero = c.step(node_ready{v.identity, 0}, t0 + 2);
  CHECK(errors_to(zero, v.identity).size() == 1);
  CHECK(c.credit_of(v.key.public_key_hex) == 16);
}

TEST_CASE("verification ticks send HEARTBEAT every interval and wake_at_us names the next timer") {
  verification_core c(config());
  verifier v{verify::generate_key_pair(), "v-id", "v"};
  auto hello = c.step(node_hello{v.identity, caps_of(v.key, v.name)}, t0);
  CHECK(hello.wake_at_us == t0 + 500 * ms); // the first heartbeat
  auto early = c.step(tick{}, t0 + 499 * ms);
  CHECK(count_cmd(early, proto::cmd::heartbeat, v.identity) == 0);
  auto on_time = c.step(tick{}, t0 + 500 * ms);
  CHECK(count_cmd(on_time, proto::cmd::heartbeat, v.identity) == 1);
  CHECK(on_time.wake_at_us == t0 + 1000 * ms);
  c.step(node_heartbeat{v.identity}, t0 + 900 * ms);
  auto next = c.step(tick{}, t0 + 1000 * ms);
  CHECK(count_cmd(next, proto::cmd::heartbeat, v.identity) == 1);
  CHECK(next.wake_at_us == t0 + 1500 * ms);
  // Silence from 900 ms: lost at 2400 ms, not before.
  c.step(tick{}, t0 + 2399 * ms);
  CHECK(c.sessions() == 1);
  auto lost = c.step(tick{}, t0 + 2400 * ms);
  CHECK(c.sessions() == 0);
  CHECK(lost.wake_at_us == 0);
}

TEST_CASE("an executed job handed to verification twice is judged once") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier v{verify::generate_key_pair(), "v-id", "v"};
  join(c, v, 4, t0);
  auto job = executed(1, "full", provider);
  auto e1 = c.step(job, t0);
  auto e2 = c.step(job, t0 + 1);
  CHECK(verifies(e1, v.identity).size() == 1);
  CHECK(verifies(e2).empty());
  CHECK(c.credit_of(v.key.public_key_hex) == 3);
}

TEST_CASE("verification recovery samples the executed jobs again with the same decision and dispatches them") {
  const auto provider = verify::generate_key_pair();
  const auto cfg = config(0.5);
  snapshot s;
  std::vector<executed_job> jobs;
  for (int id = 1; id <= 60; ++id) {
    auto job = executed(id, id % 3 == 0 ? "full" : "sampled", provider, 3);
    jobs.push_back(job);
    stored_job sj;
    sj.spec.id = id;
    sj.spec.client_id = job.client_id;
    sj.spec.tier = job.tier;
    sj.spec.input = job.input;
    sj.state = job_state::executed;
    sj.attempt = 1;
    sj.seq = 3;
    sj.result = execution_result{{0}, {}, job.receipt, {}};
    s.open_jobs.push_back(sj);
  }
  stored_job queued; // not executed: not this core's
  queued.spec.id = 100;
  queued.state = job_state::queued;
  s.open_jobs.push_back(queued);

  // What a core that never crashed decides.
  verification_core live(cfg);
  std::set<std::int64_t> live_unsampled;
  for (const auto& j : jobs)
    for (const auto& t : live.step(j, t0).to_settlement)
      live_unsampled.insert(t.job_id);

  auto c = verification_core::recover(cfg, s, t0 + 1000);
  auto first = c.step(tick{}, t0 + 1000);
  CHECK(first.records.empty());
  std::set<std::int64_t> unsampled;
  for (const auto& t : first.to_settlement) {
    CHECK(t.seq == 4);
    CHECK(t.verdict == job_state::unsampled);
    unsampled.insert(t.job_id);
  }
  CHECK(unsampled == live_unsampled);
  CHECK_FALSE(unsampled.empty());
  CHECK(c.pending() == jobs.size() - unsampled.size());

  verifier v{verify::generate_key_pair(), "v-id", "v"};
  auto j = join(c, v, 16, t0 + 2000);
  std::set<std::int64_t> dispatched;
  for (const auto& task : verifies(j, v.identity)) {
    CHECK(task.input.data == input_of(task.job_id).data);
    dispatched.insert(task.job_id);
  }
  CHECK(dispatched.size() == std::min<std::size_t>(16, jobs.size() - unsampled.size()));
  for (auto id : dispatched)
    CHECK(unsampled.count(id) == 0);
}

TEST_CASE("a VERDICT that does not prove this verifier re-ran this job is refused; the job goes elsewhere") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier a{verify::generate_key_pair(), "a-id", "a"};
  verifier b{verify::generate_key_pair(), "b-id", "b"};
  join(c, a, 2, t0);
  join(c, b, 1, t0);
  auto sent = verifies(c.step(executed(7, "full", provider), t0), a.identity);
  REQUIRE(sent.size() == 1);
  auto v = verdict_for(sent[0], a);
  const char* code = errc::bad_input;
  SUBCASE("signed by another key") {
    verify::sign_verdict(*v.verdict, b.key);
    code = errc::bad_signature;
  }
  SUBCASE("a signature that does not cover the hashes") {
    v.verdict->output_hash = verify::sha256_hex("output 7 copied after signing");
    code = errc::bad_signature;
  }
  SUBCASE("a re-run of another input") {
    v.verdict->input_hash = verify::sha256_hex("another input");
    verify::sign_verdict(*v.verdict, a.key);
  }
  SUBCASE("a re-run of another model") {
    v.verdict->model_hash = verify::sha256_hex("another model");
    verify::sign_verdict(*v.verdict, a.key);
  }
  SUBCASE("a trace root that is not the root of its layer hashes") {
    v.verdict->layer_hashes[0] = verify::sha256_hex("not the layer");
    verify::sign_verdict(*v.verdict, a.key);
  }
  SUBCASE("no layer hashes") {
    v.verdict->layer_hashes.clear();
    verify::sign_verdict(*v.verdict, a.key);
  }
  SUBCASE("the verdict of another job") {
    v.verdict->job_id = 8;
    verify::sign_verdict(*v.verdict, a.key);
  }
  CAPTURE(code);
  auto e = c.step(node_verdict{a.identity, v}, t0 + 10);
  auto errs = errors_to(e, a.identity);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].code == std::string(code));
  CHECK(errs[0].job_id == 7);
  CHECK(e.records.empty()); // no judgement
  CHECK(e.to_settlement.empty());
  CHECK(verifies(e, b.identity).size() == 1); // another verifier gets it
  CHECK(c.verifier_of(7) == b.key.public_key_hex);
  CHECK(c.credit_of(a.key.public_key_hex) == 2); // a's slot came back
}

TEST_CASE("'could not run' is no judgement: the job goes to another verifier and is never DISPUTED") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier a{verify::generate_key_pair(), "a-id", "a"};
  verifier b{verify::generate_key_pair(), "b-id", "b"};
  join(c, a, 2, t0);
  join(c, b, 1, t0);
  auto sent = verifies(c.step(executed(3, "full", provider), t0), a.identity);
  REQUIRE(sent.size() == 1);
  proto::verdict_reply cannot;
  cannot.job_id = 3;
  cannot.reason = "model is not on this node";
  auto e = c.step(node_verdict{a.identity, cannot}, t0 + 10);
  CHECK(e.records.empty());
  CHECK(errors_to(e, a.identity).empty());
  REQUIRE(verifies(e, b.identity).size() == 1);
  auto judged = c.step(node_verdict{b.identity, verdict_for(verifies(e, b.identity)[0], b)}, t0 + 20);
  REQUIRE(transitions(judged).size() == 1);
  CHECK(transitions(judged)[0].to == job_state::verified);
}

TEST_CASE("a VERIFY goes only to a verifier that has the model") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier without{verify::generate_key_pair(), "w-id", "without"};
  auto caps = caps_of(without.key, without.name);
  caps.models = {verify::sha256_hex("another model")};
  join(c, without, 8, t0, caps);
  CHECK(verifies(c.step(executed(1, "full", provider), t0)).empty());
  CHECK(c.pending() == 1);
  verifier with{verify::generate_key_pair(), "m-id", "with"};
  auto j = join(c, with, 1, t0 + 1);
  CHECK(verifies(j, with.identity).size() == 1);
  CHECK(verifies(j, without.identity).empty());
}

TEST_CASE("a verifier never judges a provider of the same operator, by key or by declared operator") {
  const auto provider = verify::generate_key_pair();
  const auto op = verify::generate_key_pair();
  verification_core c(config());
  auto job = executed(1, "full", provider);
  job.provider_operator = op.public_key_hex;
  verifier op_itself{op, "op-id", "operator-itself"};
  verifier run_by_op{verify::generate_key_pair(), "ro-id", "run-by-operator"};
  verifier run_by_provider{verify::generate_key_pair(), "rp-id", "run-by-provider"};
  join(c, op_itself, 8, t0);
  for (auto* v : {&run_by_op, &run_by_provider}) {
    auto caps = caps_of(v->key, v->name);
    caps.operator_key = v == &run_by_op ? op.public_key_hex : provider.public_key_hex;
    join(c, *v, 8, t0, caps);
  }
  CHECK(verifies(c.step(job, t0)).empty());
  CHECK(c.pending() == 1);
  verifier outsider{verify::generate_key_pair(), "o-id", "outsider"};
  auto j = join(c, outsider, 1, t0 + 1);
  CHECK(verifies(j).size() == 1);
  CHECK(verifies(j, outsider.identity).size() == 1);
}

namespace {
admin_action order(admin_action::kind what, std::string target, std::int64_t value = 0) {
  admin_action a;
  a.what = what;
  a.who = "alice";
  a.ref = "admin:x";
  a.target = std::move(target);
  a.value = value;
  return a;
}
} // namespace

TEST_CASE("an operator's sample rate applies to the next receipts; 0 samples none, 1 all") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config(0.1));
  c.step(order(admin_action::kind::sample_rate, "", 0), t0);
  CHECK(c.sample_rate() == 0.0);
  for (int id = 1; id <= 50; ++id)
    CHECK(c.step(executed(id, "sampled", provider), t0).to_settlement.size() == 1);
  c.step(order(admin_action::kind::sample_rate, "", 1'000'000), t0);
  for (int id = 51; id <= 100; ++id)
    CHECK(c.step(executed(id, "sampled", provider), t0).to_settlement.empty());
  CHECK(c.pending() == 50);
}

TEST_CASE("a drained verifier gets no VERIFY; a banned one loses its session and its tasks go to another") {
  const auto provider = verify::generate_key_pair();
  verification_core c(config());
  verifier a{verify::generate_key_pair(), "a-id", "a"}, b{verify::generate_key_pair(), "b-id", "b"};
  join(c, a, 4, t0);
  c.step(order(admin_action::kind::drain, a.key.public_key_hex), t0);
  auto e = c.step(executed(1, "full", provider), t0);
  CHECK(verifies(e).empty());
  c.step(order(admin_action::kind::undrain, a.key.public_key_hex), t0);
  CHECK(c.verifier_of(1) == a.key.public_key_hex); // undrained: dispatched at once
  join(c, b, 4, t0);
  auto banned = c.step(order(admin_action::kind::ban, a.key.public_key_hex), t0 + 1);
  CHECK(c.sessions() == 1);
  CHECK(verifies(banned, b.identity).size() == 1);
  CHECK(c.verifier_of(1) == b.key.public_key_hex);
  auto hello = c.step(node_hello{"a-new", caps_of(a.key, a.name)}, t0 + 2);
  CHECK(count_cmd(hello, proto::cmd::welcome, "a-new") == 0);
  CHECK(c.sessions() == 1);
}
