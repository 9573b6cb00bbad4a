#include "core/verification.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "kernels/model.hpp"
#include "proto/commands.hpp"
#include "verify/merkle.hpp"
#include "verify/sampling.hpp"

namespace haca::core {
namespace {

constexpr time_us us_of_ms(std::int64_t ms) { return ms * 1000; }

// A short, printable piece of a peer's value for a log line or a detail: at most n bytes,
// anything outside 0x21..0x7E shown as '?'.
std::string shown(const std::string& s, std::size_t n = 12) {
  std::string out = s.substr(0, n);
  for (char& c : out)
    if (c < 0x21 || c > 0x7E)
      c = '?';
  return out.empty() ? std::string("-") : out;
}

outbound to_node(const std::string& identity, proto::message m) { return {port::node, identity, std::move(m)}; }

outbound error_to(const std::string& identity, const char* code, std::string reason, std::int64_t job_id = 0) {
  return to_node(identity, proto::make_error(haca::make_error(code, proto::bounded_text(reason)), {}, job_id));
}

std::string who(const proto::capabilities& caps) {
  return "'" + shown(caps.name, 64) + "' (" + shown(caps.public_key) + ")";
}

// A verifier judges a provider only when neither controls the other's key as declared in their
// HELLOs: not the provider's own key, not its operator's, and not a verifier run by either.
bool independent(const proto::capabilities& verifier, const executed_job& job) {
  const auto& provider = job.receipt.provider_key;
  const auto& op = job.provider_operator;
  auto is_provider_side = [&](const std::string& key) { return !key.empty() && (key == provider || key == op); };
  return !is_provider_side(verifier.public_key) && !is_provider_side(verifier.operator_key);
}

bool has_model(const proto::capabilities& verifier, const std::string& model) {
  return std::find(verifier.models.begin(), verifier.models.end(), model) != verifier.models.end();
}

// Whether a signed verdict proves that `verifier_key` re-ran this job: its signature, the job,
// the model and input it names, and a trace root that is the root of its layer hashes. The
// error says what is wrong.
std::optional<error> check_verdict(const verify::verdict& v, const executed_job& job, const std::string& verifier_key) {
  if (v.verifier_key != verifier_key)
    return error{errc::bad_signature, "the verdict is signed by " + shown(v.verifier_key) + ", not by your key " +
                                          shown(verifier_key)};
  if (!verify::verify_verdict(v))
    return error{errc::bad_signature, "the verdict's signature does not verify against your key"};
  if (v.job_id != job.job_id || v.model_hash != job.receipt.model_hash || v.input_hash != job.receipt.input_hash)
    return error{errc::bad_input, "the verdict names job " + std::to_string(v.job_id) + ", model " +
                                      shown(v.model_hash) + " and input " + shown(v.input_hash) + "; job " + std::to_string(job.job_id) + " is model " +
                                      shown(job.receipt.model_hash) + " on input " + shown(job.receipt.input_hash)};
  if (v.layer_hashes.empty() || verify::merkle_root(v.layer_hashes) != v.trace_root)
    return error{errc::bad_input, "the verdict's trace_root is not the Merkle root of its " +
                                      std::to_string(v.layer_hashes.size()) + " layer_hashes"};
  return std::nullopt;
}

// Bisection of a dispute: the first trace layer whose hashes differ (both sides' hashes are
// signed: the receipt's trace root commits the provider's, the verdict carries the verifier's).
// The layers before it agree, so a referee can re-run that one layer from the agreed input.
std::string first_difference(const std::vector<std::string>& provider, const std::vector<std::string>& verifier) {
  if (provider.empty())
    return "the provider's layer hashes are not known (executed before a restart)";
  if (provider.size() != verifier.size())
    return "the two sides hash " + std::to_string(provider.size()) + " and " + std::to_string(verifier.size()) +
           " trace layers";
  for (std::size_t i = 0; i < provider.size(); ++i)
    if (provider[i] != verifier[i])
      return "first differing trace layer " + std::to_string(i) + " of " + std::to_string(provider.size()) +
             " (provider " + shown(provider[i]) + ", verifier " + shown(verifier[i]) + ")";
  return "every layer hash agrees, only the output differs";
}

} // namespace

verification_core::verification_core(verification_config cfg) : cfg_(std::move(cfg)) {
  if (cfg_.heartbeat_ms <= 0)
    cfg_.heartbeat_ms = proto::default_heartbeat_ms;
  if (cfg_.verify_timeout_ms <= 0)
    cfg_.verify_timeout_ms = 1;
  if (cfg_.max_credit < 1)
    cfg_.max_credit = 1;
}

verification_core verification_core::recover(verification_config cfg, const snapshot& s, time_us now) {
  if (s.sample_rate)
    cfg.sample_rate = *s.sample_rate; // an operator's, over the config file's
  verification_core c(std::move(cfg));
  c.lies_ = s.verifier_lies;
  c.banned_ = s.banned;
  c.drained_ = s.drained;
  for (const auto& j : s.open_jobs) {
    if (j.state != job_state::executed)
      continue;
    if (!j.result) {
      c.carry_.errors.push_back("recovery: job " + std::to_string(j.spec.id) +
                               " is EXECUTED but has no stored receipt; it is not verified");
      continue;
    }
    executed_job e;
    e.job_id = j.spec.id;
    e.attempt = j.attempt;
    e.seq = j.seq;
    e.client_id = j.spec.client_id;
    e.tier = j.spec.tier;
    e.receipt = j.result->receipt;
    e.provider_operator = j.provider_operator;
    e.input = j.spec.input;
    e.provider_layers = j.result->layer_hashes; // stored with the receipt: disputes still bisect
    c.on(e, now, c.carry_);
  }
  return c;
}

effects verification_core::step(const verification_event& ev, time_us now) {
  effects out = std::move(carry_);
  carry_ = effects{};
  std::visit([&](const auto& e) { on(e, now, out); }, ev);
  out.wake_at_us = next_wake();
  return out;
}

std::optional<std::string> verification_core::verifier_of(std::int64_t job_id) const {
  auto it = in_flight_.find(job_id);
  if (it == in_flight_.end())
    return std::nullopt;
  return it->second.verifier_key;
}

std::int32_t verification_core::credit_of(const std::string& verifier_key) const {
  auto it = sessions_.find(verifier_key);
  return it == sessions_.end() ? 0 : it->second.credit;
}

std::map<std::string, verification_core::session_view> verification_core::session_views() const {
  std::map<std::string, session_view> out;
  for (const auto& [key, s] : sessions_)
    out.emplace(key, session_view{s.credit, s.last_heard, 0});
  for (const auto& [id, f] : in_flight_)
    if (auto it = out.find(f.verifier_key); it != out.end())
      ++it->second.in_flight;
  return out;
}

bool verification_core::barred(const std::string& verifier_key) const {
  if (banned_.count(verifier_key))
    return true;
  auto it = lies_.find(verifier_key);
  return cfg_.max_verifier_lies > 0 && it != lies_.end() && it->second >= cfg_.max_verifier_lies;
}

verification_core::session* verification_core::session_of(const std::string& identity) {
  auto k = key_of_.find(identity);
  if (k == key_of_.end())
    return nullptr;
  auto s = sessions_.find(k->second);
  if (s == sessions_.end() || s->second.identity != identity)
    return nullptr;
  return &s->second;
}

// ---- executed jobs: sampling ----

void verification_core::on(const executed_job& e, time_us now, effects& out) {
  if (known_.count(e.job_id)) {
    out.notes.push_back("verification: job " + std::to_string(e.job_id) + " arrived again; already being judged");
    return;
  }
  if (e.receipt.job_id != e.job_id) {
    out.errors.push_back("verification: job " + std::to_string(e.job_id) + " carries the receipt of job " +
                         std::to_string(e.receipt.job_id) + "; not judged");
    return;
  }
  const double p = e.tier == "none" ? 0.0 : e.tier == "full" ? 1.0 : cfg_.sample_rate;
  if (!verify::sampled(cfg_.sampling_secret, verify::receipt_hash(e.receipt), p)) {
    // Not drawn: nothing to wait for and nothing to store now. The draw is a function of the
    // receipt, so a restart draws the same; the block that settles the job records UNSAMPLED
    // with SETTLED (one write per job fewer on the busiest path).
    out.to_settlement.push_back(judged_job{e.job_id, e.attempt, e.seq + 1, e.client_id, e.receipt,
                                           job_state::unsampled, {}});
    return;
  }
  if (pending_.size() >= cfg_.max_pending) {
    out.errors.push_back("verification: " + std::to_string(pending_.size()) +
                         " sampled jobs wait for a verifier (the limit); job " + std::to_string(e.job_id) +
                         " stays EXECUTED until a restart samples it again");
    return;
  }
  known_.insert(e.job_id);
  pending_.push_back(task{e, 0, {}});
  dispatch(now, out);
}

void verification_core::judge(const executed_job& job, job_state verdict, std::string detail, time_us now,
                              effects& out, ruling_parties ruling) {
  if (!legal(job_state::executed, verdict)) {
    out.errors.push_back("verification: job " + std::to_string(job.job_id) + ": illegal transition EXECUTED -> " +
                         state_name(verdict) + "; not judged");
    known_.erase(job.job_id);
    return;
  }
  job_transition t;
  t.job_id = job.job_id;
  t.seq = job.seq + 1;
  t.from = job_state::executed;
  t.to = verdict;
  t.attempt = job.attempt;
  t.detail = proto::bounded_text(detail);
  t.at_us = now;
  out.records.push_back(std::move(t));
  judging_[job.job_id] =
      judged_job{job.job_id, job.attempt, job.seq + 1, job.client_id, job.receipt, verdict, std::move(ruling)};
}

// ---- dispatch ----

verification_core::session* verification_core::choose(const task& t, time_us now) {
  session* best = nullptr;
  for (auto& [key, s] : sessions_) {
    if (s.credit <= 0 || drained_.count(key) || !independent(s.caps, t.job) ||
        !has_model(s.caps, t.job.receipt.model_hash))
      continue;
    if (key == t.last_verifier && now < t.retry_at)
      continue; // it could not run this job a moment ago
    if (!best) {
      best = &s;
      continue;
    }
    // Prefer one that did not just fail on this job, then the most credit, then the smallest
    // key (the map's order).
    const bool s_fresh = key != t.last_verifier;
    const bool b_fresh = best->caps.public_key != t.last_verifier;
    if (s_fresh != b_fresh) {
      if (s_fresh)
        best = &s;
      continue;
    }
    if (s.credit > best->credit)
      best = &s;
  }
  return best;
}

void verification_core::dispatch(time_us now, effects& out) {
  for (auto it = pending_.begin(); it != pending_.end() && credit_total_ > 0;) {
    session* s = choose(*it, now);
    if (!s) {
      ++it; // no independent verifier with the model has credit now: it waits for one
      continue;
    }
    const auto& job = it->job;
    // Blind: the model and the input only. The verifier cannot copy what it never sees.
    out.messages.push_back(to_node(s->identity, proto::make_verify({job.job_id, job.receipt.model_hash, job.input})));
    --s->credit;
    --credit_total_;
    const time_us deadline = now + us_of_ms(cfg_.verify_timeout_ms);
    const std::int64_t id = job.job_id;
    deadlines_.insert({deadline, id});
    in_flight_[id] = flight{std::move(*it), s->caps.public_key, deadline};
    it = pending_.erase(it);
  }
}

void verification_core::to_pending_front(flight f) {
  deadlines_.erase({f.deadline, f.t.job.job_id});
  f.t.tries++;
  f.t.last_verifier = f.verifier_key;
  pending_.push_front(std::move(f.t));
}

void verification_core::lose_session(const std::string& key, effects& out, const std::string& why) {
  auto s = sessions_.find(key);
  if (s == sessions_.end())
    return;
  std::vector<std::int64_t> jobs;
  for (const auto& [id, f] : in_flight_)
    if (f.verifier_key == key)
      jobs.push_back(id);
  // Back to the front in job order (the last pushed ends up first).
  for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
    auto f = in_flight_.find(*it);
    flight moved = std::move(f->second);
    in_flight_.erase(f);
    to_pending_front(std::move(moved));
  }
  credit_total_ -= s->second.credit;
  auto k = key_of_.find(s->second.identity);
  if (k != key_of_.end() && k->second == key)
    key_of_.erase(k);
  out.notes.push_back("verification: verifier " + who(s->second.caps) + " lost (" + why + "); " +
                      std::to_string(jobs.size()) + " tasks back to pending");
  out.nodes_left.push_back({key, "verifier"}); // its stake's cool-down starts
  sessions_.erase(s);
}

