#include "actors/metrics.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "actors/gateway.hpp"

namespace haca::actors {
namespace {

void count(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }

// A label value as the text format wants it: backslash, quote and newline escaped.
std::string label(const std::string& v) {
  std::string out;
  for (char c : v)
    out += c == '\\' ? "\\\\" : c == '"' ? "\\\"" : c == '\n' ? "\\n" : std::string(1, c);
  return out;
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

} // namespace

void result_window::trim(std::int64_t now_us) {
  while (!samples_.empty() && (samples_.front().first <= now_us - window_us_ || samples_.size() > cap_))
    samples_.pop_front();
}

void result_window::add(std::int64_t now_us, std::int64_t latency_us) {
  samples_.emplace_back(now_us, latency_us);
  trim(now_us);
}

std::optional<std::int64_t> nearest_rank(std::vector<std::int64_t>& values, double q) {
  if (values.empty())
    return std::nullopt;
  // The smallest value with at least q of all values at or below it.
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
  rank = std::clamp<std::size_t>(rank, 1, values.size());
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(rank - 1), values.end());
  return values[rank - 1];
}

result_window::stats result_window::read(std::int64_t now_us) {
  trim(now_us);
  stats s;
  s.window_s = static_cast<double>(window_us_) / 1e6;
  s.results = samples_.size();
  s.jobs_per_s = static_cast<double>(s.results) / s.window_s;
  std::vector<std::int64_t> lat;
  lat.reserve(samples_.size());
  for (const auto& [at, l] : samples_)
    lat.push_back(l);
  if (auto p = nearest_rank(lat, 0.5))
    s.p50_ms = static_cast<double>(*p) / 1e3;
  if (auto p = nearest_rank(lat, 0.99))
    s.p99_ms = static_cast<double>(*p) / 1e3;
  return s;
}

std::int64_t metrics::clock_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void metrics::committed(const std::vector<core::record>& records, const std::vector<core::outcome>& outcomes) {
  const auto state = [&](core::job_state s) { count(transitions_[static_cast<std::size_t>(s)]); };
  for (std::size_t i = 0; i < records.size() && i < outcomes.size(); ++i) {
    if (outcomes[i].what != core::outcome::kind::ok)
      continue;
    const auto& r = records[i];
    if (std::holds_alternative<core::job_insert>(r)) {
      state(core::job_state::queued);
      ++in_state_[static_cast<std::size_t>(core::job_state::queued)];
    } else if (const auto* t = std::get_if<core::job_transition>(&r)) {
      state(t->to);
      moved(t->from, t->to);
      provider_jobs(*t);
    } else if (const auto* b = std::get_if<core::block_commit>(&r)) {
      for (const auto& item : b->items) {
        if (item.verdict == core::job_state::unsampled)
          state(core::job_state::unsampled); // stored with its block
        state(core::job_state::settled);
        // An unsampled job goes EXECUTED -> UNSAMPLED -> SETTLED in its block's commit.
        moved(item.verdict == core::job_state::unsampled ? core::job_state::executed : item.verdict,
              core::job_state::settled);
      }
    } else if (std::holds_alternative<core::dispute_ruling>(r)) {
      count(rulings_);
    } else if (const auto* x = std::get_if<core::transfer>(&r); x && x->ref.rfind("slash:", 0) == 0) {
      count(slashes_);
    }
  }
}

void metrics::moved(core::job_state from, core::job_state to) {
  // A job is stored QUEUED by its insert: a transition the core made before that insert
  // committed (from SUBMITTED) moves the stored row from QUEUED.
  if (from == core::job_state::submitted)
    from = core::job_state::queued;
  --in_state_[static_cast<std::size_t>(from)];
  ++in_state_[static_cast<std::size_t>(to)];
}

void metrics::restore(const core::snapshot& s) {
  for (const auto& [state, n] : s.jobs_by_state)
    in_state_[static_cast<std::size_t>(state)] = n;
  std::lock_guard lock(mu_);
  for (const auto& j : s.open_jobs)
    if (j.state == core::job_state::assigned && !j.provider_key.empty())
      assigned_[j.spec.id] = j.provider_key;
}

// Each provider's load and jobs done, from its jobs' committed transitions (jobs ASSIGNED
// before this process started come from the snapshot: restore).
void metrics::provider_jobs(const core::job_transition& t) {
  std::lock_guard lock(mu_);
  if (t.from == core::job_state::assigned)
    if (auto it = assigned_.find(t.job_id); it != assigned_.end()) {
      if (t.to == core::job_state::executed)
        ++done_[it->second];
      assigned_.erase(it);
    }
  if (t.to == core::job_state::assigned && !t.provider_key.empty())
    assigned_[t.job_id] = t.provider_key;
}

void metrics::error_sent(const std::string& code) {
  std::lock_guard lock(mu_);
  if (errors_.size() < 64 || errors_.count(code)) // codes are a fixed set; bound it anyway
    ++errors_[code];
}

void metrics::result_latency(double seconds) {
  std::size_t i = 0;
  while (i < buckets.size() && seconds > buckets[i])
    ++i;
  count(latency_counts_[i]);
  count(latency_sum_us_, static_cast<std::uint64_t>(seconds * 1e6));
  std::lock_guard lock(mu_);
  recent_.add(clock_us(), static_cast<std::int64_t>(seconds * 1e6));
}

void metrics::set_verifiers(std::map<std::string, verifier_row> rows, std::map<std::string, std::uint64_t> verdicts) {
  std::lock_guard lock(mu_);
  verifiers_ = std::move(rows);
  verdicts_ = std::move(verdicts);
}

metrics::provider_live metrics::verifier(const std::string& key) const {
  std::lock_guard lock(mu_);
  provider_live out;
  if (auto it = verifiers_.find(key); it != verifiers_.end()) {
    out.connected = true;
    out.credit = it->second.credit;
    out.silent_seconds = it->second.silent_seconds;
    out.load = it->second.in_flight;
  }
  if (auto it = verdicts_.find(key); it != verdicts_.end())
    out.done = it->second;
  return out;
}

void metrics::set_track_records(std::map<std::string, market::verdict_record> records) {
  std::lock_guard lock(mu_);
  records_ = std::move(records);
}

metrics::provider_live metrics::provider(const std::string& key) const {
  std::lock_guard lock(mu_);
  provider_live out;
  if (auto it = providers_.find(key); it != providers_.end()) {
    out.connected = true;
    out.credit = it->second.credit;
    out.silent_seconds = it->second.silent_seconds;
  }
  if (auto it = done_.find(key); it != done_.end())
    out.done = it->second;
  if (auto it = records_.find(key); it != records_.end())
    out.record = it->second;
  for (const auto& [job, p] : assigned_) // bounded by the credit all providers gave
    if (p == key)
      ++out.load;
  return out;
}

metrics::snapshot metrics::read(std::size_t top, std::int64_t now_us) {
  snapshot s;
  for (std::size_t i = 0; i < transitions_.size(); ++i) {
    s.entered[i] = transitions_[i].load();
    s.now[i] = in_state_[i].load();
  }
  s.rulings = rulings_.load();
  s.slashes = slashes_.load();
  s.jobs_waiting = jobs_waiting.load();
  s.jobs_open = jobs_open.load();
  s.provider_sessions = provider_sessions.load();
  s.verifier_sessions = verifier_sessions.load();
  s.verification_backlog = verification_backlog.load();
  s.settlement_backlog = settlement_backlog.load();
  s.chain_height = chain_height.load();
  s.staked_total = staked_total.load();
  std::lock_guard lock(mu_);
  s.clients_waiting = queues_.size();
  s.top_queues.assign(queues_.begin(), queues_.end());
  const auto deeper = [](const auto& a, const auto& b) { return a.second > b.second || (a.second == b.second && a.first < b.first); };
  if (s.top_queues.size() > top) {
    std::partial_sort(s.top_queues.begin(), s.top_queues.begin() + static_cast<std::ptrdiff_t>(top), s.top_queues.end(), deeper);
    s.top_queues.resize(top);
  } else {
    std::sort(s.top_queues.begin(), s.top_queues.end(), deeper);
  }
  s.recent = recent_.read(now_us);
  return s;
}

void metrics::set_queues(std::map<std::string, std::int64_t> waiting_by_client) {
  std::lock_guard lock(mu_);
  queues_ = std::move(waiting_by_client);
}

void metrics::set_providers(std::map<std::string, provider_row> rows) {
  std::lock_guard lock(mu_);
  providers_ = std::move(rows);
}

std::string metrics::render(const gateway_stats& gateway) const {
  std::string out;
  family(out, "haca_job_transitions_total", "counter", "Job state changes committed to Postgres, by the state entered.");
  for (int s = 0; s < core::job_state_count; ++s)
    if (s != static_cast<int>(core::job_state::submitted))
      out += fmt::format("haca_job_transitions_total{{state=\"{}\"}} {}\n",
                         core::state_name(static_cast<core::job_state>(s)), transitions_[static_cast<std::size_t>(s)].load());
  family(out, "haca_jobs", "gauge", "Jobs in each state now (Postgres's count at start, then every committed change).");
  for (int s = 0; s < core::job_state_count; ++s)
    if (s != static_cast<int>(core::job_state::submitted))
      out += fmt::format("haca_jobs{{state=\"{}\"}} {}\n", core::state_name(static_cast<core::job_state>(s)),
                         in_state_[static_cast<std::size_t>(s)].load());
  family(out, "haca_result_latency_seconds", "histogram", "From a SUBMIT's admission to its RESULT being sent.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    cumulative += latency_counts_[i].load();
    out += fmt::format("haca_result_latency_seconds_bucket{{le=\"{}\"}} {}\n", buckets[i], cumulative);
  }
  cumulative += latency_counts_[buckets.size()].load();
  out += fmt::format("haca_result_latency_seconds_bucket{{le=\"+Inf\"}} {}\n", cumulative);
  out += fmt::format("haca_result_latency_seconds_sum {}\n", static_cast<double>(latency_sum_us_.load()) / 1e6);
  out += fmt::format("haca_result_latency_seconds_count {}\n", cumulative);

  const auto gauge = [&](const char* name, const char* help, std::int64_t v) {
    family(out, name, "gauge", help);
    out += fmt::format("{} {}\n", name, v);
  };
  gauge("haca_jobs_waiting", "Jobs admitted and not yet executed.", jobs_waiting.load());
  gauge("haca_jobs_open", "Jobs in the execution core's memory (not yet settled or final).", jobs_open.load());
  gauge("haca_provider_sessions", "Providers with a session.", provider_sessions.load());
  gauge("haca_verifier_sessions", "Verifiers with a session.", verifier_sessions.load());
  gauge("haca_verification_backlog", "Executed jobs not yet judged (sampled and waiting, or being verified).",
        verification_backlog.load());
  gauge("haca_settlement_backlog", "Judged jobs not yet in a committed block (the settlement lag, in jobs).",
        settlement_backlog.load());
  gauge("haca_chain_height", "Height of the newest committed block (-1: none yet).", chain_height.load());
  gauge("haca_staked_micros", "Micro-units at stake, all nodes (the ledger's stake:<key> accounts, in memory).",
        staked_total.load());
  family(out, "haca_rulings_total", "counter", "Referee rulings recorded (disputes table).");
  out += fmt::format("haca_rulings_total {}\n", rulings_.load());
  family(out, "haca_slashes_total", "counter", "Slashes recorded after rulings (one per party).");
  out += fmt::format("haca_slashes_total {}\n", slashes_.load());
  family(out, "haca_gateway_messages_total", "counter", "Messages through the gateway, by what happened to them.");
  out += fmt::format("haca_gateway_messages_total{{event=\"received\"}} {}\n", gateway.received.load());
  out += fmt::format("haca_gateway_messages_total{{event=\"undecodable\"}} {}\n", gateway.rejected.load());
  out += fmt::format("haca_gateway_messages_total{{event=\"sent\"}} {}\n", gateway.sent.load());
  out += fmt::format("haca_gateway_messages_total{{event=\"dropped\"}} {}\n", gateway.dropped.load());

  std::lock_guard lock(mu_);
  family(out, "haca_errors_sent_total", "counter", "ERROR replies sent, by code (rejected messages).");
  for (const auto& [code, n] : errors_)
    out += fmt::format("haca_errors_sent_total{{code=\"{}\"}} {}\n", label(code), n);
  family(out, "haca_client_jobs_waiting", "gauge", "Jobs admitted and not yet executed, per client account.");
  for (const auto& [client, n] : queues_)
    out += fmt::format("haca_client_jobs_waiting{{client=\"{}\"}} {}\n", label(client), n);
  family(out, "haca_provider_credit", "gauge", "Free job slots (READY credit) per provider.");
  for (const auto& [key, row] : providers_)
    out += fmt::format("haca_provider_credit{{provider=\"{}\"}} {}\n", label(key), row.credit);
  family(out, "haca_provider_silent_seconds", "gauge", "Seconds since each provider's last message (liveness).");
  for (const auto& [key, row] : providers_)
    out += fmt::format("haca_provider_silent_seconds{{provider=\"{}\"}} {}\n", label(key), row.silent_seconds);
  family(out, "haca_provider_jobs_held", "gauge", "Jobs durably ASSIGNED to each provider now (assigned since this start).");
  std::map<std::string, std::int64_t> load; // every connected provider, 0 included
  for (const auto& [key, row] : providers_)
    load[key] = 0;
  for (const auto& [job, p] : assigned_)
    ++load[p];
  for (const auto& [key, n] : load)
    out += fmt::format("haca_provider_jobs_held{{provider=\"{}\"}} {}\n", label(key), n);
  family(out, "haca_provider_jobs_done_total", "counter", "ASSIGNED -> EXECUTED transitions committed, per provider.");
  for (const auto& [key, n] : done_)
    out += fmt::format("haca_provider_jobs_done_total{{provider=\"{}\"}} {}\n", label(key), n);
  return out;
}

} // namespace haca::actors
