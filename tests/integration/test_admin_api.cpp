// The admin API's reads as an operator's script meets them: bearer tokens (none or an unknown
// one: 401), JSON pages that never return more than asked, filters, one job's timeline, and
// answers that agree with Postgres.
#include <algorithm>
#include <limits>
#include <sstream>

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "app/workload.hpp"
#include "db/audit.hpp"
#include "harness.hpp"

using namespace haca;
using json = nlohmann::json;

namespace {

httplib::Result get(const test::network& net, const std::string& path, const char* token) {
  httplib::Client http("127.0.0.1", net.http_port());
  http.set_connection_timeout(5);
  if (token)
    http.set_bearer_token_auth(token);
  return http.Get(path);
}

json get_json(const test::network& net, const std::string& path) {
  auto res = get(net, path, test::network::read_token);
  REQUIRE(res);
  INFO(path, ": ", res->body);
  REQUIRE(res->status == 200);
  return json::parse(res->body);
}

} // namespace

TEST_CASE("admin API: tokens, pages, filters and one job's timeline, as Postgres has them") {
  test::network net;
  constexpr int jobs = 30;
  auto w = net.workload(jobs, "full", 41);
  auto rep = app::run_workload(w);
  REQUIRE(rep.results == jobs);
  const auto account = w.credentials.account();
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), account).value() == jobs; }));

  SUBCASE("no token, an unknown token: 401 on every endpoint, /metrics included") {
    for (const auto* path : {"/api/providers", "/api/jobs", "/api/jobs/1", "/api/disputes", "/api/blocks",
                             "/api/accounts", "/metrics"}) {
      for (const char* token : {static_cast<const char*>(nullptr), "not-a-token-of-this-coordinator"}) {
        auto res = get(net, path, token);
        REQUIRE(res);
        CHECK_MESSAGE(res->status == 401, path);
        CHECK(json::parse(res->body)["error"]["code"] == "unauthorized");
      }
    }
    // The admin token reads too.
    auto res = get(net, "/api/providers", test::network::admin_token);
    REQUIRE(res);
    CHECK(res->status == 200);
  }
  SUBCASE("jobs: filtered by client and state, paged, never more than asked") {
    std::vector<std::int64_t> ids;
    std::string after;
    int pages = 0;
    for (;;) {
      auto p = get_json(net, fmt::format("/api/jobs?client={}&state=SETTLED&limit=7&after={}", account, after));
      CHECK(p["items"].size() <= 7);
      for (const auto& j : p["items"]) {
        CHECK(j["client"] == account);
        CHECK(j["state"] == "SETTLED");
        ids.push_back(j["id"].get<std::int64_t>());
      }
      ++pages;
      if (p["next"].is_null())
        break;
      after = p["next"].get<std::string>();
    }
    CHECK(ids.size() == static_cast<std::size_t>(jobs));
    CHECK(pages == 5);
    CHECK(std::is_sorted(ids.begin(), ids.end()));
    CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
    CHECK(get_json(net, "/api/jobs?state=QUEUED&client=" + account)["items"].empty());
    // A filter no row matches looks at a bounded window per page (20 ids per item asked) and
    // says where to go on: 30 jobs, limit 1, are two pages, both empty.
    std::string next;
    int empty_pages = 0;
    do {
      auto page = get_json(net, "/api/jobs?state=QUEUED&limit=1&after=" + next);
      CHECK(page["items"].empty());
      ++empty_pages;
      next = page["next"].is_null() ? "" : page["next"].get<std::string>();
    } while (!next.empty() && empty_pages < 10);
    CHECK(empty_pages == 2);
  }
  SUBCASE("jobs: a time window of submission, exactly the jobs Postgres has in it; bad times refused") {
    // The window from the 6th job's submission to the 20th's: jobs 6..19 of this client's ids.
    const auto at = [&](std::int64_t id) {
      return test::query_value(fmt::format("select to_char(submitted_at at time zone 'UTC', "
                                           "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from jobs where id = {}",
                                           id));
    };
    std::vector<std::int64_t> all;
    for (const auto& j : rep.jobs)
      all.push_back(j.job_id);
    std::sort(all.begin(), all.end());
    const auto since = at(all[5]), until = at(all[19]);
    auto window = get_json(net, fmt::format("/api/jobs?client={}&since={}&until={}&limit=500", account, since, until));
    const auto want = std::stoul(test::query_value(
        fmt::format("select count(*) from jobs where client_id = '{}' and submitted_at >= '{}'::timestamptz and "
                    "submitted_at < '{}'::timestamptz",
                    account, since, until)));
    CHECK(window["items"].size() == want);
    CHECK(want >= 1);
    for (const auto& j : window["items"]) {
      CHECK(j["submitted_at"].get<std::string>() >= since);
      CHECK(j["submitted_at"].get<std::string>() < until);
    }
    CHECK(get_json(net, fmt::format("/api/jobs?client={}&since={}", account, at(all.back())))["items"].size() >= 1);
    CHECK(get_json(net, "/api/jobs?since=2999-01-01T00:00:00Z")["items"].empty());
    for (const auto* bad : {"yesterday", "2026-02-30T00:00:00Z", "2026-12-06T03:21:56", "2026-12-06T03:21:56.1234567Z"}) {
      auto res = get(net, std::string("/api/jobs?since=") + bad, test::network::read_token);
      REQUIRE(res);
      CHECK_MESSAGE(res->status == 400, bad);
    }
  }
  SUBCASE("one job: its row, timeline, receipt and postings, as Postgres has them") {
    const auto id = rep.jobs.front().job_id;
    auto j = get_json(net, fmt::format("/api/jobs/{}", id));
    CHECK(j["id"] == id);
    CHECK(j["client"] == account);
    CHECK(j["state"] == "SETTLED");
    std::vector<std::string> states;
    for (const auto& e : j["timeline"])
      states.push_back(e["state"]);
    CHECK(states == std::vector<std::string>{"SUBMITTED", "QUEUED", "ASSIGNED", "EXECUTED", "VERIFIED", "SETTLED"});
    REQUIRE(j["receipts"].size() == 1);
    CHECK(j["receipts"][0]["verdict"] == "verified");
    CHECK(j["receipts"][0]["receipt_hash"] ==
          test::query_value(fmt::format("select receipt_hash from receipts where job_id = {}", id)));
    // Its share of its block's postings: it pays its price, which the provider and the fee share.
    const auto price = std::stoll(test::query_value(fmt::format("select price from receipts where job_id = {}", id)));
    std::int64_t sum = 0, paid = 0;
    for (const auto& p : j["postings"]) {
      sum += p["amount"].get<std::int64_t>();
      if (p["account"].get<std::string>().rfind("client:", 0) == 0)
        paid -= p["amount"].get<std::int64_t>();
      CHECK(p["block"] == j["receipts"][0]["block"]);
    }
    CHECK(j["postings"].size() >= 2);
    CHECK(sum == 0);
    CHECK(paid == price);
    auto missing = get(net, "/api/jobs/999999999", test::network::read_token);
    REQUIRE(missing);
    CHECK(missing->status == 404);
  }
  SUBCASE("providers, blocks and accounts agree with Postgres") {
    auto providers = get_json(net, "/api/providers");
    CHECK(providers["items"].size() == 2); // the provider and the verifier
    auto blocks = get_json(net, "/api/blocks?limit=1");
    REQUIRE(blocks["items"].size() == 1);
    CHECK(blocks["items"][0]["height"].get<std::int64_t>() ==
          std::stoll(test::query_value("select max(height) from blocks")));
    // One account's postings, page after page (newest first): what SQL has for it.
    std::int64_t count = 0, sum = 0, previous = std::numeric_limits<std::int64_t>::max();
    std::string next;
    for (int pages = 0; pages < 100; ++pages) {
      auto page = get_json(net, fmt::format("/api/postings?account=client:{}&limit=5&after={}", account, next));
      for (const auto& item : page["items"]) {
        CHECK(item["account"] == "client:" + account);
        CHECK(item["id"].get<std::int64_t>() < previous);
        previous = item["id"].get<std::int64_t>();
        ++count;
        sum += item["amount"].get<std::int64_t>();
      }
      if (page["next"].is_null())
        break;
      next = page["next"].get<std::string>();
    }
    CHECK(count == std::stoll(test::query_value(fmt::format("select count(*) from postings where account = 'client:{}'", account))));
    CHECK(sum == std::stoll(test::query_value(fmt::format("select sum(amount) from postings where account = 'client:{}'", account))));
    auto accounts = get_json(net, "/api/accounts?prefix=client:" + account);
    REQUIRE(accounts["items"].size() == 1);
    CHECK(accounts["items"][0]["balance"].get<std::int64_t>() ==
          std::stoll(test::query_value(fmt::format("select balance from accounts where id = 'client:{}'", account))));
  }
  SUBCASE("summary and the providers' live fields: what ran, and the ledger as Postgres sums it") {
    json s;
    // The providers' rows refresh each heartbeat; the rate window empties after 10 s.
    REQUIRE(test::eventually([&] {
      s = get_json(net, "/api/summary");
      return s["settlement"]["settled"] == jobs && s["verification"]["backlog"] == 0;
    }));
    INFO(s.dump());
    CHECK(s["jobs_entered"]["EXECUTED"] == jobs);
    CHECK(s["jobs_entered"]["SETTLED"] == jobs);
    // Jobs by state now: what SQL counts, state by state.
    for (const auto& [state, n] : s["jobs_now"].items())
      CHECK_MESSAGE(n.get<std::int64_t>() ==
                        std::stoll(test::query_value(fmt::format("select count(*) from jobs where state = '{}'", state))),
                    state);
    CHECK(s["jobs_now"]["SETTLED"] == jobs);
    CHECK(s["verification"]["verified"] == jobs); // tier full
    CHECK(s["verification"]["sampled"] == jobs);
    CHECK(s["queue"]["waiting"] == 0);
    CHECK(s["nodes"]["providers"] == 1);
    CHECK(s["recent"]["results"].get<std::int64_t>() <= jobs);
    CHECK(s["settlement"]["head"]["height"].get<std::int64_t>() ==
          std::stoll(test::query_value("select max(height) from blocks")));
    CHECK(s["settlement"]["head"]["hash"] ==
          test::query_value("select block_hash from blocks order by height desc limit 1"));
    std::int64_t sum = 0;
    for (const auto& [kind, v] : s["ledger"].items()) {
      CHECK(v["balance"].get<std::int64_t>() ==
            std::stoll(test::query_value(fmt::format(
                "select sum(balance) from accounts where split_part(id, ':', 1) = '{}'", kind))));
      sum += v["balance"].get<std::int64_t>();
    }
    CHECK(s["ledger"].contains("client"));
    CHECK(sum == 0); // double entry
    json provider, rows;
    const bool connected = test::eventually([&] {
      rows = get_json(net, "/api/providers")["items"];
      for (const auto& row : rows)
        if (row["role"] == "provider")
          provider = row;
      return provider.is_object() && provider["live"]["connected"] == true;
    });
    INFO(rows.dump());
    REQUIRE(connected);
    CHECK(provider["live"]["done"] == jobs);
    CHECK(provider["live"]["load"] == 0);
    CHECK(provider["live"]["credit"].get<std::int64_t>() > 0);
    CHECK(provider["live"]["silent_s"].get<double>() < 10);
    // The verifier's row: its session and the verdicts it gave (tier full: one per job).
    json verifier;
    REQUIRE(test::eventually([&] {
      const auto page = get_json(net, "/api/providers"); // held: a range over a temporary's member dangles
      for (const auto& row : page["items"])
        if (row["role"] == "verifier")
          verifier = row;
      return verifier.is_object() && verifier["live"]["connected"] == true;
    }));
    INFO(verifier.dump());
    CHECK(verifier["live"]["done"] == jobs);
    CHECK(verifier["live"]["load"] == 0);
    CHECK(verifier["live"]["credit"].get<std::int64_t>() > 0);
    CHECK_FALSE(verifier["live"].contains("reputation")); // a provider's only
    auto no_token = get(net, "/api/summary", nullptr);
    REQUIRE(no_token);
    CHECK(no_token->status == 401);
  }
  SUBCASE("the dashboard's files: open (the page asks for the token), fixed names only") {
    auto page = get(net, "/", nullptr);
    REQUIRE(page);
    CHECK(page->status == 200);
    CHECK(page->body.find("<title>haca dashboard</title>") != std::string::npos);
    CHECK(page->get_header_value("Content-Security-Policy").find("default-src 'self'") == 0);
    auto js = get(net, "/web/dashboard.js", nullptr);
    REQUIRE(js);
    CHECK(js->status == 200);
    auto other = get(net, "/web/../CMakeLists.txt", nullptr);
    REQUIRE(other);
    CHECK(other->status == 404);
  }
  SUBCASE("haca admin: the same reads as tables and JSON lines; a wrong token said plainly") {
    const auto admin = fmt::format("{} admin --url http://127.0.0.1:{} --token {}", HACA_BINARY, net.http_port(),
                                   test::network::read_token);
    auto lines = test::run_command(fmt::format("{} --json --limit 1000 jobs --client {}", admin, account));
    REQUIRE(lines.exit_code == 0);
    std::istringstream in(lines.output);
    int n = 0;
    for (std::string line; std::getline(in, line);) {
      CHECK(json::parse(line)["client"] == account);
      ++n;
    }
    CHECK(n == jobs);
    auto table = test::run_command(fmt::format("{} job {} 2>&1", admin, rep.jobs.front().job_id));
    CHECK(table.exit_code == 0);
    CHECK(table.output.find("timeline:") != std::string::npos);
    CHECK(table.output.find("SETTLED") != std::string::npos);
    auto few = test::run_command(fmt::format("{} --limit 3 jobs --client {} 2>/dev/null", admin, account));
    CHECK(std::count(few.output.begin(), few.output.end(), '\n') == 4); // a header and 3 rows
    auto refused = test::run_command(fmt::format("{} admin --url http://127.0.0.1:{} --token wrong-token-0123456789 "
                                                 "providers 2>&1",
                                                 HACA_BINARY, net.http_port()));
    CHECK(refused.exit_code != 0);
    CHECK(refused.output.find("HTTP 401 unauthorized") != std::string::npos);
  }
  SUBCASE("bad parameters are 400 with a reason, and change nothing") {
    for (const auto* path : {"/api/jobs?limit=0", "/api/jobs?limit=100000", "/api/jobs?limit=abc",
                             "/api/jobs?state=DONE", "/api/jobs?after=x", "/api/blocks?after=x"}) {
      auto res = get(net, path, test::network::read_token);
      REQUIRE(res);
      CHECK_MESSAGE(res->status == 400, path);
      CHECK(json::parse(res->body)["error"]["code"] == "bad_input");
    }
  }
}