// ---- node messages ----

void verification_core::on(const node_hello& e, time_us now, effects& out) {
  if (e.caps.role != "verifier") {
    out.messages.push_back(error_to(e.identity, errc::bad_input,
                                    "HELLO role '" + shown(e.caps.role, 32) + "' is not served here: only verifiers"));
    return;
  }
  if (e.caps.public_key.empty()) {
    out.messages.push_back(error_to(e.identity, errc::bad_input, "HELLO without a public key"));
    return;
  }
  const std::string& key = e.caps.public_key;
  if (barred(key)) {
    // Every verdict of a verifier caught lying would cost the referee a whole re-run.
    out.messages.push_back(error_to(e.identity, errc::forbidden,
                                    banned_.count(key) ? std::string("this node key is banned by an operator")
                                                       : "this verifier lost " + std::to_string(lies_.at(key)) +
                                                             " referee rulings (it signed wrong hashes); it verifies "
                                                             "nothing more here"));
    out.nodes_left.push_back({key, "verifier"}); // admitted for its stake, which now cools down
    return;
  }
  // The same identity with another key: its old session ends.
  if (auto k = key_of_.find(e.identity); k != key_of_.end() && k->second != key)
    lose_session(k->second, out, "its connection said HELLO with another key");
  // The same key again (a new connection or a restart): the old session ends; what it was
  // verifying goes back to pending.
  if (sessions_.count(key))
    lose_session(key, out, "replaced by a new HELLO");
  if (sessions_.empty() || next_heartbeat_ <= now)
    next_heartbeat_ = now + us_of_ms(cfg_.heartbeat_ms);
  sessions_[key] = session{e.identity, e.caps, 0, now};
  key_of_[e.identity] = key;
  out.messages.push_back(to_node(e.identity, proto::make_welcome({cfg_.heartbeat_ms, cfg_.coordinator_key})));
  out.records.push_back(node_seen{e.caps, now});
  out.notes.push_back("verification: verifier " + who(e.caps) + " joined");
  dispatch(now, out); // tasks of a replaced session may go to another verifier
}

