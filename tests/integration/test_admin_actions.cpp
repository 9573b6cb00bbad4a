// The admin API's actions as an operator meets them, on real processes: no token, a garbage
// token (401) and the read token (403) change nothing; drain and ban steer where jobs go; the
// fee and the sample rate apply to the next jobs; a deposit credits once per request id; every
// action is in the audit trail with who took it; and all of it holds after a SIGKILL restart.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "app/process.hpp"
#include "app/workload.hpp"
#include "db/audit.hpp"
#include "harness.hpp"

using namespace haca;
using json = nlohmann::json;

namespace {

httplib::Result post(const test::network& net, const std::string& path, const json& body, const char* token) {
  httplib::Client http("127.0.0.1", net.http_port());
  http.set_connection_timeout(5);
  http.set_read_timeout(20);
  if (token)
    http.set_bearer_token_auth(token);
  return http.Post(path, body.dump(), "application/json");
}

json admin_post(const test::network& net, const std::string& path, const json& body) {
  auto res = post(net, path, body, test::network::admin_token);
  REQUIRE(res);
  INFO(path, ": ", res->body);
  REQUIRE(res->status == 200);
  return json::parse(res->body);
}

std::string actions_count() { return test::query_value("select count(*) from admin_actions"); }

// Runs `jobs` jobs of a new client; their ids, once all are final.
std::vector<std::int64_t> run_jobs(const test::network& net, int jobs, std::uint64_t seed) {
  auto w = net.workload(static_cast<std::size_t>(jobs), "sampled", seed);
  auto rep = app::run_workload(w);
  REQUIRE(rep.results == static_cast<std::size_t>(jobs));
  const auto account = w.credentials.account();
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), account).value() == jobs; }));
  std::vector<std::int64_t> ids;
  for (const auto& j : rep.jobs)
    ids.push_back(j.job_id);
  return ids;
}

// How many of these jobs each provider ran.
std::map<std::string, int> by_provider(const std::vector<std::int64_t>& ids) {
  std::map<std::string, int> out;
  for (auto id : ids)
    ++out[test::query_value(fmt::format("select provider_key from jobs where id = {}", id))];
  return out;
}

} // namespace

