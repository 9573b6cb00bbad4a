// The coordinator's /metrics as Prometheus scrapes it: the text format passes promtool, and
// the counters and gauges move with the jobs that run.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "actors/metrics.hpp"
#include "app/process.hpp"
#include "app/workload.hpp"
#include "db/audit.hpp"
#include "harness.hpp"
#include "verify/hash.hpp"

using namespace haca;

namespace {

std::string scrape(const test::network& net) {
  httplib::Client http("127.0.0.1", net.http_port());
  http.set_connection_timeout(5);
  http.set_bearer_token_auth(test::network::read_token);
  auto res = http.Get("/metrics");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("Content-Type").find("text/plain") == 0);
  return res->body;
}

// The value of one sample (name with its labels, as printed), or -1 when absent.
double sample(const std::string& body, const std::string& series) {
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(series + " ", 0) == 0)
      return std::stod(line.substr(series.size() + 1));
  return -1;
}

} // namespace

TEST_CASE("metrics: /metrics passes promtool and its counters move as jobs run") {
  test::network_options o;
  o.sample_rate = 1.0;
  test::network net(o);
  const auto before = scrape(net);
  CHECK(sample(before, "haca_job_transitions_total{state=\"SETTLED\"}") == 0);
  CHECK(sample(before, "haca_chain_height") == -1);

  constexpr int jobs = 120;
  auto w = net.workload(jobs, "full", 31);
  auto rep = app::run_workload(w);
  REQUIRE(rep.results == jobs);
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), w.credentials.account()).value() == jobs; }));
  // A refused SUBMIT counts as an ERROR sent, by its code.
  auto c = net.connect_client(w.credentials);
  auto bad = test::round_trip(c, proto::make_submit({"", "bad-model", verify::sha256_hex("no such model"), "none", 10, 0,
                                                     w.inputs.front()}));
  REQUIRE(bad.has_value());

  std::string after;
  REQUIRE(test::eventually([&] {
    after = scrape(net);
    return sample(after, "haca_job_transitions_total{state=\"SETTLED\"}") >= jobs &&
           sample(after, "haca_ledger_balance_micros{kind=\"client\"}") > 0 && // read at most every 2 s
           sample(after, "haca_errors_sent_total{code=\"unknown_model\"}") >= 1 &&
           sample(after, "haca_provider_sessions") == 1 &&
           after.find("haca_provider_credit{") != std::string::npos; // tables: refreshed every heartbeat
  }));
  INFO(after);
  CHECK(sample(after, "haca_job_transitions_total{state=\"QUEUED\"}") >= jobs);
  CHECK(sample(after, "haca_job_transitions_total{state=\"EXECUTED\"}") >= jobs);
  CHECK(sample(after, "haca_job_transitions_total{state=\"VERIFIED\"}") >= jobs);
  CHECK(sample(after, "haca_result_latency_seconds_count") >= jobs);
  CHECK(sample(after, "haca_result_latency_seconds_bucket{le=\"+Inf\"}") ==
        sample(after, "haca_result_latency_seconds_count"));
  CHECK(sample(after, "haca_chain_height") >= 0);
  CHECK(sample(after, "haca_verifier_sessions") == 1);
  CHECK(sample(after, "haca_jobs_waiting") == 0);
  CHECK(sample(after, "haca_settlement_backlog") == 0);
  CHECK(sample(after, "haca_gateway_messages_total{event=\"received\"}") > jobs);
  CHECK(std::regex_search(after, std::regex("haca_provider_credit\\{provider=\"[0-9a-f]{64}\"\\} [0-9]+")));
  CHECK(std::regex_search(after, std::regex("haca_provider_jobs_done_total\\{provider=\"[0-9a-f]{64}\"\\} 120\n")));
  CHECK(std::regex_search(after, std::regex("haca_provider_jobs_held\\{provider=\"[0-9a-f]{64}\"\\} 0\n")));
  CHECK(sample(after, "haca_ledger_read_ok") == 1);
  CHECK(sample(after, "haca_ledger_balance_micros{kind=\"client\"}") > 0);
  CHECK(std::regex_search(after, std::regex("haca_provider_silent_seconds\\{provider=\"[0-9a-f]{64}\"\\} [0-9.e-]+")));

  // Prometheus's own linter on the live output.
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    MESSAGE("promtool is not installed (Debian package prometheus, installed by deploy/setup.sh): the format was "
            "not linted here");
    return;
  }
  const auto path = net.dir() + "/metrics.txt";
  std::ofstream(path) << after;
  auto lint = test::run_command(fmt::format("promtool check metrics < {} 2>&1", path));
  INFO(lint.output);
  CHECK(lint.exit_code == 0);
}