void verification_core::on(const node_ready& e, time_us now, effects& out) {
  session* s = session_of(e.identity);
  if (!s) {
    out.messages.push_back(error_to(e.identity, errc::not_registered, "READY before HELLO"));
    return;
  }
  s->last_heard = now;
  if (e.credit <= 0) {
    out.messages.push_back(
        error_to(e.identity, errc::bad_input, "READY credit must be at least 1, got " + std::to_string(e.credit)));
    return;
  }
  const std::int32_t room = cfg_.max_credit - std::min(s->credit, cfg_.max_credit);
  std::int32_t add = e.credit;
  if (add > room) {
    out.messages.push_back(error_to(e.identity, errc::bad_input,
                                    "READY " + std::to_string(e.credit) + " would hold more than " +
                                        std::to_string(cfg_.max_credit) + " credit; clamped to " +
                                        std::to_string(cfg_.max_credit)));
    add = room;
  }
  s->credit += add;
  credit_total_ += add;
  dispatch(now, out);
}

void verification_core::on(const node_heartbeat& e, time_us now, effects& out) {
  session* s = session_of(e.identity);
  if (!s) {
    out.messages.push_back(error_to(e.identity, errc::not_registered, "HEARTBEAT before HELLO"));
    return;
  }
  s->last_heard = now;
}

