// Faults on real processes while a real client runs: 20,000 jobs go through a network whose
// coordinator is killed (twice), stopped with SIGTERM, whose provider and verifier are killed,
// and whose Postgres stalls for 12 s (every process of it SIGSTOPped: connections stay open and
// answer nothing), stops for 10 s and restarts, one fault after another while the run is in
// progress. The client is `haca submit`'s own (app::run_workload): it resends unanswered
// request ids after a silent spell. Afterwards every request has exactly one result, every job
// is final, nobody paid twice, and `haca audit` finds nothing.
//
// The Postgres faults act on cluster `15 main` (pg_ctlcluster, as root), the one that holds the
// test databases: they break or freeze every connection to it, other programs' too. Set
// HACA_TEST_PG_CLUSTER (e.g. "15 tests", a cluster made with pg_createcluster, with
// HACA_TEST_DB pointing at it) to fault another one.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <sys/wait.h>
#include <thread>

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <pqxx/pqxx>

#include "app/workload.hpp"
#include "harness.hpp"
#include "market/ledger.hpp"
#include "verify/receipt.hpp"

using namespace haca;

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

// The Postgres cluster that holds the test databases ("15 main" unless HACA_TEST_PG_CLUSTER
// says otherwise, e.g. a second cluster made with pg_createcluster for tests).
std::string pg_cluster() {
  const char* c = std::getenv("HACA_TEST_PG_CLUSTER");
  return c ? c : "15 main";
}

