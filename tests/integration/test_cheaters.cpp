// A cheating provider (`--cheat-rate`, a test switch) against blind sampled verification: the
// share of its cheats that is caught is the sample rate, every caught cheat is DISPUTED and
// charged nothing, and no honest job is disputed.
#include <atomic>
#include <cmath>
#include <filesystem>
#include <thread>
#include <sstream>
#include <fstream>
#include <regex>
#include <map>
#include <set>

#include <doctest/doctest.h>
#include <fmt/format.h>

#include "app/workload.hpp"
#include "db/audit.hpp"
#include "harness.hpp"
#include "verify/signing.hpp"

using namespace haca;

namespace {

// Job ids the log says the test switch corrupted, with the layer it corrupted.
std::map<std::int64_t, int> corrupted_jobs(const std::string& log_dir) {
  std::map<std::int64_t, int> out;
  const std::regex line(R"((cheat|lie)-rate: job (\d+) corrupted at layer (\d+))");
  for (const auto& entry : std::filesystem::directory_iterator(log_dir)) {
    std::ifstream in(entry.path());
    for (std::string l; std::getline(in, l);)
      if (std::smatch m; std::regex_search(l, m, line))
        out[std::stoll(m[2])] = std::stoi(m[3]);
  }
  return out;
}

std::set<std::int64_t> jobs_with_verdict(const std::string& client, const std::string& verdict) {
  std::set<std::int64_t> out;
  auto ids = test::query_value(fmt::format("select coalesce(string_agg(id::text, ','), '') from jobs "
                                           "where client_id = '{}' and verdict = '{}'",
                                           client, verdict));
  std::stringstream s(ids);
  for (std::string id; std::getline(s, id, ',');)
    if (!id.empty())
      out.insert(std::stoll(id));
  return out;
}

} // namespace

TEST_CASE("a provider cheating on 10% of jobs is caught on the sampled share (p = 0.2), and only its cheats") {
  constexpr double p = 0.2, r = 0.1;
  constexpr int jobs = 1500;
  test::network_options o;
  o.sample_rate = p;
  o.provider_args = {{"--cheat-rate", std::to_string(r)}};
  test::network net(o);
  auto w = net.workload(jobs, "sampled", 11);
  w.notice_wait_ms = 4000; // the disputed jobs' NOTICEs come once their blocks commit
  auto rep = app::run_workload(w);
  INFO(net.logs());
  REQUIRE(rep.results == jobs);
  CHECK(rep.invalid_receipts == 0); // a cheat's receipt is validly signed: only re-execution tells
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), w.credentials.account()).value() == jobs; },
                           std::chrono::seconds(60)));

  const auto cheats = corrupted_jobs(net.dir() + "/logs");
  const auto disputed = jobs_with_verdict(w.credentials.account(), "mismatch");
  const auto verified = jobs_with_verdict(w.credentials.account(), "verified");
  MESSAGE(fmt::format("{} jobs, {} cheats, {} sampled, {} disputed", jobs, cheats.size(),
                      disputed.size() + verified.size(), disputed.size()));
  // The client was told of every dispute (NOTICE), and of nothing else.
  std::set<std::int64_t> noticed;
  for (const auto& j : rep.jobs)
    if (j.disputed)
      noticed.insert(j.job_id);
  CHECK(noticed == disputed);
  // About r of the jobs were cheated (binomial, 5 sigma).
  const double n_cheats = static_cast<double>(cheats.size());
  CHECK(std::abs(n_cheats - r * jobs) < 5 * std::sqrt(jobs * r * (1 - r)));
  // Every sampled cheat is disputed; no honest job is.
  for (auto id : disputed)
    CHECK_MESSAGE(cheats.count(id) == 1, "job ", id, " was disputed but not cheated");
  for (auto id : verified)
    CHECK_MESSAGE(cheats.count(id) == 0, "job ", id, " was cheated but verified");
  // The caught share of the cheats is p within 3 sigma.
  const double caught = static_cast<double>(disputed.size()) / n_cheats;
  const double sigma = std::sqrt(p * (1 - p) / n_cheats);
  CHECK_MESSAGE(std::abs(caught - p) <= 3 * sigma, "caught ", caught, " of the cheats, p = ", p, ", sigma ", sigma);
  // A caught cheat is charged nothing: its block charged only the others (the client's block
  // postings pay exactly the prices of its jobs settled verified or unsampled), and its slash,
  // of a stake of 0 here, is one posting of 0. The ledger and the chain check.
  CHECK(test::query_value(fmt::format("select -coalesce(sum(amount), 0) from postings where account = 'client:{}' "
                                      "and block_height is not null",
                                      w.credentials.account())) ==
        test::query_value(fmt::format("select coalesce(sum(r.price), 0) from jobs j join receipts r on r.job_id = "
                                      "j.id and r.attempt = j.attempt where j.client_id = '{}' and j.verdict in "
                                      "('verified', 'unsampled')",
                                      w.credentials.account())));
  CHECK(test::query_value(fmt::format("select count(*) from postings p join jobs j on j.id = p.job_id where "
                                      "j.client_id = '{}' and j.verdict = 'mismatch' and p.amount <> 0",
                                      w.credentials.account())) == "0");
  // Bisection finds the layer the cheat corrupted (the MLP's layers are each a trace layer), the
  // referee re-runs it and rules against the provider, and the ruling is recorded.
  for (auto id : disputed) {
    const auto ruling = test::query_value(fmt::format(
        "select layer || ' ' || loser || ' ' || (referee_hash = verifier_hash) from disputes where job_id = {}", id));
    CHECK_MESSAGE(ruling == fmt::format("{} provider true", cheats.at(id)), "job ", id, ": ", ruling);
  }
  CHECK(test::query_value(fmt::format("select count(*) from disputes d join jobs j on j.id = d.job_id where "
                                      "j.client_id = '{}'",
                                      w.credentials.account())) == std::to_string(disputed.size()));
  auto a = db::audit(test::test_db(), w.credentials.account()).value();
  INFO(a.problem);
  CHECK(a.ok());
}

