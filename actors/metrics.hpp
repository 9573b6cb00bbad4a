#pragma once
// The coordinator's metrics, for `/metrics` in the Prometheus text format (served by
// app/admin_http.cpp on --http-port). The actors write them as they carry out their
// cores' effects (counters when records commit, gauges after a step, per-client and
// per-provider tables on each tick); the HTTP thread only reads. Counters count since the
// process started, as Prometheus expects (a restart resets them; rate() copes).
#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/job_state.hpp"
#include "core/records.hpp"
#include "market/reputation.hpp"

namespace haca::actors {

struct gateway_stats;

// RESULTs of the last `window_us`, for the dashboard's rate and percentiles (GET /api/summary):
// jobs/s = RESULTs sent in the window / its length; p50/p99 = nearest-rank percentiles of their
// latencies. Times come in as arguments (a monotonic clock), so a test can drive it. At most
// `cap` samples are kept (the newest): beyond cap / window jobs/s the rate reads low.
class result_window {
public:
  explicit result_window(std::int64_t window_us = 10'000'000, std::size_t cap = 200'000)
      : window_us_(window_us), cap_(cap) {}
  void add(std::int64_t now_us, std::int64_t latency_us);
  struct stats {
    double window_s = 0;
    std::uint64_t results = 0;
    double jobs_per_s = 0;
    std::optional<double> p50_ms, p99_ms; // none when no RESULT in the window
  };
  stats read(std::int64_t now_us); // drops what left the window

private:
  void trim(std::int64_t now_us);
  std::int64_t window_us_;
  std::size_t cap_;
  std::deque<std::pair<std::int64_t, std::int64_t>> samples_; // (sent at, latency), oldest first
};

// Nearest-rank percentile (0 < q <= 1) of unsorted values, which it reorders; none when empty.
std::optional<std::int64_t> nearest_rank(std::vector<std::int64_t>& values, double q);

class metrics {
public:
  // Records that committed, with their outcomes: job transitions by state, rulings, slashes.
  void committed(const std::vector<core::record>& records, const std::vector<core::outcome>& outcomes);
  // What Postgres held at start: jobs by state, and which provider each ASSIGNED job is with.
  // From then on committed records keep both up to date.
  void restore(const core::snapshot& s);
  void error_sent(const std::string& code);                // an ERROR reply, by its code
  void result_latency(double seconds);                     // SUBMIT admitted -> RESULT sent
  static std::int64_t clock_us();                          // the monotonic clock of the window

  // Gauges, set by the actor that owns the fact.
  std::atomic<std::int64_t> jobs_waiting{0};               // admitted, not yet executed
  std::atomic<std::int64_t> jobs_open{0};                  // in the execution core's memory
  std::atomic<std::int64_t> provider_sessions{0};
  std::atomic<std::int64_t> verifier_sessions{0};
  std::atomic<std::int64_t> verification_backlog{0};       // executed jobs not yet judged
  std::atomic<std::int64_t> settlement_backlog{0};         // judged jobs not yet in a committed block
  std::atomic<std::int64_t> chain_height{-1};              // the newest committed block
  std::atomic<std::int64_t> staked_total{0};               // micro-units at stake, all nodes

  struct provider_row {
    std::int64_t credit = 0;
    double silent_seconds = 0;                             // since its last message
  };
  struct verifier_row {
    std::int64_t credit = 0;
    double silent_seconds = 0;
    std::int64_t in_flight = 0;                            // VERIFYs it holds
  };
  // The verification core's sessions, and the verdicts each verifier gave, each heartbeat.
  void set_verifiers(std::map<std::string, verifier_row> rows, std::map<std::string, std::uint64_t> verdicts);
  void set_queues(std::map<std::string, std::int64_t> waiting_by_client);
  void set_providers(std::map<std::string, provider_row> rows);

  // One provider as the dashboard shows it: its session (from the last tick) and its jobs,
  // counted from committed transitions since this process started: load = jobs durably
  // ASSIGNED to it now, done = its ASSIGNED -> EXECUTED transitions. All empty: never seen.
  struct provider_live {
    bool connected = false;                                // has a session (as of the last tick)
    std::optional<std::int64_t> credit;                    // while connected
    std::optional<double> silent_seconds;                  // while connected
    std::int64_t load = 0;
    std::uint64_t done = 0;
    market::verdict_record record;                         // its settled verdicts (the execution core's)
  };
  // Every provider's settled verdicts, from which its reputation is derived (the execution
  // core's, published each tick).
  void set_track_records(std::map<std::string, market::verdict_record> records);
  provider_live provider(const std::string& key) const;
  // A verifier as the dashboard shows it: connected, credit, silent seconds, load (VERIFYs held)
  // and done (verdicts given since start); `record` stays empty.
  provider_live verifier(const std::string& key) const;

  // What GET /api/summary shows, read at one moment (each field is consistent on its own).
  struct snapshot {
    std::array<std::uint64_t, core::job_state_count> entered{}; // transitions into each state
    std::array<std::int64_t, core::job_state_count> now{};      // jobs in each state now
    std::uint64_t rulings = 0, slashes = 0;
    std::int64_t jobs_waiting = 0, jobs_open = 0, provider_sessions = 0, verifier_sessions = 0;
    std::int64_t verification_backlog = 0, settlement_backlog = 0, chain_height = -1, staked_total = 0;
    std::size_t clients_waiting = 0;                             // clients with a queue
    std::vector<std::pair<std::string, std::int64_t>> top_queues; // deepest first, at most `top`
    result_window::stats recent;
  };
  snapshot read(std::size_t top, std::int64_t now_us);

  // The Prometheus text exposition of everything above and of the gateway's counters.
  std::string render(const gateway_stats& gateway) const;

private:
  void provider_jobs(const core::job_transition& t);
  static constexpr std::array<double, 12> buckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,   0.25,   0.5,   1,    2.5,   10};
  std::array<std::atomic<std::uint64_t>, core::job_state_count> transitions_{};
  std::array<std::atomic<std::int64_t>, core::job_state_count> in_state_{}; // jobs in each state now
  void moved(core::job_state from, core::job_state to);
  std::atomic<std::uint64_t> rulings_{0}, slashes_{0};
  std::array<std::atomic<std::uint64_t>, buckets.size() + 1> latency_counts_{}; // the last: +Inf
  std::atomic<std::uint64_t> latency_sum_us_{0};
  mutable std::mutex mu_;                                   // the tables below
  std::map<std::string, std::uint64_t> errors_;
  std::map<std::string, std::int64_t> queues_;
  std::map<std::string, provider_row> providers_;
  std::map<std::int64_t, std::string> assigned_;            // job -> provider, durably ASSIGNED
  std::map<std::string, std::uint64_t> done_;               // provider -> jobs executed
  std::map<std::string, market::verdict_record> records_;   // provider -> settled verdicts
  std::map<std::string, verifier_row> verifiers_;           // connected verifiers
  std::map<std::string, std::uint64_t> verdicts_;           // verifier -> verdicts given
  result_window recent_;
};

} // namespace haca::actors