// A query that rides out a Postgres restart: every connection to the cluster breaks then, the
// test's own included, so a failed query is tried again on a new connection.
std::string sql(const std::string& query, std::chrono::seconds patience = std::chrono::seconds(60)) {
  auto deadline = clock_type::now() + patience;
  for (;;) {
    try {
      return test::query_value(query);
    } catch (const std::exception& e) {
      if (clock_type::now() > deadline)
        throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

// The pids of the cluster's postmaster and of its children (backends, WAL writer, ...).
std::string postgres_pids() {
  auto c = pg_cluster();
  std::replace(c.begin(), c.end(), ' ', '-');
  auto r = test::run_command(fmt::format("p=$(head -1 /var/run/postgresql/{}.pid) && echo $p $(pgrep -P $p)", c));
  return r.exit_code == 0 ? r.output : "";
}

std::int64_t sql_int(const std::string& query) {
  auto v = sql(query);
  return v.empty() ? 0 : std::stoll(v);
}

// The client, on a thread of its own; stopped and joined however the test ends.
struct client_thread {
  std::atomic<std::size_t> finished{0};
  std::atomic<bool> stop{false}, done{false};
  app::workload_report report;
  std::thread thread;

  explicit client_thread(app::workload_options w) {
    w.progress = [this](std::size_t n, std::size_t) { finished = n; };
    w.stop = &stop;
    thread = std::thread([this, w = std::move(w)] {
      report = app::run_workload(w);
      done = true;
    });
  }
  ~client_thread() {
    stop = true;
    if (thread.joinable())
      thread.join();
  }
  void join() {
    if (thread.joinable())
      thread.join();
  }
  // Waits until the client has `n` answers; false if it ended (or the time ran out) first.
  bool wait_for(std::size_t n, std::chrono::seconds timeout) {
    auto deadline = clock_type::now() + timeout;
    while (finished < n && !done && clock_type::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return finished >= n;
  }
};

struct phase {
  std::string what;
  std::size_t at = 0;        // the client's answers when the fault hit
  double fault_s = 0;        // the fault and the restart
  double resumed_s = 0;      // from the fault until the client had resumed (window + 100 more answers)
  std::string note;
};

} // namespace

TEST_SUITE("faults") {

TEST_CASE("20,000 jobs survive coordinator SIGKILLs and SIGTERM, provider and verifier kills and a Postgres "
          "restart, stall and stop: one result per request, every job final, nobody charged twice, audit clean") {
  constexpr std::size_t jobs = 20000; // room for the bursts after each Postgres fault
  constexpr std::int64_t faucet = 1000000000; // test::network starts its coordinator with --faucet 1000000000
  const auto t0 = clock_type::now();

  test::network_options o;
  o.providers = 2;
  o.verifiers = 1;
  o.sample_rate = 1.0;
  test::network net{o};
  const auto who = net.new_client();
  const auto client_id = who.account();
  const auto account = market::client_account(client_id);
  const double setup_s = seconds_since(t0);

  auto w = net.workload(jobs, "full", 2024); // every job re-executed by the verifier
  w.credentials = who;
  w.window = 800;
  w.resend_after_ms = 2000;
  w.timeout_ms = 60000; // no progress for a minute: a hang, and the test says so

  const auto run_start = clock_type::now();
  client_thread client{w};
  std::vector<phase> phases;
  int sigterm_status = -999;
  std::string fault_trouble; // what went wrong while faulting, if anything

  // Each fault waits until the client has `threshold` answers, so it hits a run in progress,
  // then until the client has resumed before the next one may start: window + 100 more answers,
  // since at most `window` requests were unanswered when the fault hit (their replies may have
  // been on the way already), so at least 100 answers came from work done after it.
  auto fault = [&](std::size_t threshold, const std::string& what, const std::function<std::string()>& act) {
    if (!fault_trouble.empty())
      return;
    if (!client.wait_for(threshold, std::chrono::seconds(90))) {
      fault_trouble = fmt::format("'{}' not started: the client stopped at {} answers (done: {})", what,
                                  client.finished.load(), client.done.load());
      return;
    }
    phase p;
    p.what = what;
    p.at = client.finished;
    auto t = clock_type::now();
    p.note = act();
    p.fault_s = seconds_since(t);
    // (Capped at the run's size: a fast run may be near its end when the last fault hits.)
    if (!client.wait_for(std::min<std::size_t>(p.at + w.window + 100, jobs), std::chrono::seconds(60)))
      fault_trouble = fmt::format("after '{}' the client did not resume: {} answers", what, client.finished.load());
    p.resumed_s = seconds_since(t);
    fmt::print("faults: '{}' at {} answers: {:.2f} s, the client resumed after {:.2f} s {}\n", p.what, p.at, p.fault_s,
               p.resumed_s, p.note);
    std::fflush(stdout);
    phases.push_back(std::move(p));
  };
  auto check_coordinator_alive = [&](const std::string& before) {
    if (!app::running(net.coordinator()))
      fault_trouble = "the coordinator had exited on its own before " + before;
    return fault_trouble.empty();
  };
  // What the fault interrupts, as stored.
  auto in_flight = [&] {
    return sql(fmt::format("select count(*) filter (where state not in ('SETTLED', 'FAILED', 'EXPIRED', 'CANCELLED')) "
                           "|| ' open, ' || count(*) filter (where state = 'ASSIGNED') || ' assigned, ' || "
                           "count(*) filter (where state = 'EXECUTED') || ' awaiting a verdict' from jobs where "
                           "client_id = '{}'",
                           client_id));
  };
  auto kill_coordinator = [&]() -> std::string {
    if (!check_coordinator_alive("its SIGKILL"))
      return "";
    auto jobs_then = in_flight();
    app::kill_hard(net.coordinator());
    std::this_thread::sleep_for(std::chrono::milliseconds(300)); // a supervisor's restart delay
    net.restart_coordinator();
    return "(jobs: " + jobs_then + ")";
  };

  fault(1000, "coordinator SIGKILL #1", kill_coordinator);
  fault(2400, "coordinator SIGKILL #2", kill_coordinator);
  fault(3800, "coordinator SIGTERM (drain)", [&]() -> std::string {
    if (!check_coordinator_alive("its SIGTERM"))
      return "";
    auto jobs_then = in_flight();
    auto t = clock_type::now();
    sigterm_status = app::stop_process(net.coordinator(), 20000);
    auto drained = seconds_since(t);
    net.restart_coordinator();
    return fmt::format("(jobs: {}; exit status {}, drained in {:.2f} s)", jobs_then, sigterm_status, drained);
  });
  fault(5200, "provider SIGKILL", [&]() -> std::string {
    // The provider that holds the most assigned jobs now (waiting a second at most for one that
    // holds a good number: the client goes on meanwhile, and the later faults need a run in
    // progress).
    auto held = [&](int i) {
      return sql_int(fmt::format("select count(*) from jobs j join providers p on p.public_key = j.provider_key "
                                 "where j.state = 'ASSIGNED' and p.name = '{}'",
                                 net.provider(i).name));
    };
    int victim = 0;
    std::int64_t holding = 0;
    for (auto until = clock_type::now() + std::chrono::seconds(1); holding < 20 && clock_type::now() < until;) {
      auto h0 = held(0), h1 = held(1);
      victim = h1 > h0 ? 1 : 0;
      holding = std::max(h0, h1);
    }
    app::kill_hard(net.provider(victim));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    net.provider(victim) = net.start_provider(net.provider(victim).name); // the same name and key, as a supervisor would
    return fmt::format("(provider {}, {} jobs stored as ASSIGNED to it)", victim, holding);
  });
  fault(6600, "verifier SIGKILL", [&]() -> std::string {
    auto waiting = sql(fmt::format("select count(*) from jobs where state = 'EXECUTED' and client_id = '{}'", client_id));
    app::kill_hard(net.verifier(0));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    net.verifier(0) = net.start_verifier(net.verifier(0).name);
    return fmt::format("({} jobs waiting for a verdict)", waiting);
  });
  // No query of the test's own while Postgres is frozen or down: it would wait with everyone.
  fault(8000, "Postgres stall 12 s (SIGSTOP)", [&]() -> std::string {
    auto jobs_then = in_flight();
    const auto pids = postgres_pids();
    if (pids.empty()) {
      fault_trouble = "cannot find the Postgres processes of cluster " + pg_cluster();
      return "";
    }
    test::run_command("kill -STOP " + pids);
    std::this_thread::sleep_for(std::chrono::seconds(12));
    auto answers_while_frozen = client.finished.load();
    test::run_command("kill -CONT " + pids);
    return fmt::format("(jobs: {}; {} answers while frozen: those committed before it)", jobs_then,
                       answers_while_frozen);
  });
  fault(9400, "Postgres stop 10 s", [&]() -> std::string {
    auto jobs_then = in_flight();
    auto stop = test::run_command(fmt::format("pg_ctlcluster {} stop -m fast 2>&1", pg_cluster()));
    std::this_thread::sleep_for(std::chrono::seconds(10));
    auto start = test::run_command(fmt::format("pg_ctlcluster {} start 2>&1", pg_cluster()));
    if (stop.exit_code != 0 || start.exit_code != 0)
      fault_trouble = fmt::format("pg_ctlcluster {} stop/start failed: {} {}", pg_cluster(), stop.output, start.output);
    return fmt::format("(jobs: {})", jobs_then);
  });

  fault(12500, "Postgres restart", [&]() -> std::string {
    auto jobs_then = in_flight();
    auto count_retries = [&] { // the store's "commit ... not confirmed; retrying" lines so far
      auto log = app::tail_file(net.coordinator().log_path, std::size_t{1} << 30);
      std::size_t n = 0;
      for (auto at = log.find("not confirmed"); at != std::string::npos; at = log.find("not confirmed", at + 1))
        ++n;
      return n;
    };
    auto retries_before = count_retries();
    auto t = clock_type::now();
    auto r = test::run_command(fmt::format("pg_ctlcluster {} restart 2>&1", pg_cluster()));
    auto restart_s = seconds_since(t);
    if (r.exit_code != 0)
      fault_trouble = fmt::format("pg_ctlcluster {} restart failed ({}): {}", pg_cluster(), r.exit_code, r.output);
    // Some traffic after the restart, then count how often the store had to retry.
    client.wait_for(client.finished + 100, std::chrono::seconds(30));
    return fmt::format("(jobs: {}; restart took {:.2f} s, the coordinator's store retried {} commits)", jobs_then,
                       restart_s, count_retries() - retries_before);
  });

  if (!fault_trouble.empty())
    client.stop = true;
  client.join();
  const double run_s = seconds_since(run_start);
  const auto& rep = client.report;
  INFO("network dir (logs): ", net.dir());
  INFO(net.logs());
  REQUIRE_MESSAGE(fault_trouble.empty(), fault_trouble);
  for (const auto& p : phases) // a fault after the last answer would have tested nothing
    CHECK_MESSAGE(p.at < jobs, "'", p.what, "' hit after the run had ended");

  // The client: one result per request, all valid, none contradicting another.
  CHECK_FALSE(rep.timed_out);
  CHECK(rep.reconnects >= 1); // the SIGKILLs lost replies: the resend path ran
  CHECK(rep.resent >= 1);
  CHECK(rep.results == jobs);
  CHECK(rep.errors == 0);
  CHECK(rep.duplicate_results == 0);
  CHECK(rep.invalid_receipts == 0);
  for (const auto& j : rep.jobs)
    if (!j.error_code.empty()) {
      FAIL_CHECK("request ", j.request_id, " (job ", j.job_id, ") ended with ", j.error_code, ": ", j.error_reason);
      break;
    }
  std::set<std::int64_t> job_ids;
  for (const auto& j : rep.jobs)
    if (j.done)
      job_ids.insert(j.job_id);
  CHECK(job_ids.size() == rep.results); // no two requests share a job

  // Every job reaches a final state: settled after verification, or failed or expired.
  const auto t_final = clock_type::now();
  const auto open_jobs = [] {
    return sql_int("select count(*) from jobs where state not in ('SETTLED', 'FAILED', 'EXPIRED', 'CANCELLED')");
  };
  bool all_final = test::eventually([&] { return open_jobs() == 0; }, std::chrono::seconds(120));
  const double final_s = seconds_since(t_final);
  if (!all_final) {
    auto stuck = sql("select string_agg(id || ' ' || state || ' attempt ' || attempt, ', ' order by id) from "
                     "(select * from jobs where state not in ('SETTLED', 'FAILED', 'EXPIRED', 'CANCELLED') "
                     "order by id limit 10) s");
    FAIL_CHECK("jobs still open after 120 s: ", open_jobs(), ", the first: ", stuck);
  }
  CHECK(open_jobs() == 0);

  // Exactly one job per request id, and it is the one the client heard about.
  const auto c = fmt::format("client_id = '{}'", client_id);
  CHECK(sql_int("select count(*) from jobs where " + c) == static_cast<std::int64_t>(jobs));
  CHECK(sql_int("select count(distinct client_req_id) from jobs where " + c) ==
        sql_int("select count(*) from jobs where " + c));
  CHECK(sql_int("select count(*) from jobs where state = 'SETTLED' and " + c) == static_cast<std::int64_t>(jobs));
  {
    std::map<std::string, std::pair<std::int64_t, std::string>> stored; // request id -> job id, receipt hash
    for (int tries = 0;; ++tries) {
      try {
        pqxx::connection conn{net.db_url()};
        pqxx::read_transaction tx{conn};
        stored.clear();
        for (const auto& row : tx.exec_params("select j.client_req_id, j.id, coalesce(r.receipt_hash, '') from jobs j "
                                              "left join receipts r on r.job_id = j.id and r.attempt = j.attempt "
                                              "where j.client_id = $1",
                                              client_id))
          stored[row[0].c_str()] = {row[1].as<std::int64_t>(), row[2].c_str()};
        break;
      } catch (const pqxx::broken_connection&) {
        REQUIRE(tries < 100);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
    std::size_t wrong_job = 0, wrong_receipt = 0;
    std::string example;
    for (const auto& j : rep.jobs) {
      if (!j.done)
        continue;
      auto it = stored.find(j.request_id);
      if (it == stored.end() || it->second.first != j.job_id) {
        if (wrong_job++ == 0)
          example = fmt::format("request {}: the client got job {}, the database has {}", j.request_id, j.job_id,
                                it == stored.end() ? std::string("none") : std::to_string(it->second.first));
      } else if (it->second.second != verify::receipt_hash(j.receipt)) {
        if (wrong_receipt++ == 0)
          example = fmt::format("request {} (job {}): the client's receipt {} is not the stored one {}", j.request_id,
                                j.job_id, verify::receipt_hash(j.receipt), it->second.second);
      }
    }
    CHECK_MESSAGE(wrong_job == 0, example);
    CHECK_MESSAGE(wrong_receipt == 0, example);
  }

  // Nobody charged twice: one faucet grant, every job in at most one block (blocks charge their
  // jobs: a client pays only in block postings), and the balance is the grant less the prices
  // of the settled jobs' receipts (a disputed job is not charged).
  const auto a = fmt::format("account = '{}'", account);
  CHECK(sql_int("select count(*) from postings where amount > 0 and " + a) == 1);
  CHECK(sql_int("select coalesce(sum(amount), 0) from postings where amount > 0 and " + a) == faucet);
  CHECK(sql_int("select count(*) from (select v.id from blocks b cross join unnest(b.job_ids) as v (id) join jobs j "
                "on j.id = v.id where j." + c + " group by v.id having count(*) > 1) twice") == 0);
  CHECK(sql_int("select count(*) from postings where amount < 0 and block_height is null and " + a) == 0);
  const auto charged = sql_int(
      "select coalesce(sum(r.price), 0) from jobs j join receipts r on r.job_id = j.id and r.attempt = j.attempt "
      "where j.state = 'SETTLED' and j.verdict <> 'mismatch' and j." + c);
  CHECK(charged > 0);
  CHECK(sql_int(fmt::format("select balance from accounts where id = '{}'", account)) == faucet - charged);
  CHECK(sql_int("select -coalesce(sum(amount), 0) from postings where amount < 0 and " + a) == charged);
  CHECK(sql_int("select count(*) from receipts r join jobs j on j.id = r.job_id where j." + c) ==
        static_cast<std::int64_t>(jobs));
  CHECK(sql_int("select count(*) from jobs j where j.verdict = 'mismatch' and j." + c) == 0); // honest nodes: no dispute

  // The independent audit agrees.
  auto audit = test::run_command(fmt::format("{} audit --db '{}' --stuck-after-s 60 2>&1", HACA_BINARY, net.db_url()));
  INFO("haca audit printed:\n", audit.output);
  CHECK(audit.exit_code == 0);

  CHECK(sigterm_status == 0);
  CHECK(app::running(net.coordinator())); // nothing died on its own
  CHECK(app::running(net.provider(0)));
  CHECK(app::running(net.provider(1)));
  CHECK(app::running(net.verifier(0)));

  std::string summary = fmt::format(
      "faults: {} jobs in {:.1f} s ({:.0f} jobs/s, setup {:.1f} s), all final {:.1f} s later; client: {} reconnects, "
      "{} requests resent, {} refusals retried; {} jobs ran more than once (attempts: {}), {} blocks\n",
      jobs, run_s, static_cast<double>(rep.results) / run_s, setup_s, final_s, rep.reconnects, rep.resent,
      rep.retries, sql("select count(*) from jobs where attempt > 0 and " + c),
      sql("select string_agg(n || ' x ' || attempt, ', ' order by attempt) from (select attempt, count(*) n from jobs "
          "where " + c + " group by attempt) s"),
      sql("select count(*) from blocks"));
  for (const auto& p : phases)
    summary += fmt::format("  {:<28} at {:>5} answers: fault {:5.2f} s, client resumed after {:5.2f} s {}\n", p.what,
                           p.at, p.fault_s, p.resumed_s, p.note);
  std::fputs(summary.c_str(), stdout);
}

} // TEST_SUITE
