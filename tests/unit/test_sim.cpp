// The deterministic simulation of the coordinator's cores (tests/unit/sim/): thousands of
// seeds, each a small world of clients, providers and verifiers with lost, duplicated and
// reordered messages, store commits that fail or lose their confirmation, coordinator crashes
// and drains; every invariant checked after every step and at the end.
//
//   HACA_SIM_SEEDS=<n>   run seeds 1..n instead of the default count
//   HACA_SIM_SEED=<n>    run only seed n, printing a trace of every event
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "sim/sim_world.hpp"

using haca::sim::run_simulation;
using haca::sim::sim_options;
using haca::sim::sim_report;

namespace {

// Seeds on which the simulation found a bug in core/ that is not fixed yet: each is run first
// (whatever HACA_SIM_SEEDS says), so the test fails until the bug is fixed; then delete the
// line. Fixed since: execution_core::lose_session used a key it had just freed (a provider's
// DISCONNECT left its jobs ASSIGNED), a resend of a settled request was refused with
// insufficient_funds before the store could say it was a duplicate, and a look-up's stale
// "no such request" refused a resend admitted while it was in flight (seeds 1240, 1731, 1910).
struct known_failure {
  std::uint64_t seed;
  const char* what;
};
const std::vector<known_failure> known_failures = {};

// ~12 ms of CPU a seed in a RelWithDebInfo build (signatures are a third of it): 1000 seeds take
// 12 s on an idle 2-core machine, 18 s on a busy one.
constexpr std::uint64_t default_seeds = 1000;

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v)
    return fallback;
  return std::strtoull(v, nullptr, 10);
}

// The invariant a failure broke, without its numbers: failures grouped by kind.
std::string kind_of(const std::string& failure) {
  std::string k;
  int depth = 0;
  auto from = failure.find("s: ");
  for (char c : failure.substr(from == std::string::npos ? 0 : from + 3)) {
    depth += c == '(';
    if (depth == 0 && !(c >= '0' && c <= '9'))
      k += c;
    depth -= c == ')' && depth > 0;
    if (k.size() >= 80)
      break;
  }
  return k;
}

void print_failure(const sim_report& r) {
  std::printf("simulation seed %llu failed: %s\n  reproduce: HACA_SIM_SEED=%llu ./unit_tests -tc='*simulat*'\n",
              static_cast<unsigned long long>(r.seed), r.failure.c_str(), static_cast<unsigned long long>(r.seed));
}

} // namespace