void verification_core::on(const node_verdict& e, time_us now, effects& out) {
  const std::int64_t job_id = e.verdict.job_id;
  session* s = session_of(e.identity);
  if (!s) {
    out.messages.push_back(error_to(e.identity, errc::not_registered, "VERDICT before HELLO", job_id));
    return;
  }
  s->last_heard = now;
  auto it = in_flight_.find(job_id);
  if (it == in_flight_.end() || it->second.verifier_key != s->caps.public_key) {
    out.messages.push_back(error_to(e.identity, errc::unknown_job,
                                    "job " + std::to_string(job_id) + " is not being verified by you", job_id));
    return;
  }
  flight f = std::move(it->second);
  in_flight_.erase(it);
  deadlines_.erase({f.deadline, job_id});
  if (s->credit < cfg_.max_credit) { // the slot comes back
    ++s->credit;
    ++credit_total_;
  }
  const auto& job = f.t.job;
  if (!e.verdict.verdict) {
    // "Could not run" (no such model, say) is no judgement: the job goes to another verifier,
    // or back to this one after a while.
    out.notes.push_back("verifier " + who(s->caps) + " could not run job " + std::to_string(job_id) + ": " +
                        shown(e.verdict.reason, 128));
    retry_elsewhere(std::move(f), now, out);
    return;
  }
  const auto& v = *e.verdict.verdict;
  if (auto bad = check_verdict(v, job, s->caps.public_key)) {
    // A verdict that does not prove a re-execution of this job by this verifier is no
    // judgement either: refused, and the job goes to another verifier.
    out.messages.push_back(error_to(e.identity, bad->code.c_str(), bad->reason, job_id));
    out.notes.push_back("verifier " + who(s->caps) + " sent a bad VERDICT for job " + std::to_string(job_id) + ": " +
                        bad->reason);
    retry_elsewhere(std::move(f), now, out);
    return;
  }
  const auto& r = job.receipt;
  ++verdicts_given_[s->caps.public_key];
  if (v.trace_root == r.trace_root && v.output_hash == r.output_hash)
    judge(job, job_state::verified, "by verifier " + who(s->caps), now, out);
  else
    start_dispute(std::move(f), v, *s, now, out);
  dispatch(now, out);
}

// ---- disputes: bisection and the referee ----