TEST_CASE("a verifier lying on 30% of its verdicts is caught by the referee every time, and no honest job is disputed") {
  constexpr int jobs = 150;
  test::network_options o;
  o.sample_rate = 1.0;
  o.verifier_args = {"--lie-rate", "0.3"};
  o.coordinator_args = {"--max-verifier-lies", "0"}; // the liar keeps verifying: every lie is ruled on
  test::network net(o);
  auto w = net.workload(jobs, "full", 12);
  auto rep = app::run_workload(w);
  INFO(net.logs());
  REQUIRE(rep.results == jobs);
  const auto account = w.credentials.account();
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), account).value() == jobs; },
                           std::chrono::seconds(60)));
  const auto lies = corrupted_jobs(net.dir() + "/logs");
  MESSAGE(fmt::format("{} jobs, {} lies", jobs, lies.size()));
  CHECK(lies.size() > 20);
  // Every job ends VERIFIED (by the verifier, or by the referee after a lie) and is paid.
  CHECK(jobs_with_verdict(account, "verified").size() == static_cast<std::size_t>(jobs));
  CHECK(jobs_with_verdict(account, "mismatch").empty());
  // Every lie is a ruling against the verifier on the layer it corrupted; nothing else is.
  for (const auto& [id, layer] : lies) {
    const auto ruling = test::query_value(fmt::format(
        "select layer || ' ' || loser || ' ' || (referee_hash = provider_hash) from disputes where job_id = {}", id));
    CHECK_MESSAGE(ruling == fmt::format("{} verifier true", layer), "job ", id, ": ", ruling);
  }
  CHECK(test::query_value(fmt::format("select count(*) from disputes d join jobs j on j.id = d.job_id where "
                                      "j.client_id = '{}'",
                                      account)) == std::to_string(lies.size()));
  // The referee's activation came from the verifier (PROBE) for the jobs lied about at layer 1.
  const auto log = app::tail_file(net.dir() + "/logs/coordinator.log", 1 << 20);
  CHECK(log.find("the referee computes it") == std::string::npos);
  auto a = db::audit(test::test_db(), account).value();
  INFO(a.problem);
  CHECK(a.ok());
}

