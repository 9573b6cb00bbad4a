#include "actors/metrics.hpp"

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

void metrics::committed(const std::vector<core::record>& records, const std::vector<core::outcome>& outcomes) {
  const auto state = [&](core::job_state s) { count(transitions_[static_cast<std::size_t>(s)]); };
  for (std::size_t i = 0; i < records.size() && i < outcomes.size(); ++i) {
    if (outcomes[i].what != core::outcome::kind::ok)
      continue;
    const auto& r = records[i];
    if (std::holds_alternative<core::job_insert>(r)) {
      state(core::job_state::queued);
    } else if (const auto* t = std::get_if<core::job_transition>(&r)) {
      state(t->to);
    } else if (const auto* b = std::get_if<core::block_commit>(&r)) {
      for (const auto& item : b->items) {
        if (item.verdict == core::job_state::unsampled)
          state(core::job_state::unsampled); // stored with its block
        state(core::job_state::settled);
      }
    } else if (std::holds_alternative<core::dispute_ruling>(r)) {
      count(rulings_);
    } else if (const auto* x = std::get_if<core::transfer>(&r); x && x->ref.rfind("slash:", 0) == 0) {
      count(slashes_);
    }
  }
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
  return out;
}

} // namespace haca::actors