void verification_core::start_dispute(flight f, const verify::verdict& v, const session& s, time_us now, effects& out) {
  const auto id = f.t.job.job_id;
  dispute d{std::move(f.t), v, s.identity, who(s.caps), -1, 0, false, std::nullopt};
  const auto& provider = d.t.job.provider_layers;
  const auto& verifier = d.verdict.layer_hashes;
  out.notes.push_back("verification: job " + std::to_string(id) + " disputed: verifier " + d.verifier_who + " got trace root " +
                      shown(v.trace_root) + ", the receipt says " + shown(d.t.job.receipt.trace_root) + "; " +
                      first_difference(provider, verifier) + "; the referee decides");
  const auto input = d.t.job.input;
  const auto n = provider.size();
  if (provider.empty() || n != verifier.size()) {
    // No bisection possible (the provider's layer hashes were lost in a restart): the referee
    // re-runs the whole job.
    auto& kept = disputes_[id] = std::move(d);
    referee(kept, referee_task::mode::whole_job, input, out);
    return;
  }
  std::size_t t = 0;
  while (t < n && provider[t] == verifier[t])
    ++t;
  if (t == n)
    t = n - 1; // every layer agrees, the outputs do not: the last layer decides
  d.layer = static_cast<std::int32_t>(t);
  auto& kept = disputes_[id] = std::move(d);
  if (t == 0) {
    referee(kept, referee_task::mode::one_layer, input, out); // the input is the agreed activation
    return;
  }
  // The activation entering layer t is the output of layer t-1, whose hash both signed: the
  // verifier sends it, and the referee re-runs one layer from it.
  out.messages.push_back(to_node(kept.verifier_identity,
                                 proto::make_probe({id, kept.t.job.receipt.model_hash, kept.layer - 1, input})));
  kept.probe_deadline = now + us_of_ms(cfg_.verify_timeout_ms);
  probe_deadlines_.insert({kept.probe_deadline, id});
}

void verification_core::referee(dispute& d, referee_task::mode how, kernels::tensor entering, effects& out) {
  if (d.probe_deadline) {
    probe_deadlines_.erase({d.probe_deadline, d.t.job.job_id});
    d.probe_deadline = 0;
  }
  out.referee_tasks.push_back({d.t.job.job_id, d.t.job.receipt.model_hash, how, d.layer, std::move(entering),
                               how == referee_task::mode::one_layer ? d.t.job.input : kernels::tensor{}});
}

void verification_core::on(const node_activation& e, time_us, effects& out) {
  const auto id = e.reply.job_id;
  auto it = disputes_.find(id);
  if (it == disputes_.end() || it->second.verifier_identity != e.identity || !it->second.probe_deadline ||
      e.reply.layer != it->second.layer - 1) {
    out.messages.push_back(error_to(e.identity, errc::unknown_job,
                                    "no PROBE for layer " + std::to_string(e.reply.layer) + " of job " +
                                        std::to_string(id) + " is waiting for you",
                                    id));
    return;
  }
  auto& d = it->second;
  const auto& agreed = d.t.job.provider_layers[static_cast<std::size_t>(d.layer - 1)];
  // Only the bytes are signed (hashed): the shape is the job's rows by what they hold, never the
  // sender's, so a wrong shape cannot make the referee fail.
  const auto rows = d.t.job.input.shape.empty() ? 0 : d.t.job.input.shape[0];
  const auto bytes = static_cast<std::int64_t>(e.reply.activation.data.size());
  if (rows > 0 && bytes > 0 && bytes % rows == 0 && kernels::layer_hash(e.reply.activation.data) == agreed) {
    referee(d, referee_task::mode::one_layer, {kernels::dtype::i8, {rows, bytes / rows}, e.reply.activation.data}, out);
    return;
  }
  out.notes.push_back("verification: job " + std::to_string(id) + ": the activation the verifier sent for layer " +
                      std::to_string(d.layer - 1) + " does not hash to the agreed " + shown(agreed) +
                      "; the referee computes it");
  referee(d, referee_task::mode::from_input, d.t.job.input, out);
}