TEST_CASE("a verifier caught lying once is dropped and refused; an honest verifier finishes the jobs") {
  test::network net; // one provider, one honest verifier, every job sampled; --max-verifier-lies 1 (the default)
  const auto name = test::unique_id("liar");
  auto liar = app::start_process(name, HACA_BINARY,
                                 {"verifier", "--connect", net.node_endpoint(), "--coordinator-key", net.coordinator_key(),
                                  "--models", net.models_dir(), "--name", name, "--key", net.dir() + "/keys/liar.key",
                                  "--lie-rate", "1"},
                                 net.dir() + "/logs/liar.log");
  REQUIRE(test::eventually(
      [&] { return test::query_value(fmt::format("select count(*) from providers where name = '{}'", name)) == "1"; }));
  auto w = net.workload(40, "full", 13);
  auto rep = app::run_workload(w);
  const auto account = w.credentials.account();
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), account).value() == 40; }));
  app::stop_process(liar); // its log is complete once it stopped
  const auto liar_log = app::tail_file(net.dir() + "/logs/liar.log", 1 << 20);
  INFO(liar_log);
  INFO(net.logs());
  CHECK(rep.results == 40);
  CHECK(jobs_with_verdict(account, "verified").size() == 40);
  const auto liar_key = test::query_value(fmt::format("select public_key from providers where name = '{}'", name));
  // Ruled against for its first lie, and for any verdict it had sent before the ruling dropped
  // it; never anyone else.
  const auto rulings = std::stoi(
      test::query_value(fmt::format("select count(*) from disputes where verifier_key = '{}'", liar_key)));
  CHECK(rulings >= 1);
  CHECK(test::query_value("select count(*) from disputes") == std::to_string(rulings));
  CHECK(test::query_value("select count(*) from disputes where loser <> 'verifier'") == "0");
  CHECK(liar_log.find("you verify nothing more") != std::string::npos); // its DISCONNECT
}

namespace {

// The key a node of this network made for itself (its key file), once it exists.
verify::key_pair node_key(const test::network& net, const std::string& suffix) {
  std::string path;
  REQUIRE(test::eventually([&] {
    for (const auto& e : std::filesystem::directory_iterator(net.dir() + "/keys"))
      if (e.path().filename().string().size() > suffix.size() &&
          e.path().filename().string().ends_with(suffix + ".key") && std::filesystem::file_size(e.path()) > 0)
        path = e.path().string();
    return !path.empty();
  }));
  auto key = verify::load_or_create_key(path);
  REQUIRE(key.ok());
  return key.value();
}

std::int64_t balance_of(const std::string& account) {
  const auto v = test::query_value(fmt::format("select balance from accounts where id = '{}'", account));
  return v.empty() ? 0 : std::stoll(v);
}

} // namespace

