#pragma once
// The coordinator's metrics, for `/metrics` in the Prometheus text format (served by
// app/admin_http.cpp on --http-port). The actors write them as they carry out their
// cores' effects (counters when records commit, gauges after a step, per-client and
// per-provider tables on each tick); the HTTP thread only reads. Counters count since the
// process started, as Prometheus expects (a restart resets them; rate() copes).
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/job_state.hpp"
#include "core/records.hpp"

namespace haca::actors {

struct gateway_stats;

class metrics {
public:
  // Records that committed, with their outcomes: job transitions by state, rulings, slashes.
  void committed(const std::vector<core::record>& records, const std::vector<core::outcome>& outcomes);
  void error_sent(const std::string& code);                // an ERROR reply, by its code
  void result_latency(double seconds);                     // SUBMIT admitted -> RESULT sent

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
  void set_queues(std::map<std::string, std::int64_t> waiting_by_client);
  void set_providers(std::map<std::string, provider_row> rows);

  // The Prometheus text exposition of everything above and of the gateway's counters.
  std::string render(const gateway_stats& gateway) const;

private:
  static constexpr std::array<double, 12> buckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,   0.25,   0.5,   1,    2.5,   10};
  std::array<std::atomic<std::uint64_t>, core::job_state_count> transitions_{};
  std::atomic<std::uint64_t> rulings_{0}, slashes_{0};
  std::array<std::atomic<std::uint64_t>, buckets.size() + 1> latency_counts_{}; // the last: +Inf
  std::atomic<std::uint64_t> latency_sum_us_{0};
  mutable std::mutex mu_;                                   // the tables below
  std::map<std::string, std::uint64_t> errors_;
  std::map<std::string, std::int64_t> queues_;
  std::map<std::string, provider_row> providers_;
};

} // namespace haca::actors