void verification_core::on(const referee_checked& e, time_us now, effects& out) {
  auto it = disputes_.find(e.job_id);
  if (it == disputes_.end() || it->second.probe_deadline) {
    out.notes.push_back("verification: a referee result for job " + std::to_string(e.job_id) + " nobody waits for");
    return;
  }
  dispute d = std::move(it->second);
  disputes_.erase(it);
  if (!e.result && d.provider_lost) {
    // The layer ruling against the provider stands; only the check of the verifier's later
    // layers could not be made.
    auto ruling = *d.provider_lost;
    ruling.loser = "provider";
    ruling.detail = proto::bounded_text("the provider lost: " + ruling.detail + " (the verifier's later layers "
                                        "were not checked: " + e.problem + ")");
    ruling_parties parties;
    parties.provider_lost = true;
    parties.honest_verifier = d.verdict.verifier_key;
    parties.input = d.t.job.input;
    out.records.push_back(ruling);
    judge(d.t.job, job_state::disputed, ruling.detail, now, out, std::move(parties));
    return;
  }
  if (!e.result) {
    // No ruling possible here (the coordinator lacks the model, say): the mismatch stands
    // against the receipt, as before referees.
    out.errors.push_back("verification: job " + std::to_string(e.job_id) + ": the referee could not run: " + e.problem);
    judge(d.t.job, job_state::disputed,
          "verifier " + d.verifier_who + " disagrees with the receipt; no referee ruling (" + e.problem + ")", now, out);
    return;
  }
  rule(std::move(d), *e.result, now, out);
}

// The side whose signed hash for the re-run layer differs from the referee's lost, and the
// ruling is recorded with its evidence. A lying provider's job is DISPUTED (the client pays
// nothing). When only the verifier lied, its judgement is void and the referee finishes the
// job itself: it re-runs the whole job, so the job ends VERIFIED or DISPUTED on the referee's
// word (rare: a lie is slashed, and a verifier that lies once is caught every time).
void verification_core::rule(dispute d, const referee_result& r, time_us now, effects& out) {
  const auto& job = d.t.job;
  const auto& receipt = job.receipt;
  const auto& v = d.verdict;
  const bool whole = d.layer < 0;
  // On a whole re-run a side is right when its trace root and output hash are the referee's.
  auto whole_run_matches = [&](const std::string& trace_root, const std::string& output_hash) {
    return r.trace_root == trace_root && r.output_hash == output_hash;
  };
  if (whole && d.provider_lost) {
    // The verifier was right where the provider first went wrong; its trace root and output
    // hash, checked against the referee's whole run, say whether it lied after that.
    auto ruling = *d.provider_lost;
    const bool verifier_ok = whole_run_matches(v.trace_root, v.output_hash);
    ruling.loser = verifier_ok ? "provider" : "both";
    ruling.detail = proto::bounded_text(
        "the " + ruling.loser + " lost: " + ruling.detail +
        (verifier_ok ? "; the referee's whole run agrees with the verifier"
                     : "; the referee's whole run has trace root " + shown(r.trace_root) + ", the verifier signed " +
                           shown(v.trace_root)));
    ruling_parties parties;
    parties.provider_lost = true;
    parties.input = job.input;
    if (verifier_ok)
      parties.honest_verifier = v.verifier_key;
    else
      parties.liar_verifier = v.verifier_key;
    out.records.push_back(ruling);
    out.notes.push_back("verification: job " + std::to_string(job.job_id) + ": " + ruling.detail);
    if (!verifier_ok)
      count_lie(v.verifier_key, job.job_id, out);
    judge(job, job_state::disputed, ruling.detail, now, out, std::move(parties));
    return;
  }
  if (whole && d.verifier_lost) {
    const bool ok = whole_run_matches(receipt.trace_root, receipt.output_hash);
    ruling_parties parties;
    parties.provider_lost = !ok;
    parties.liar_verifier = v.verifier_key;
    if (!ok)
      parties.input = job.input;
    judge(job, ok ? job_state::verified : job_state::disputed,
          "by the referee, which re-ran the whole job after verifier " + d.verifier_who + " lied: trace root " +
              shown(r.trace_root) + (ok ? ", as the receipt says" : ", the receipt says " + shown(receipt.trace_root)),
          now, out, std::move(parties));
    return;
  }
  dispute_ruling ruling;
  ruling.job_id = job.job_id;
  ruling.attempt = job.attempt;
  ruling.provider_key = receipt.provider_key;
  ruling.verifier_key = v.verifier_key;
  ruling.layer = d.layer;
  ruling.at_us = now;
  bool provider_ok = false, verifier_ok = false;
  if (whole) {
    provider_ok = whole_run_matches(receipt.trace_root, receipt.output_hash);
    verifier_ok = whole_run_matches(v.trace_root, v.output_hash);
    ruling.provider_hash = receipt.trace_root;
    ruling.verifier_hash = v.trace_root;
    ruling.referee_hash = r.trace_root;
  } else {
    const auto t = static_cast<std::size_t>(d.layer);
    const bool last = t + 1 == v.layer_hashes.size();
    ruling.provider_hash = job.provider_layers[t];
    ruling.verifier_hash = v.layer_hashes[t];
    ruling.referee_hash = r.layer_hash;
    provider_ok = r.layer_hash == ruling.provider_hash && (!last || r.output_hash == receipt.output_hash);
    verifier_ok = r.layer_hash == ruling.verifier_hash && (!last || r.output_hash == v.output_hash);
  }
  const std::string where = whole ? std::string("the whole job (no layer hashes to bisect)")
                                  : "trace layer " + std::to_string(d.layer);
  const std::string evidence = "the referee re-ran " + where + " and got " + shown(ruling.referee_hash) +
                               "; provider " + shown(receipt.provider_key) + " signed " + shown(ruling.provider_hash) +
                               ", verifier " + d.verifier_who + " signed " + shown(ruling.verifier_hash);
  if (!provider_ok && verifier_ok && !whole) {
    // Recorded once the referee's whole run has checked the verifier's later layers too.
    ruling.detail = evidence;
    const auto id = job.job_id;
    d.provider_lost = std::move(ruling);
    d.layer = -1;
    auto input = d.t.job.input;
    auto& kept = disputes_[id] = std::move(d);
    referee(kept, referee_task::mode::whole_job, std::move(input), out);
    return;
  }
  if (!provider_ok || !verifier_ok) {
    ruling.loser = !provider_ok && !verifier_ok ? "both" : !provider_ok ? "provider" : "verifier";
    ruling.detail = proto::bounded_text("the " + ruling.loser + " lost: " + evidence);
    out.records.push_back(ruling);
    out.notes.push_back("verification: job " + std::to_string(job.job_id) + ": " + ruling.detail);
  }
  if (!verifier_ok)
    count_lie(v.verifier_key, job.job_id, out);
  ruling_parties parties;
  parties.provider_lost = !provider_ok;
  if (!provider_ok)
    parties.input = job.input;
  if (!verifier_ok)
    parties.liar_verifier = v.verifier_key;
  else if (!provider_ok)
    parties.honest_verifier = v.verifier_key;
  if (!provider_ok) {
    judge(job, job_state::disputed, ruling.detail, now, out, std::move(parties));
    return;
  }
  if (whole) {
    judge(job, job_state::verified, "by the referee: " + ruling.detail, now, out, std::move(parties));
    return;
  }
  // The provider was right on the layer in question; the rest of its work is checked whole.
  const auto id = job.job_id;
  d.verifier_lost = true;
  d.layer = -1;
  auto input = d.t.job.input;
  auto& kept = disputes_[id] = std::move(d);
  referee(kept, referee_task::mode::whole_job, std::move(input), out);
}