TEST_CASE("stake: nodes join only with their stake held; a cheating provider pays each caught cheat from it, "
          "and the job runs again on an honest provider") {
  constexpr std::int64_t min_stake = 100000, price = 10;
  constexpr int jobs = 200;
  test::network_options o;
  o.wait_for_nodes = false;
  o.sample_rate = 1.0;
  o.providers = 2; // p0 cheats and is the cheaper; p1 is honest
  o.provider_args = {{"--cheat-rate", "0.5", "--price", std::to_string(price)}, {"--price", std::to_string(price + 5)}};
  o.coordinator_args = {"--min-stake", std::to_string(min_stake), "--stake-cooldown-ms", "1500"};
  test::network net(o);
  const auto provider = node_key(net, "-p0"), honest = node_key(net, "-p1"), verifier = node_key(net, "-v0");
  const auto pk = provider.public_key_hex, vk = verifier.public_key_hex;
  // Unfunded, both are refused: nothing is recorded of them.
  REQUIRE(test::eventually([&] {
    return app::tail_file(net.dir() + "/logs/coordinator.log", 1 << 20).find("refused: a node needs") !=
           std::string::npos;
  }));
  CHECK_FALSE(net.wait_for_registered(1, std::chrono::milliseconds(1500)));
  CHECK(balance_of("stake:" + pk) == 0);

  // The operator funds them (DEPOSIT to the node account); their next HELLO holds the stake.
  const auto admin_key = verify::load_or_create_key(net.dir() + "/keys/coordinator.key").value();
  auto admin = net.connect_client(net::client_credentials{admin_key, net.coordinator_key()});
  for (const auto& [key, amount] :
       {std::pair{pk, 3 * min_stake}, std::pair{honest.public_key_hex, min_stake}, std::pair{vk, min_stake}}) {
    auto reply = test::round_trip(admin, proto::make_deposit({"fund-" + key.substr(0, 8), key, amount, "node"}));
    REQUIRE(reply.has_value());
    auto d = proto::parse_deposited(*reply);
    REQUIRE(d.ok());
    CHECK(d->to == "node");
  }
  REQUIRE(net.wait_for_registered(3, std::chrono::seconds(30)));
  CHECK(balance_of("stake:" + pk) == min_stake);
  CHECK(balance_of("stake:" + vk) == min_stake);
  CHECK(balance_of("provider:" + vk) == 0);

  auto w = net.workload(jobs, "full", 21);
  w.notice_wait_ms = 8000; // the NOTICEs, and the re-runs' RESULTs
  auto rep = app::run_workload(w);
  INFO(net.logs());
  REQUIRE(rep.results == jobs);
  const auto account = w.credentials.account();
  const auto disputed = jobs_with_verdict(account, "mismatch");
  MESSAGE(fmt::format("{} jobs, {} disputed and slashed", jobs, disputed.size()));
  REQUIRE(disputed.size() >= 5);
  // Each disputed job ran again, as "rerun:<id>", on the honest provider: the client got that
  // RESULT (the same prediction an honest run gives), and pays for it, not for the disputed one.
  std::size_t reruns = 0;
  for (const auto& j : rep.jobs) {
    if (!j.disputed)
      continue;
    CHECK(j.rerun_request_id == fmt::format("rerun:{}", j.job_id));
    CHECK_MESSAGE(j.rerun_done, "job ", j.job_id, ": no RESULT of its re-run");
    CHECK(j.rerun_receipt.provider_key == honest.public_key_hex);
    reruns += j.rerun_done ? 1 : 0;
  }
  CHECK(reruns == disputed.size());
  const auto all_jobs = jobs + static_cast<std::int64_t>(disputed.size());
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), account).value() == all_jobs; },
                           std::chrono::seconds(60)));
  CHECK(test::query_value(fmt::format("select count(*) from jobs j where "
                                      "j.client_id = '{}' and j.client_req_id like 'rerun:%' and j.verdict = "
                                      "'verified'",
                                      account)) == std::to_string(disputed.size()));
  // Each caught cheat: the client gets the price back as compensation, the verifier the price as
  // its reward, both from the provider's stake, recorded with the job.
  REQUIRE(test::eventually([&] {
    return test::query_value(fmt::format("select count(*) from postings where ref like 'slash:%:provider' and "
                                         "account = 'stake:{}'", // the transfer's first posting holds the ref
                                         pk)) == std::to_string(disputed.size());
  }));
  for (auto id : disputed)
    CHECK(test::query_value(fmt::format("select string_agg(account || ' ' || amount, ', ' order by amount, account) from "
                                        "postings where job_id = {} and block_height is null",
                                        id)) ==
          fmt::format("stake:{} -{}, client:{} {}, provider:{} {}", pk, 2 * price, account, price, vk, price));
  const auto n = static_cast<std::int64_t>(disputed.size());
  CHECK(balance_of("provider:" + vk) == n * price);
  // The provider's stake was topped up from its account after each slash: still at the minimum.
  REQUIRE(test::eventually([&] { return balance_of("stake:" + pk) == min_stake; }));
  // A stake stays while its node is connected, and goes back to its account after it left
  // and the cool-down passed.
  app::stop_process(net.provider(0));
  REQUIRE(test::eventually([&] { return balance_of("stake:" + pk) == 0; }, std::chrono::seconds(20)));
  CHECK(balance_of("stake:" + vk) == min_stake);
  CHECK(test::query_value(fmt::format("select count(*) from postings where ref like 'unstake:{}:%' and ref not like "
                                      "'%/%'",
                                      pk)) == "1"); // one transfer (its second posting's ref ends in /1)
  auto a = db::audit(test::test_db(), account).value();
  INFO(a.problem);
  CHECK(a.ok());
}

