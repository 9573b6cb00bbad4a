// Hostile load on the client port: sockets that send SUBMITs as fast as they can and never read
// a reply, while a polite client runs. The coordinator keeps serving the polite client, its
// memory stays bounded, and it stores only what the limits allow.
#include <atomic>
#include <fstream>
#include <thread>

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "app/workload.hpp"
#include "harness.hpp"
#include "net/curve.hpp"
#include "net/zmq_io.hpp"

using namespace haca;
using namespace std::chrono_literals;

namespace {

// Resident memory of a process, in MiB (0 when it cannot be read).
long rss_mib(pid_t pid) {
  std::ifstream f{fmt::format("/proc/{}/status", pid)};
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stol(line.substr(6)) / 1024;
  return 0;
}

} // namespace

TEST_CASE("sockets that flood SUBMITs and never read do not starve a polite client or grow the coordinator's memory") {
  test::network_options o;
  o.providers = 1;
  o.verifiers = 0;
  o.sample_rate = 0;
  // Small limits, so the flood reaches them within the test: 8 flooders x 300 jobs fit in 3000.
  o.coordinator_args = {"--max-queue", "3000", "--max-client-queue", "300"};
  test::network net{o};
  const auto coordinator_pid = net.coordinator().pid;
  const long rss_before = rss_mib(coordinator_pid);

  std::atomic<bool> stop{false};
  std::atomic<long> flood_sent{0};
  std::vector<std::thread> flooders;
  std::vector<net::client_credentials> flood_clients;
  std::vector<std::string> flood_accounts;
  for (int f = 0; f < 8; ++f) {
    flood_clients.push_back(net.new_client());
    flood_accounts.push_back("'" + flood_clients.back().account() + "'");
  }
  for (int f = 0; f < 8; ++f)
    flooders.emplace_back([&, f] {
      zmq::socket_t s{net::context(), zmq::socket_type::dealer};
      s.set(zmq::sockopt::linger, 0);
      s.set(zmq::sockopt::sndhwm, 0); // never block here: the coordinator's side must cope
      const auto& who = flood_clients[static_cast<std::size_t>(f)];
      const bool curve = net::make_curve_client(s, who.key, who.coordinator_key);
      CHECK(curve);
      if (!curve)
        return;
      s.connect(net.client_endpoint());
      proto::submit_request r;
      r.model = net.model_hash();
      r.tier = "none";
      r.max_price = 100;
      r.input = app::random_inputs(1, net.input_dim(), 7)[0];
      for (long i = 0; !stop; ++i) {
        r.request_id = fmt::format("r{}", i);
        net::send_message(s, proto::make_submit(r)); // and never read the answers
        ++flood_sent;
        if (i % 256 == 0)
          std::this_thread::yield();
      }
    });

  std::this_thread::sleep_for(2s); // the flood is on
  auto w = net.workload(200, "none", 3);
  w.request_prefix = "p";
  w.window = 10;
  w.timeout_ms = 60000;
  long rss_peak = 0;
  std::atomic<bool> watching{true};
  std::thread watcher([&] {
    while (watching) {
      rss_peak = std::max(rss_peak, rss_mib(coordinator_pid));
      std::this_thread::sleep_for(100ms);
    }
  });
  auto started = std::chrono::steady_clock::now();
  auto rep = app::run_workload(w);
  auto polite_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::this_thread::sleep_for(2s); // the flood goes on a little after the polite client is done
  stop = true;
  for (auto& t : flooders)
    t.join();
  watching = false;
  watcher.join();

  INFO(net.logs());
  MESSAGE(fmt::format("flood: {} SUBMITs from 8 sockets that never read; polite client: {} results in {:.1f} s "
                      "(p99 {:.1f} ms); coordinator RSS {} MiB before, {} MiB at most",
                      flood_sent.load(), rep.results, polite_s, app::percentile_ms(
                          [&] {
                            std::vector<std::int64_t> l;
                            for (const auto& j : rep.jobs)
                              l.push_back(j.latency_us);
                            return l;
                          }(),
                          0.99),
                      rss_before, rss_peak));
  CHECK(flood_sent > 20000);
  CHECK(rep.results == 200);
  CHECK(rep.errors == 0);
  CHECK(rep.duplicate_results == 0);
  CHECK(polite_s < 60); // was minutes before the gateway's backpressure; ~25 s on 2 shared cores
  CHECK(app::running(net.coordinator()));
  // Memory stays bounded: the flood's jobs are capped by the limits and its unread replies are
  // dropped at the per-peer high-water mark.
  CHECK_MESSAGE(rss_peak < rss_before + 400, "coordinator RSS grew from ", rss_before, " to ", rss_peak, " MiB");
  // Only what the limits allow was stored: each flooder's jobs are capped at 300 waiting, and
  // what is stored is every job admitted (no more than were admitted runs).
  auto stored = std::stol(test::query_value(
      fmt::format("select count(*) from jobs where client_id in ({})", fmt::join(flood_accounts, ","))));
  MESSAGE("flood jobs stored: ", stored);
  CHECK(stored < flood_sent);
  // The coordinator still answers a new client promptly.
  auto late = net.connect_client(net.new_client());
  auto reply = test::round_trip(late, proto::make_job_query({1}), 10s);
  CHECK(reply.has_value());
}