// A ruling against a verifier: one more lie on its count; past --max-verifier-lies it is dropped.
void verification_core::count_lie(const std::string& verifier_key, std::int64_t job_id, effects& out) {
  ++lies_[verifier_key];
  if (!barred(verifier_key) || !sessions_.count(verifier_key))
    return;
  const auto identity = sessions_.at(verifier_key).identity;
  lose_session(verifier_key, out, "caught lying by the referee");
  out.messages.push_back(to_node(identity, proto::make_disconnect("you signed wrong hashes for job " +
                                                                  std::to_string(job_id) +
                                                                  " (the referee's ruling); you verify nothing more "
                                                                  "here")));
}

void verification_core::retry_elsewhere(flight f, time_us now, effects& out) {
  f.t.retry_at = now + us_of_ms(cfg_.verify_timeout_ms);
  to_pending_front(std::move(f));
  dispatch(now, out);
}

void verification_core::on(const node_gone& e, time_us now, effects& out) {
  session* s = session_of(e.identity);
  if (!s)
    return; // nothing to lose
  lose_session(s->caps.public_key, out, "disconnected: " + shown(e.reason, 128));
  dispatch(now, out);
}

// ---- commits ----

void verification_core::on(const committed& e, time_us, effects& out) {
  if (e.records.size() != e.outcomes.size())
    out.errors.push_back("verification: a commit confirmation with " + std::to_string(e.records.size()) +
                         " records and " + std::to_string(e.outcomes.size()) +
                         " outcomes; the unmatched records stay unconfirmed");
  const std::size_t n = std::min(e.records.size(), e.outcomes.size());
  for (std::size_t i = 0; i < n; ++i) {
    const auto& o = e.outcomes[i];
    if (const auto* t = std::get_if<job_transition>(&e.records[i])) {
      auto j = judging_.find(t->job_id);
      if (j == judging_.end() || j->second.seq != t->seq || j->second.verdict != t->to) {
        out.notes.push_back("verification: commit of job " + std::to_string(t->job_id) + " seq " +
                            std::to_string(t->seq) + " that this core does not wait for; ignored");
        continue;
      }
      if (o.what == outcome::kind::rejected) {
        out.errors.push_back("verification: job " + std::to_string(t->job_id) + ": " + state_name(t->to) +
                             " not stored (" + o.reason + "); not handed to settlement");
      } else {
        out.to_settlement.push_back(std::move(j->second));
      }
      judging_.erase(j);
      known_.erase(t->job_id);
    } else if (const auto* n = std::get_if<node_seen>(&e.records[i])) {
      if (o.what == outcome::kind::rejected)
        out.notes.push_back("verification: verifier " + who(n->caps) + " not stored (" + o.reason + ")");
    }
  }
}