TEST_CASE("stake: a coordinator killed (SIGKILL) twice while disputes are ruled, slashed and re-run recovers: each "
          "ruling slashed once, each disputed job re-run once, stakes intact, the audit clean") {
  constexpr std::int64_t min_stake = 100000;
  constexpr std::size_t jobs = 600;
  test::network_options o;
  o.wait_for_nodes = false;
  o.sample_rate = 1.0;
  o.providers = 2;
  o.provider_args = {{"--cheat-rate", "0.3", "--price", "10"}, {"--price", "15"}};
  o.coordinator_args = {"--min-stake", std::to_string(min_stake)};
  test::network net(o);
  const auto admin_key = verify::load_or_create_key(net.dir() + "/keys/coordinator.key").value();
  {
    auto admin = net.connect_client(net::client_credentials{admin_key, net.coordinator_key()});
    for (const auto* suffix : {"-p0", "-p1", "-v0"}) {
      const auto key = node_key(net, suffix).public_key_hex;
      auto reply = test::round_trip(admin, proto::make_deposit({"fund-" + key.substr(0, 8), key, 100 * min_stake, "node"}));
      REQUIRE(reply.has_value());
      REQUIRE(proto::parse_deposited(*reply).ok());
    }
  }
  REQUIRE(net.wait_for_registered(3, std::chrono::seconds(30)));

  auto w = net.workload(jobs, "full", 23);
  std::atomic<std::size_t> answered{0};
  w.progress = [&](std::size_t n, std::size_t) { answered = n; };
  app::workload_report rep;
  std::thread client([&] { rep = app::run_workload(w); });
  for (std::size_t at : {jobs / 3, 2 * jobs / 3}) {
    for (int i = 0; i < 3000 && answered < at; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    app::kill_hard(net.coordinator());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    net.restart_coordinator();
  }
  client.join();
  INFO(net.logs());
  CHECK(rep.results == jobs);
  const auto account = w.credentials.account();
  const auto count = [](const std::string& sql) { return std::stoll(test::query_value(sql)); };
  // Every disputed job is re-run exactly once, and every job (re-runs too) ends.
  const auto disputed_sql = fmt::format("select count(*) from jobs j where j.client_id = '{}' and j.verdict = "
                                        "'mismatch' "
                                        "and exists (select 1 from disputes d where d.job_id = j.id)",
                                        account);
  REQUIRE(test::eventually(
      [&] {
        return count(fmt::format("select count(*) from jobs where client_id = '{}' and state not in ('SETTLED', "
                                 "'FAILED', 'EXPIRED')",
                                 account)) == 0 &&
               count(fmt::format("select count(*) from jobs where client_id = '{}' and client_req_id like 'rerun:%'",
                                 account)) == count(disputed_sql);
      },
      std::chrono::seconds(90)));
  const auto disputed = count(disputed_sql);
  MESSAGE(fmt::format("{} jobs, {} disputed, slashed and re-run across two coordinator crashes", jobs, disputed));
  CHECK(disputed >= 5);
  // Every re-run parent is a disputed job, and none has two.
  CHECK(count(fmt::format("select count(distinct client_req_id) from jobs where client_id = '{}' and client_req_id "
                          "like 'rerun:%'",
                          account)) == disputed);
  // Every ruling against the provider is slashed exactly once (the ref is unique; none is missing).
  CHECK(count("select count(*) from disputes d join jobs j on j.id = d.job_id where d.loser in ('provider', 'both') "
              "and j.state = 'SETTLED' and not exists (select 1 from postings p where p.ref = 'slash:' || d.job_id "
              "|| ':provider')") == 0);
  CHECK(count("select count(*) from postings where ref like 'slash:%:provider'") ==
        count("select count(*) from disputes where loser in ('provider', 'both')"));
  // The stakes were not held twice by the nodes' HELLOs after each restart.
  CHECK(count(fmt::format("select balance from accounts where id = 'stake:{}'", node_key(net, "-v0").public_key_hex)) ==
        min_stake);
  auto a = db::audit(test::test_db(), account).value();
  INFO(a.problem);
  CHECK(a.ok());
}

TEST_CASE("a dispute over a job executed before a coordinator restart is still bisected to the cheated layer") {
  test::network_options o;
  o.verifiers = 0; // the jobs wait EXECUTED, unverified, across the restart
  o.sample_rate = 1.0;
  o.provider_args = {{"--cheat-rate", "0.5"}};
  test::network net(o);
  auto w = net.workload(60, "full", 24);
  auto rep = app::run_workload(w);
  REQUIRE(rep.results == 60);
  const auto account = w.credentials.account();
  // The provider's layer hashes are stored with each receipt, and give its signed trace root.
  CHECK(test::query_value(fmt::format("select count(*) from receipts r join jobs j on j.id = r.job_id where "
                                      "j.client_id = '{}' and r.layer_hashes like '%,%'",
                                      account)) == "60");
  app::kill_hard(net.coordinator());
  net.restart_coordinator();
  auto verifier = net.start_verifier(test::unique_id("late-v"));
  INFO(net.logs());
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), account).value() == 60; },
                           std::chrono::seconds(60)));
  const auto cheats = corrupted_jobs(net.dir() + "/logs");
  REQUIRE(!cheats.empty());
  for (const auto& [id, layer] : cheats) {
    const auto ruling = test::query_value(fmt::format("select layer || ' ' || loser from disputes where job_id = {}", id));
    CHECK_MESSAGE(ruling == fmt::format("{} provider", layer), "job ", id, ": ", ruling);
  }
  app::stop_process(verifier);
}