TEST_CASE("admin actions: tokens and scopes, drain, ban, fee, sample rate, deposit, audit trail, and a restart") {
  test::network_options opts;
  opts.providers = 2;
  test::network net(opts);
  const auto a = test::query_value("select public_key from providers where role = 'provider' order by public_key limit 1");
  const auto b = test::query_value(
      "select public_key from providers where role = 'provider' order by public_key offset 1 limit 1");
  REQUIRE(a.size() == 64);
  REQUIRE(b.size() == 64);

  // No token, a garbage token: 401; the read token: 403. Nothing is recorded or done.
  for (const auto& path : {fmt::format("/api/nodes/{}/ban", a), std::string("/api/settings"), std::string("/api/deposits")}) {
    const json body{{"fee_bps", 9000}, {"account", a}, {"amount", 1}, {"request_id", "x"}};
    for (const char* token : {static_cast<const char*>(nullptr), "garbage-token-0123456789"}) {
      auto res = post(net, path, body, token);
      REQUIRE(res);
      CHECK_MESSAGE(res->status == 401, path);
    }
    auto res = post(net, path, body, test::network::read_token);
    REQUIRE(res);
    CHECK_MESSAGE(res->status == 403, path);
    CHECK(json::parse(res->body)["error"]["code"] == "forbidden");
  }
  // Bad values: 400 with the field named, nothing recorded.
  for (const auto& [path, body] : std::vector<std::pair<std::string, json>>{
           {"/api/settings", json{{"fee_bps", 10001}}},
           {"/api/settings", json{{"sample_rate", "all"}}},
           {"/api/settings", json::object()},
           {"/api/deposits", json{{"account", a}, {"amount", -5}, {"request_id", "d"}}},
           {"/api/deposits", json{{"account", "nope"}, {"amount", 5}, {"request_id", "d"}}},
           {fmt::format("/api/nodes/{}/drain", a), json{{"request_id", std::string("bad\0id", 6)}}}}) {
    auto res = post(net, path, body, test::network::admin_token);
    REQUIRE(res);
    CHECK_MESSAGE(res->status == 400, path, " ", body.dump());
  }
  // Hostile bodies of every JSON type, and not JSON at all: 400 (413 when too large), nothing
  // recorded, the coordinator still serving.
  {
    const std::vector<std::string> bodies{
        "[]", "\"x\"", "null", "42", "{", "{\"fee_bps\": null}", "{\"fee_bps\": 1.5}",
        "{\"fee_bps\": 9223372036854775808}", "{\"fee_bps\": -1}", "{\"sample_rate\": -0.1}",
        "{\"sample_rate\": true}", "{\"sample_rate\": 1.0001}", "{\"request_id\": 5, \"fee_bps\": 1}",
        "{\"request_id\": \"\", \"fee_bps\": 1}", "{\"request_id\": \"" + std::string(200, 'r') + "\", \"fee_bps\": 1}",
        std::string(20000, '[') + std::string(20000, ']'), std::string(100000, ' ')};
    for (const auto& path : {std::string("/api/settings"), std::string("/api/deposits"), fmt::format("/api/nodes/{}/drain", a)})
      for (const auto& body : bodies) {
        httplib::Client http("127.0.0.1", net.http_port());
        http.set_bearer_token_auth(test::network::admin_token);
        auto res = http.Post(path, body, "application/json");
        REQUIRE(res);
        CHECK_MESSAGE((res->status == 400 || res->status == 413), path, " ", body.substr(0, 60), " -> ", res->status);
      }
  }
  CHECK(actions_count() == "0");
  CHECK(by_provider(run_jobs(net, 20, 1)).size() == 2); // both providers work

  SUBCASE("drain and ban steer the work; fee and sample rate apply to the next jobs; all of it survives a restart") {
    // Drained, provider a gets no new job; undrained, it does again.
    const auto cli = fmt::format("{} admin --url http://127.0.0.1:{} --token {} ", HACA_BINARY, net.http_port(),
                                 test::network::admin_token);
    auto drained = test::run_command(cli + "drain " + a);
    INFO(drained.output);
    REQUIRE(drained.exit_code == 0);
    CHECK(drained.output.find("done: drain") != std::string::npos);
    CHECK(by_provider(run_jobs(net, 20, 2)) == std::map<std::string, int>{{b, 20}});
    REQUIRE(test::run_command(cli + "drain --undo " + a).exit_code == 0);

    // Banned, provider b is disconnected and refused; its jobs go to a.
    admin_post(net, fmt::format("/api/nodes/{}/ban", b), json::object());
    CHECK(by_provider(run_jobs(net, 20, 3)) == std::map<std::string, int>{{a, 20}});

    // The fee from now on; the sample rate 0: nothing sampled.
    auto set = admin_post(net, "/api/settings", {{"fee_bps", 2500}, {"sample_rate", 0.0}});
    CHECK(set["action"] == "sample_rate");
    auto ids = run_jobs(net, 10, 4);
    // Each job settled unsampled in a block at the new rate, and each such block's fee posting
    // is the fee of each of its jobs, rounded up (market::settlement_postings).
    auto check_fees = [&](const std::vector<std::int64_t>& jobs) {
      for (auto id : jobs) {
        CHECK_MESSAGE(test::query_value(fmt::format("select b.fee_bps || ' ' || j.verdict from jobs j join blocks b on "
                                                    "b.height = j.block_height where j.id = {}",
                                                    id)) == "2500 unsampled",
                      "job ", id);
        const auto block = test::query_value(fmt::format("select block_height from jobs where id = {}", id));
        CHECK_MESSAGE(test::query_value(fmt::format("select coalesce(sum(amount), 0) from postings where block_height = "
                                                    "{} and account = 'protocol:fees'",
                                                    block)) ==
                          test::query_value(fmt::format("select sum((r.price * 2500 + 9999) / 10000) from jobs j join "
                                                        "receipts r on r.job_id = j.id and r.attempt = j.attempt where "
                                                        "j.block_height = {}",
                                                        block)),
                      "block ", block);
      }
    };
    check_fees(ids);

    // The audit trail: who did what, newest first.
    auto res = httplib::Client("127.0.0.1", net.http_port());
    res.set_bearer_token_auth(test::network::read_token);
    auto trail = res.Get("/api/actions?limit=10");
    REQUIRE(trail);
    REQUIRE(trail->status == 200);
    auto items = json::parse(trail->body)["items"];
    REQUIRE(items.size() == 5);
    CHECK(items[0]["action"] == "sample_rate");
    CHECK(items[0]["value"] == 0);
    CHECK(items[1]["action"] == "fee");
    CHECK(items[1]["value"] == 2500);
    CHECK(items[2]["action"] == "ban");
    CHECK(items[2]["target"] == b);
    CHECK(items[4]["action"] == "drain");
    for (const auto& i : items)
      CHECK(i["who"] == "tester");

    // After a crash the ban, the fee and the sample rate still hold.
    app::kill_hard(net.coordinator());
    net.restart_coordinator();
    auto after = run_jobs(net, 10, 5);
    CHECK(by_provider(after) == std::map<std::string, int>{{a, 10}});
    check_fees(after);
    // The restarted coordinator counts jobs by state from what Postgres had, then what commits.
    REQUIRE(test::eventually([&] {
      auto summary = httplib::Client("127.0.0.1", net.http_port());
      summary.set_bearer_token_auth(test::network::read_token);
      auto r = summary.Get("/api/summary");
      if (!r || r->status != 200)
        return false;
      const auto summary_now = json::parse(r->body)["jobs_now"]; // held: iterating a temporary's member dangles
      for (const auto& [state, n] : summary_now.items())
        if (n.get<std::int64_t>() !=
            std::stoll(test::query_value(fmt::format("select count(*) from jobs where state = '{}'", state))))
          return false;
      return true;
    }));
    // Unbanned, b joins again (its session retries HELLO) and works.
    admin_post(net, fmt::format("/api/nodes/{}/unban", b), json::object());
    REQUIRE(test::eventually([&] { return by_provider(run_jobs(net, 10, 6)).count(b) > 0; }, std::chrono::seconds(60)));
  }
  SUBCASE("a deposit credits once per request id, over the API and haca admin") {
    const auto account = net.new_client().account();
    auto first = admin_post(net, "/api/deposits", {{"account", account}, {"amount", 5000}, {"request_id", "dep-a"}});
    CHECK(first["command"] == "DEPOSITED");
    CHECK(first["balance"] == 5000);
    auto again = admin_post(net, "/api/deposits", {{"account", account}, {"amount", 5000}, {"request_id", "dep-a"}});
    CHECK(again["repeated"] == true);
    auto conflict = post(net, "/api/deposits", {{"account", account}, {"amount", 7}, {"request_id", "dep-a"}},
                         test::network::admin_token);
    REQUIRE(conflict);
    CHECK(conflict->status == 409);
    auto cli = test::run_command(fmt::format("{} admin --url http://127.0.0.1:{} --token {} deposit {} 250 --request-id "
                                             "dep-b",
                                             HACA_BINARY, net.http_port(), test::network::admin_token, account));
    INFO(cli.output);
    CHECK(cli.exit_code == 0);
    CHECK(cli.output.find("balance 5250") != std::string::npos);
    CHECK(test::query_value(fmt::format("select balance from accounts where id = 'client:{}'", account)) == "5250");
    CHECK(test::query_value("select count(*) from admin_actions where action = 'deposit'") == "2");
    CHECK(test::query_value(fmt::format("select count(*) from admin_actions where target = 'client:{}' and who = "
                                        "'tester'",
                                        account)) == "2");
    // After a crash the coordinator still knows both deposits: a resend is `repeated`, and the
    // same id for another amount is still a conflict.
    app::kill_hard(net.coordinator());
    net.restart_coordinator();
    json resent;
    REQUIRE(test::eventually([&] {
      auto r = post(net, "/api/deposits", {{"account", account}, {"amount", 5000}, {"request_id", "dep-a"}},
                    test::network::admin_token);
      if (r && r->status == 200)
        resent = json::parse(r->body);
      return r && r->status == 200;
    }));
    CHECK(resent["repeated"] == true);
    CHECK(resent["balance"] == 5250);
    auto still_conflict = post(net, "/api/deposits", {{"account", account}, {"amount", 7}, {"request_id", "dep-a"}},
                               test::network::admin_token);
    REQUIRE(still_conflict);
    CHECK(still_conflict->status == 409);
    CHECK(test::query_value(fmt::format("select balance from accounts where id = 'client:{}'", account)) == "5250");
    auto report = db::audit(test::test_db(), account).value();
    INFO(report.problem);
    CHECK(report.ok());
  }
}