TEST_CASE("metrics: the recent window counts RESULTs of the last 10 s and takes nearest-rank percentiles") {
  actors::result_window w(10'000'000);
  CHECK(w.read(0).results == 0);
  CHECK_FALSE(w.read(0).p50_ms.has_value());
  for (int i = 1; i <= 100; ++i) // one a 10 ms, latencies 1..100 ms
    w.add(i * 10'000, i * 1000);
  auto s = w.read(1'000'000);
  CHECK(s.results == 100);
  CHECK(s.jobs_per_s == doctest::Approx(10.0));
  CHECK(*s.p50_ms == doctest::Approx(50.0));
  CHECK(*s.p99_ms == doctest::Approx(99.0));
  s = w.read(10'500'000); // the first 50 (sent at <= 0.5 s) left the window
  CHECK(s.results == 50);
  CHECK(*s.p50_ms == doctest::Approx(75.0));
  CHECK(w.read(20'000'000).results == 0);
  std::vector<std::int64_t> one{7};
  CHECK(actors::nearest_rank(one, 0.99) == 7);
}

TEST_CASE("metrics: a real Prometheus scrapes /metrics with the read token and sees the counters move") {
  const auto which = test::run_command("command -v prometheus");
  REQUIRE_MESSAGE(which.exit_code == 0,
                  "prometheus is not installed (Debian package prometheus; deploy/setup.sh installs it)");
  const auto binary = which.output.substr(0, which.output.find('\n'));
  test::network net;
  const int port = app::free_port();
  const auto config = net.dir() + "/prometheus.yml";
  std::ofstream(config) << fmt::format("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: haca\n"
                                       "    authorization:\n      credentials: {}\n"
                                       "    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                                       test::network::read_token, net.http_port());
  auto prometheus = app::start_process(
      "prometheus", binary,
      {"--config.file=" + config, "--storage.tsdb.path=" + net.dir() + "/tsdb",
       fmt::format("--web.listen-address=127.0.0.1:{}", port), "--log.level=warn"},
      net.dir() + "/prometheus.log");
  struct stop_at_end {
    app::child_process& p;
    ~stop_at_end() { app::stop_process(p, 2000); }
  } stop{prometheus};

  // One instant query: the value of a series summed over its labels (-1: no data yet).
  httplib::Client api("127.0.0.1", port);
  api.set_connection_timeout(2);
  const auto query = [&](const std::string& expr) -> double {
    auto res = api.Get("/api/v1/query?query=" + httplib::detail::encode_query_param(expr));
    if (!res || res->status != 200)
      return -1;
    auto body = nlohmann::json::parse(res->body, nullptr, false);
    if (body.is_discarded() || body["data"]["result"].empty())
      return -1;
    return std::stod(body["data"]["result"][0]["value"][1].get<std::string>());
  };
  // The target is up: Prometheus got in with the bearer token.
  const auto targets = [&] {
    auto res = api.Get("/api/v1/targets");
    return res ? res->body : std::string("no answer from Prometheus; its log: ") + app::tail_file(net.dir() + "/prometheus.log");
  };
  REQUIRE_MESSAGE(test::eventually([&] { return query("up{job=\"haca\"}") == 1; }, std::chrono::seconds(30)), targets());
  const double before = query("sum(haca_job_transitions_total{state=\"SETTLED\"})");
  CHECK(before == 0);

  constexpr int jobs = 40;
  auto w = net.workload(jobs, "sampled", 32);
  REQUIRE(app::run_workload(w).results == jobs);
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), w.credentials.account()).value() == jobs; }));
  CHECK(test::eventually([&] { return query("sum(haca_job_transitions_total{state=\"SETTLED\"})") >= jobs; },
                         std::chrono::seconds(20)));
  CHECK(query("haca_result_latency_seconds_count") >= jobs);
  CHECK(query("haca_chain_height") >= 0);
}
