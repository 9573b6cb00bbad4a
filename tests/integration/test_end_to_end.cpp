// Both paths end to end, on real processes, sockets and Postgres.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <thread>

#include "app/workload.hpp"
#include "db/audit.hpp"
#include "harness.hpp"

using namespace haca;

TEST_CASE("jobs come back with valid receipts and end verified and settled in a balanced, hash-chained ledger") {
  test::network net;
  auto w = net.workload(20, "sampled", 7); // the network samples at rate 1
  auto rep = app::run_workload(w);
  INFO(net.logs());
  REQUIRE(rep.results == 20);
  CHECK(rep.errors == 0);
  CHECK(rep.invalid_receipts == 0);
  CHECK(rep.duplicate_results == 0);

  // The provider computed exactly what the reference engine computes here.
  auto model = kernels::load_model_file(net.models_dir() + "/mlp.safetensors").value();
  for (std::size_t i = 0; i < rep.jobs.size(); ++i) {
    auto local = kernels::run_model(model, w.inputs[i], kernels::reference_backend()).value();
    CHECK(rep.jobs[i].classes == local.classes);
    CHECK(rep.jobs[i].receipt.trace_root == local.trace_root);
  }

  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), w.credentials.account()).value() == 20; }));
  auto a = db::audit(test::test_db(), w.credentials.account()).value();
  INFO(a.problem);
  CHECK(a.settled == 20);
  CHECK(a.verified == 20);
  CHECK(a.receipts_valid);
  CHECK(a.chain_valid);
  CHECK(a.postings_balanced);
  // Every job went through the whole life cycle, each step recorded (the last by its block).
  auto states = test::query_value(fmt::format(
      "select string_agg(state, ',' order by seq) from job_timeline where job_id = {}", rep.jobs[0].job_id));
  CHECK(states == "SUBMITTED,QUEUED,ASSIGNED,EXECUTED,VERIFIED,SETTLED");
}

TEST_CASE("tier none skips verification and the job still settles, each step recorded once") {
  // One provider taking one job at a time: the first job is assigned in the step that admits
  // it (stored ASSIGNED with its insert), the others wait QUEUED and are assigned by a later
  // transition. UNSAMPLED is written with the block that settles the job. Both ways must leave
  // the same timeline.
  test::network_options o;
  o.providers = 1;
  o.provider_args = {{"--credit", "1"}};
  test::network net{o};
  auto w = net.workload(6, "none", 8);
  std::this_thread::sleep_for(std::chrono::milliseconds(200)); // the provider's READY follows its registration
  auto rep = app::run_workload(w);
  INFO(net.logs());
  REQUIRE(rep.results == 6);
  REQUIRE(test::eventually([&] { return db::count_final(test::test_db(), w.credentials.account()).value() == 6; }));
  auto a = db::audit(test::test_db(), w.credentials.account()).value();
  INFO(a.problem);
  CHECK(a.unsampled == 6);
  CHECK(a.verified == 0);
  CHECK(a.postings_balanced);
  CHECK(a.problem.empty());
  auto timelines = test::query_value(fmt::format(
      "select string_agg(distinct t, ' | ') from (select (select string_agg(e.state || ':' || e.seq, ',' order by "
      "e.seq) from job_timeline e where e.job_id = j.id) || ' row ' || j.state || ':' || j.seq || ' priced ' || "
      "(j.price is not null and j.provider_key is not null) as t from jobs j where j.client_id = '{}') x",
      w.credentials.account()));
  CHECK(timelines == "SUBMITTED:0,QUEUED:1,ASSIGNED:2,EXECUTED:3,UNSAMPLED:4,SETTLED:5 row SETTLED:5 priced true");
  // Both ways were taken: assigned at admission (the ASSIGNED event at the QUEUED one's time),
  // and assigned later.
  auto ways = test::query_value(fmt::format(
      "select count(*) filter (where a.at = q.at) || ' at once, ' || count(*) filter (where a.at > q.at) || ' later' "
      "from jobs j join job_events q on q.job_id = j.id and q.state = 'QUEUED' join job_events a on a.job_id = j.id "
      "and a.state = 'ASSIGNED' where j.client_id = '{}'",
      w.credentials.account()));
  CHECK(ways != "0 at once, 6 later");
  CHECK(ways != "6 at once, 0 later");
}

TEST_CASE("a job whose provider is killed while holding it completes on another provider exactly once") {
  test::network_options o;
  o.provider_args = {{"--fault-delay-ms", "4000", "--credit", "1"}};
  test::network net{o};
  auto client_id = test::unique_id("kill");

  auto w = net.workload(1, "sampled", 9);
  const auto account = w.credentials.account();
  app::workload_report rep;
  std::thread client{[&] { rep = app::run_workload(w); }};

  auto job_state = [&] { return test::query_value(fmt::format("select state from jobs where client_id = '{}'", account)); };
  REQUIRE(test::eventually([&] { return job_state() == "ASSIGNED"; }, std::chrono::seconds(10)));
  auto second = net.start_provider(client_id + "-rescuer");
  app::kill_hard(net.provider(0)); // kill -9 while it holds the job
  client.join();
  app::stop_process(second);
  INFO(net.logs());

  REQUIRE(rep.results == 1);
  CHECK(rep.duplicate_results == 0);
  CHECK(rep.invalid_receipts == 0);
  const auto& job = rep.jobs[0];
  CHECK(job.receipt.attempt == 1);
  auto rescuer_key = test::query_value(fmt::format("select public_key from providers where name = '{}-rescuer'", client_id));
  CHECK(job.receipt.provider_key == rescuer_key);

  REQUIRE(test::eventually([&] { return job_state() == "SETTLED"; }));
  auto count = [&](const std::string& sql) { return test::query_value(fmt::format(fmt::runtime(sql), job.job_id)); };
  CHECK(count("select count(*) from receipts where job_id = {}") == "1");
  CHECK(count("select count(*) from job_events where job_id = {} and state = 'ASSIGNED'") == "2");
  CHECK(count("select count(*) from job_timeline where job_id = {} and state = 'SETTLED'") == "1");
  CHECK(count("select count(*) from blocks where {} = any (job_ids)") == "1"); // charged once, by one block
  CHECK(count("select verdict from jobs where id = {}") != "mismatch");
}