// ---- timers ----

// An operator's order, committed by the execution core: a banned verifier's session ends at
// once (its tasks go to another), a drained one gets no new VERIFY.
void verification_core::on(const admin_action& a, time_us now, effects& out) {
  using kind = admin_action::kind;
  switch (a.what) {
  case kind::ban:
    banned_.insert(a.target);
    lose_session(a.target, out, "banned by " + a.who);
    break;
  case kind::unban:
    banned_.erase(a.target);
    break;
  case kind::drain:
    drained_.insert(a.target);
    break;
  case kind::undrain:
    drained_.erase(a.target);
    break;
  case kind::sample_rate:
    cfg_.sample_rate = static_cast<double>(a.value) / 1e6;
    break;
  default:
    return;
  }
  dispatch(now, out);
}

void verification_core::on(const tick&, time_us now, effects& out) {
  // Liveness: a session silent for heartbeat_liveness intervals is lost.
  const time_us liveness = us_of_ms(static_cast<std::int64_t>(proto::heartbeat_liveness) * cfg_.heartbeat_ms);
  std::vector<std::string> dead;
  for (const auto& [key, s] : sessions_)
    if (now - s.last_heard >= liveness)
      dead.push_back(key);
  for (const auto& key : dead)
    lose_session(key, out, "silent for " + std::to_string(liveness / 1000) + " ms");

  // Verification timeouts: the slot comes back and the task goes to the front of pending.
  std::vector<std::int64_t> late;
  for (auto it = deadlines_.begin(); it != deadlines_.end() && it->first <= now; ++it)
    late.push_back(it->second);
  for (auto it = late.rbegin(); it != late.rend(); ++it) {
    auto f = in_flight_.find(*it);
    if (f == in_flight_.end())
      continue;
    flight moved = std::move(f->second);
    in_flight_.erase(f);
    if (auto s = sessions_.find(moved.verifier_key); s != sessions_.end() && s->second.credit < cfg_.max_credit) {
      ++s->second.credit;
      ++credit_total_;
    }
    out.notes.push_back("verification: VERIFY of job " + std::to_string(*it) + " timed out at verifier " +
                        shown(moved.verifier_key) + "; dispatched again");
    to_pending_front(std::move(moved));
  }

  // A PROBE without an answer: the referee computes the activation itself.
  while (!probe_deadlines_.empty() && probe_deadlines_.begin()->first <= now) {
    auto& d = disputes_.at(probe_deadlines_.begin()->second);
    out.notes.push_back("verification: job " + std::to_string(d.t.job.job_id) + ": no activation from verifier " +
                        d.verifier_who + "; the referee computes it");
    referee(d, referee_task::mode::from_input, d.t.job.input, out);
  }

  if (sessions_.empty()) {
    next_heartbeat_ = 0;
  } else if (now >= next_heartbeat_) {
    for (const auto& [key, s] : sessions_)
      out.messages.push_back(to_node(s.identity, proto::make_heartbeat()));
    next_heartbeat_ = now + us_of_ms(cfg_.heartbeat_ms);
  }
  dispatch(now, out);
}

std::vector<outbound> verification_core::farewell() const {
  std::vector<outbound> out;
  for (const auto& [key, s] : sessions_)
    out.push_back(to_node(s.identity, proto::make_disconnect("the coordinator is shutting down")));
  return out;
}

time_us verification_core::next_wake() const {
  time_us wake = 0;
  auto consider = [&](time_us t) {
    if (t > 0 && (wake == 0 || t < wake))
      wake = t;
  };
  if (!sessions_.empty()) {
    consider(next_heartbeat_);
    const time_us liveness = us_of_ms(static_cast<std::int64_t>(proto::heartbeat_liveness) * cfg_.heartbeat_ms);
    for (const auto& [key, s] : sessions_)
      consider(s.last_heard + liveness);
  }
  if (!deadlines_.empty())
    consider(deadlines_.begin()->first);
  if (!probe_deadlines_.empty())
    consider(probe_deadlines_.begin()->first);
  return wake;
}

} // namespace haca::core