TEST_CASE("the simulated coordinator keeps every invariant across thousands of seeds with crashes and lost messages") {
  if (const char* one = std::getenv("HACA_SIM_SEED"); one && *one) {
    sim_options o;
    o.seed = std::strtoull(one, nullptr, 10);
    o.verbose = true;
    const auto r = run_simulation(o);
    std::fwrite(r.trace.data(), 1, r.trace.size(), stdout);
    std::printf("seed %llu: %s; %d requests, %d jobs (%d settled, %d failed, %d expired), %d blocks, %d crashes, "
                "%d drains, %llu steps, %.1f s simulated, digest %016llx\n",
                static_cast<unsigned long long>(r.seed), r.ok ? "ok" : "FAILED", r.requests, r.jobs, r.settled,
                r.failed, r.expired, r.blocks, r.crashes, r.drains, static_cast<unsigned long long>(r.steps),
                static_cast<double>(r.sim_us) / 1e6, static_cast<unsigned long long>(r.digest));
    if (!r.ok)
      print_failure(r);
    CHECK_MESSAGE(r.ok, r.failure);
    return;
  }

  const auto n = env_u64("HACA_SIM_SEEDS", default_seeds);
  std::vector<std::uint64_t> seeds;
  for (const auto& k : known_failures)
    seeds.push_back(k.seed);
  for (std::uint64_t s = 1; s <= n; ++s)
    seeds.push_back(s);

  const auto start = std::chrono::steady_clock::now();
  std::vector<sim_report> failures;
  std::set<std::uint64_t> done;
  long long jobs = 0, settled = 0, failed = 0, expired = 0, crashes = 0, drains = 0, steps = 0, blocks = 0;
  long long dups = 0, lost = 0, failed_commits = 0, in_crash = 0, queue_full = 0, not_registered = 0, stale = 0,
            requeued = 0, disputes = 0, refused = 0, lookups = 0, reruns = 0;
  for (auto seed : seeds) {
    if (!done.insert(seed).second)
      continue;
    sim_options o;
    o.seed = seed;
    auto r = run_simulation(o);
    jobs += r.jobs;
    settled += r.settled;
    failed += r.failed;
    expired += r.expired;
    crashes += r.crashes;
    drains += r.drains;
    dups += r.duplicates;
    lost += r.lost_confirmations;
    failed_commits += r.failed_commits;
    in_crash += r.applied_in_crash;
    queue_full += r.queue_full;
    not_registered += r.not_registered;
    stale += r.stale_done;
    requeued += r.requeued;
    disputes += r.disputes;
    refused += r.refused;
    lookups += r.request_lookups;
    reruns += r.reruns;
    steps += static_cast<long long>(r.steps);
    blocks += r.blocks;
    if (!r.ok) {
      if (failures.size() < 20)
        print_failure(r);
      failures.push_back(std::move(r));
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("simulation: %zu seeds in %.1f s: %lld jobs (%lld settled, %lld failed, %lld expired, %lld refunded "
              "after a dispute), %lld blocks, %lld crashes and %lld drains, %lld core steps; %zu seeds failed\n"
              "  paths taken: %lld duplicate inserts, %lld lost commit confirmations, %lld failed commits, %lld commits "
              "applied in a crash, %lld re-queues, %lld stale DONEs, %lld not_registered, %lld queue_full, %lld "
              "refused for funds, %lld request lookups, %lld re-runs of disputed jobs seen by their clients\n",
              done.size(), secs, jobs, settled, failed, expired, disputes, blocks, crashes, drains, steps,
              failures.size(), dups, lost, failed_commits, in_crash, requeued, stale, not_registered, queue_full,
              refused, lookups, reruns);
  std::map<std::string, std::vector<std::uint64_t>> kinds;
  for (const auto& f : failures)
    kinds[kind_of(f.failure)].push_back(f.seed);
  for (const auto& [kind, list] : kinds) {
    std::printf("  %zu seeds (first %llu): %s...\n", list.size(), static_cast<unsigned long long>(list.front()),
                kind.c_str());
  }
  for (const auto& k : known_failures)
    std::printf("  known bug, seed %llu: %s\n", static_cast<unsigned long long>(k.seed), k.what);
  CHECK_MESSAGE(failures.empty(), failures.size(), " seeds broke an invariant; the first: seed ",
                failures.empty() ? 0 : failures.front().seed, ": ", failures.empty() ? "" : failures.front().failure);
}

TEST_CASE("a simulation seed replays exactly the same run") {
  for (std::uint64_t seed : {3ULL, 42ULL}) {
    sim_options o;
    o.seed = seed;
    const auto a = run_simulation(o);
    const auto b = run_simulation(o);
    CHECK(a.digest == b.digest);
    CHECK(a.steps == b.steps);
    CHECK(a.failure == b.failure);
    CHECK(a.jobs == b.jobs);
  }
  sim_options x, y;
  x.seed = 5;
  y.seed = 6;
  CHECK(run_simulation(x).digest != run_simulation(y).digest);
}

TEST_CASE("the simulation's checker catches a store that loses postings and an adapter that releases a hold") {
  // The checker must fail a run in which money goes astray. Each breakage is tried on the first
  // seeds until it actually fires (a seed may settle nothing that charges).
  auto first_broken = [](bool drop, bool forge) {
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
      sim_options o;
      o.seed = seed;
      o.break_drop_postings = drop;
      o.break_forge_settled = forge;
      auto r = run_simulation(o);
      if (r.broke)
        return r;
    }
    return sim_report{};
  };
  const auto lost = first_broken(true, false);
  REQUIRE(lost.broke);
  CHECK_FALSE(lost.ok);
  MESSAGE("lost postings, seed ", lost.seed, ": ", lost.failure);

  const auto forged = first_broken(false, true);
  REQUIRE(forged.broke);
  CHECK_FALSE(forged.ok);
  MESSAGE("released hold, seed ", forged.seed, ": ", forged.failure);
}
