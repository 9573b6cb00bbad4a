#pragma once
// The deterministic simulation of a coordinator (FoundationDB / TigerBeetle style): the three
// pure cores driven exactly as the actor adapters drive them, a simulated store with commit
// faults, a lossy network, clients, providers and verifiers, coordinator crashes and drains,
// all from one seed. After every step and at the end the invariants are checked; the first one
// broken ends the run and is reported with the seed that reproduces it.
//
// One std::mt19937_64 per seed; simulated time only; ordered containers only; so a seed
// replays the same run exactly (`digest` proves it).
//
// Checked after every step: effects.errors is empty; nothing is told before the record it
// depends on is committed (ACK: its job_insert; RESULT and VERIFY: the stored receipt; JOB:
// the ASSIGNED record, to that provider at that price; ERROR expired/failed: the final state;
// each hand-off: its record); a refusal never names a request the store holds; held(client)
// is the max_price of the client's jobs in memory whose end is not durable, and every job
// open in the store is in memory; waiting() counts the SUBMITTED, QUEUED and ASSIGNED jobs;
// what the core holds as durable is stored; settlement builds on the store's chain head; the
// store never sees what a correct core does not write (a stale or conflicting transition, a
// fork, a gap); a node's DISCONNECT takes its work back at once. Clients check each RESULT
// against their request, one job id and one receipt per request id, and never a RESULT with
// ERROR expired/failed.
// At the end of a calm phase (no faults; every node reconnects, as after a partition heals,
// since a lost READY leaves credit out of step for good): every request got a final answer,
// every job is in exactly one final state, the chain is valid (heights, links, hashes,
// signatures, batch roots, totals), each job settled at most once and charged at most its
// max_price, postings sum to zero per item and overall, each client's balance is funding
// minus charges in the store and in the execution core, and nothing is held.
#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/execution.hpp"
#include "core/settlement.hpp"
#include "core/verification.hpp"
#include "market/ledger.hpp"
#include "verify/hash.hpp"
#include "verify/merkle.hpp"
#include "verify/receipt.hpp"

#include "sim_peers.hpp"
#include "sim_store.hpp"

namespace haca::sim {

struct sim_options {
  std::uint64_t seed = 1;
  bool verbose = false;              // keep a trace of every event (HACA_SIM_SEED)
  // Breakage, for the test that proves the checker catches it (never in core/):
  bool break_drop_postings = false;  // the store loses one settled item's postings
  bool break_forge_settled = false;  // the adapter hands the execution core a forged "settled,
                                     // charged 0" for the first executed job of tier none (never
                                     // disputed, so it is charged later): its hold is released
};

struct sim_report {
  std::uint64_t seed = 0;
  bool ok = true;
  std::string failure;               // the first broken invariant
  std::string trace;                 // verbose only
  std::uint64_t digest = 0;          // the same seed gives the same digest
  std::uint64_t steps = 0, deliveries = 0, commits = 0;
  int requests = 0, jobs = 0, settled = 0, failed = 0, expired = 0, refused = 0, blocks = 0;
  int crashes = 0, drains = 0, disputes = 0;
  // how often the interesting paths ran
  int duplicates = 0;                // job_insert outcomes `duplicate` (a request the core had forgotten)
  int lost_confirmations = 0, failed_commits = 0, applied_in_crash = 0;
  int queue_full = 0, not_registered = 0, stale_done = 0, requeued = 0, resent = 0, request_lookups = 0, reruns = 0;
  bool broke = false;                // a breakage option actually fired in this run
  time_us sim_us = 0;
};

class world {
public:
  explicit world(const sim_options& o) : opt_(o), rng_(o.seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL) {
    report_.seed = o.seed;
  }

  sim_report run() {
    setup();
    loop();
    if (!failed_)
      final_checks();
    report_.ok = !failed_;
    report_.sim_us = now_ - t0_;
    mix(store_.blocks.empty() ? 0 : std::hash<std::string>{}(store_.blocks.back().block_hash));
    mix(store_.applied);
    report_.digest = digest_;
    report_.broke = forged_ || store_.dropped_postings;
    report_.blocks = static_cast<int>(store_.blocks.size());
    for (const auto& [id, j] : store_.jobs) {
      ++report_.jobs;
      report_.settled += j.state == job_state::settled;
      report_.failed += j.state == job_state::failed;
      report_.expired += j.state == job_state::expired;
    }
    for (const auto& b : store_.blocks)
      for (const auto& it : b.items)
        report_.disputes += it.verdict == job_state::disputed;
    return std::move(report_);
  }

private:
  enum class core_id { execution, verification, settlement };
  static const char* core_name(core_id c) {
    return c == core_id::execution ? "execution" : c == core_id::verification ? "verification" : "settlement";
  }

  using inbound = std::variant<core::client_submit, core::client_query, core::node_hello, core::node_ready,
                               core::node_heartbeat, core::node_done, core::node_fail, core::node_gone,
                               core::node_verdict>;

  struct pending_record {
    core_id who;
    std::uint64_t step;
    core::record rec;
  };

  // ---------------------------------------------------------------- randomness, time, trace

  std::uint64_t rnd(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool chance(double p) { return p > 0 && static_cast<double>(rng_() >> 11) * 0x1.0p-53 < p; }
  time_us range(time_us lo, time_us hi) { return lo + static_cast<time_us>(rnd(static_cast<std::uint64_t>(hi - lo + 1))); }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[rnd(v.size())]; }
  static constexpr time_us ms(std::int64_t x) { return x * 1000; }

  void mix(std::uint64_t v) { digest_ = (digest_ ^ v) * 0x100000001B3ULL + 0x9E37; }

  void at(time_us t, std::function<void()> fn) { agenda_.emplace(std::pair{std::max(t, now_), seq_++}, std::move(fn)); }
  void after(time_us d, std::function<void()> fn) { at(now_ + d, std::move(fn)); }
  // A message between the coordinator's actors (store -> core, core -> core): a little later,
  // in order per channel, and lost with the process.
  void mailbox(const char* from, core_id to, std::function<void()> fn) {
    const std::string chan = std::string(from) + ">" + core_name(to);
    auto& last = chan_last_[chan];
    const time_us t = std::max(now_ + range(0, 400), last);
    last = t;
    coord_after(t - now_, std::move(fn));
  }
  // Dies with the coordinator incarnation that scheduled it.
  void coord_after(time_us d, std::function<void()> fn) {
    const auto e = epoch_;
    after(d, [this, e, fn = std::move(fn)] {
      if (up_ && epoch_ == e)
        fn();
    });
  }

  bool verbose() const { return opt_.verbose; }
  void trace(const std::string& line) {
    if (!opt_.verbose)
      return;
    char head[48];
    std::snprintf(head, sizeof head, "[%4" PRId64 ".%06" PRId64 "] ", (now_ - t0_) / 1000000, (now_ - t0_) % 1000000);
    report_.trace += head + line + "\n";
  }

  void fail(const std::string& why) {
    if (failed_)
      return;
    failed_ = true;
    char head[48];
    std::snprintf(head, sizeof head, "at t=%" PRId64 ".%06" PRId64 "s: ", (now_ - t0_) / 1000000, (now_ - t0_) % 1000000);
    report_.failure = head + why;
    trace("FAILED: " + why);
  }

  // ---------------------------------------------------------------- setup

  void setup() {
    now_ = t0_;
    models_ = {verify::sha256_hex("sim-model-a"), verify::sha256_hex("sim-model-b"), verify::sha256_hex("sim-model-c")};
    exec_cfg_.models = {{models_[0], {8, sim_classes}}, {models_[1], {12, sim_classes}}, {models_[2], {5, sim_classes}}};
    exec_cfg_.max_rows = 4;
    exec_cfg_.max_waiting = static_cast<std::size_t>(range(6, 40));
    exec_cfg_.max_client_waiting = static_cast<std::size_t>(range(3, 20));
    exec_cfg_.max_open = static_cast<std::size_t>(range(15, 200));
    exec_cfg_.max_attempts = static_cast<int>(range(2, 4));
    // A hostile profile: clients short of money that resend every few tens of ms over a network
    // that duplicates, and a slow reader: admission races with itself.
    hostile_ = chance(0.3);
    exec_cfg_.faucet = hostile_ || chance(0.3) ? range(100, 600) : range(800, 4000);
    exec_cfg_.default_deadline_ms = range(6000, 12000);
    exec_cfg_.heartbeat_ms = 200;
    exec_cfg_.assign_timeout_ms = range(800, 2000);
    exec_cfg_.max_credit = 8;
    const auto coord_key = key_from_seed(rng_(), rng_(), rng_(), rng_());
    exec_cfg_.coordinator_key = coord_key.public_key_hex;

    ver_cfg_.sample_rate = 0.2 + 0.1 * static_cast<double>(rnd(5));
    ver_cfg_.sampling_secret = "sim-secret-" + std::to_string(rng_());
    ver_cfg_.heartbeat_ms = exec_cfg_.heartbeat_ms;
    ver_cfg_.verify_timeout_ms = range(600, 1500);
    ver_cfg_.max_credit = 8;
    ver_cfg_.max_verifier_lies = 0; // liars keep verifying: every lie must be ruled on (unit tests cover the bar)
    ver_cfg_.max_pending = 10000;
    ver_cfg_.coordinator_key = coord_key.public_key_hex;

    set_cfg_.batch_size = static_cast<std::size_t>(range(1, 8));
    set_cfg_.batch_ms = range(20, 300);
    set_cfg_.fee_bps = static_cast<int>(pick(std::vector<std::int64_t>{0, 100, 500, 1000}));
    set_cfg_.key = key_from_seed(rng_(), rng_(), rng_(), rng_());

    // faults
    p_loss_ = pick(std::vector<double>{0, 0.005, 0.02, 0.05});
    p_dup_ = hostile_ ? pick(std::vector<double>{0.1, 0.3}) : pick(std::vector<double>{0, 0.01, 0.04, 0.1});
    slow_reader_ = hostile_ || chance(0.2);
    p_slow_msg_ = pick(std::vector<double>{0, 0.02, 0.1});
    reorder_ = chance(0.5);
    p_commit_fail_ = pick(std::vector<double>{0, 0.05, 0.15});
    p_commit_lost_ = pick(std::vector<double>{0, 0.05, 0.15});
    max_batch_ = static_cast<std::size_t>(range(1, 16));
    split_commits_ = chance(0.5);
    fault_end_ = t0_ + range(ms(6000), ms(16000));

    // peers
    const int n_clients = static_cast<int>(range(2, 4));
    const int total_jobs = static_cast<int>(range(20, 60));
    for (int c = 0; c < n_clients; ++c) {
      sim_client cl;
      cl.index = c;
      cl.id = "client-" + std::to_string(c);
      cl.window = static_cast<int>(range(1, 6));
      cl.resend_us = hostile_ || chance(0.3) ? range(ms(30), ms(150)) : range(ms(500), ms(1500));
      const int n = total_jobs / n_clients + (c < total_jobs % n_clients ? 1 : 0);
      for (int i = 0; i < n; ++i) {
        sim_request r;
        auto& q = r.req;
        q.client_id = cl.id;
        q.request_id = "r" + std::to_string(c) + "-" + std::to_string(i);
        q.model = models_[rnd(models_.size())];
        const int dim = exec_cfg_.models.at(q.model).input_dim;
        const int rows = static_cast<int>(range(1, exec_cfg_.max_rows));
        q.input.type = kernels::dtype::i8;
        q.input.shape = {rows, dim};
        q.input.data.resize(static_cast<std::size_t>(rows * dim));
        for (auto& b : q.input.data)
          b = static_cast<char>(rng_());
        q.tier = pick(std::vector<std::string>{"none", "sampled", "full"});
        q.max_price = chance(0.1) ? range(1, 15) : range(30, 200);
        q.deadline_ms = chance(0.05) ? range(1, 30) : chance(0.25) ? range(30, 2500) : chance(0.3) ? 0 : range(3000, 9000);
        cl.by_request[q.request_id] = cl.reqs.size();
        cl.reqs.push_back(std::move(r));
      }
      clients_.push_back(std::move(cl));
    }
    const int n_providers = static_cast<int>(range(2, 4));
    const int n_verifiers = static_cast<int>(range(1, 2));
    for (int i = 0; i < n_providers + n_verifiers; ++i) {
      sim_node n;
      n.index = i;
      n.provider = i < n_providers;
      n.name = (n.provider ? "prov-" : "verif-") + std::to_string(i);
      n.key = key_from_seed(rng_(), rng_(), rng_(), rng_());
      n.heartbeat_ms = exec_cfg_.heartbeat_ms;
      n.credit = static_cast<int>(range(1, 3));
      if (n.provider) {
        // Every model is served by provider 0; the others carry a random subset.
        for (const auto& m : models_)
          if (i == 0 || chance(0.6))
            n.models.push_back(m);
        if (n.models.empty())
          n.models.push_back(models_[0]);
        n.price = range(10, 60);
        n.p_slow = chance(0.4) ? 0.2 : 0;
        n.p_fail = chance(0.3) ? 0.1 : 0;
        n.p_cheat = chance(0.15) ? 0.3 : 0;
        n.p_forge = chance(0.15) ? 0.1 : 0;
      } else {
        n.models = models_;
        n.p_lie = chance(0.25) ? 0.2 : 0;
      }
      if (chance(0.4)) {
        n.die_at = range(t0_ + ms(500), fault_end_);
        n.dies_silently = chance(0.5);
      }
      nodes_.push_back(std::move(n));
    }

    // the coordinator
    start_coordinator(false);
    for (auto& n : nodes_) {
      const int i = n.index;
      after(range(0, ms(300)), [this, i] { node_connect(i, false); });
      if (n.die_at)
        at(n.die_at, [this, i] { node_die(i); });
    }
    for (auto& c : clients_) {
      const int i = c.index;
      after(range(ms(50), ms(1500)), [this, i] { client_pump(i); });
      after(c.resend_us, [this, i] { client_timer(i); });
    }
    const int crashes = static_cast<int>(pick(std::vector<std::int64_t>{0, 1, 1, 2, 3}));
    for (int k = 0; k < crashes; ++k)
      at(range(t0_ + ms(300), fault_end_ - ms(200)), [this] {
        if (!up_)
          return;
        if (chance(0.5))
          crash_in_next_commit_ = true; // in the middle of a commit, or just after it
        else
          crash(false);
      });
    if (chance(0.3))
      at(range(t0_ + ms(500), fault_end_ - ms(1000)), [this] { begin_drain(); });
    at(fault_end_, [this] { calm_down(); });
    hard_end_ = fault_end_ + ms(120000);
  }

  // ---------------------------------------------------------------- the loop

  void loop() {
    std::uint64_t budget = 2000000;
    while (!agenda_.empty() && !failed_ && !finished_) {
      auto node = agenda_.extract(agenda_.begin());
      now_ = node.key().first;
      if (now_ > hard_end_) {
        break;
      }
      node.mapped()();
      if (--budget == 0) {
        fail("more than 2,000,000 events: a livelock (a timer that never stops firing?)");
        break;
      }
    }
  }

  // ---------------------------------------------------------------- the coordinator

  void start_coordinator(bool recovering) {
    up_ = true;
    draining_ = false;
    const auto snap = store_.snapshot();
    exec_.emplace(core::execution_core::recover(exec_cfg_, snap, now_));
    ver_.emplace(core::verification_core::recover(ver_cfg_, snap, now_));
    set_.emplace(core::settlement_core::recover(set_cfg_, snap, now_));
    exec_jobs_.clear();
    ver_jobs_.clear();
    for (const auto& j : snap.open_jobs) {
      exec_jobs_[j.spec.id] = {j.spec.client_id, j.spec.max_price};
      if (j.state == job_state::executed)
        ver_jobs_.insert(j.spec.id);
    }
    trace(std::string(recovering ? "coordinator recovered" : "coordinator started") + ": " +
          std::to_string(snap.open_jobs.size()) + " open jobs, height " + std::to_string(snap.next_height));
    check_holds("after recover");
    for (const auto& j : snap.open_jobs) {
      auto v = exec_->job(j.spec.id);
      if (!v || v->state != j.state || v->durable != j.state || v->attempt != j.attempt)
        return fail("recovery: job " + std::to_string(j.spec.id) + " is stored " + core::state_name(j.state) +
                    " attempt " + std::to_string(j.attempt) + ", the recovered execution core has it " +
                    (v ? std::string(core::state_name(v->state)) + " attempt " + std::to_string(v->attempt)
                       : std::string("not at all")));
    }
    // The adapter's first act: each core's first step (its timers, what recovery owes).
    coord_after(0, [this] { exec_step(core::tick{}); });
    coord_after(0, [this] { ver_step(core::tick{}); });
    coord_after(0, [this] { set_step(core::tick{}); });
  }

  void crash(bool graceful) {
    ++report_.crashes;
    trace(graceful ? "coordinator drained: stopping" : "CRASH: the coordinator dies");
    if (graceful && exec_)
      for (auto& m : exec_->farewell())
        send_out(m, false);
    // A commit in progress is applied fully or not at all.
    if (commit_pending_ && chance(0.5)) {
      trace("  the commit in progress (" + std::to_string(inflight_n_) + " records) was applied");
      ++report_.applied_in_crash;
      for (std::size_t i = 0; i < inflight_n_ && i < store_queue_.size(); ++i)
        store_apply(store_queue_[i].rec);
    }
    ++epoch_;
    up_ = false;
    exec_.reset();
    ver_.reset();
    set_.reset();
    roles_.clear();
    welcomed_.clear();
    store_queue_.clear();
    store_busy_ = commit_pending_ = false;
    ticks_.clear();
    exec_jobs_.clear();
    draining_ = false;
    const auto down = range(ms(20), ms(800));
    after(down, [this] {
      start_coordinator(true);
      for (auto& c : clients_) {
        const int i = c.index;
        after(range(ms(1), ms(300)), [this, i] {
          auto& cl = clients_[static_cast<std::size_t>(i)];
          if (chance(0.5))
            client_new_identity(cl);
          client_resend_all(i);
        });
      }
    });
  }

  void begin_drain() {
    if (!up_ || calm_)
      return;
    ++report_.drains;
    draining_ = true;
    exec_step(core::drain{});
    const auto e = epoch_;
    after(ms(5000), [this, e] {
      if (up_ && epoch_ == e && draining_) {
        trace("drain did not finish in 5 s: killed");
        crash(false);
      }
    });
  }

  // The referee, as the coordinator's adapter runs it, on the sim's "model": both sim trace
  // layers hash the output, so a dispute always starts at layer 0, whose entering activation is
  // the job's input.
  core::referee_checked referee(const core::referee_task& t) {
    core::referee_checked out;
    out.job_id = t.job_id;
    if (t.how == core::referee_task::mode::one_layer && t.layer != 0) {
      fail("the referee was asked to re-run sim trace layer " + std::to_string(t.layer) + " from an activation");
      return out;
    }
    const auto truth = sim_output(t.model, t.entering);
    const auto layers = sim_layer_hashes(t.model, truth);
    core::referee_result r;
    if (t.how == core::referee_task::mode::whole_job) {
      r.trace_root = verify::merkle_root(layers);
    } else {
      r.layer_hash = layers.at(static_cast<std::size_t>(t.layer));
    }
    if (t.how == core::referee_task::mode::whole_job || static_cast<std::size_t>(t.layer) + 1 == layers.size())
      r.output_hash = verify::sha256_hex(truth.data);
    out.result = r;
    return out;
  }

  // ---- stepping the cores

  void exec_step(core::execution_event ev) {
    if (!up_)
      return;
    if (verbose())
      trace("execution <- " + describe(ev));
    auto fx = exec_->step(ev, now_);
    carry_out(core_id::execution, std::move(fx));
  }
  void ver_step(core::verification_event ev) {
    if (!up_)
      return;
    if (verbose())
      trace("verification <- " + describe(ev));
    auto fx = ver_->step(ev, now_);
    carry_out(core_id::verification, std::move(fx));
  }
  void set_step(core::settlement_event ev) {
    if (!up_)
      return;
    if (verbose())
      trace("settlement <- " + describe(ev));
    auto fx = set_->step(ev, now_);
    carry_out(core_id::settlement, std::move(fx));
  }

  // What the actor adapter does with one step's effects, in the order effects.hpp gives.
  void carry_out(core_id who, core::effects fx) {
    ++report_.steps;
    mix(static_cast<std::uint64_t>(now_));
    mix(static_cast<std::uint64_t>(who) * 1000003 + fx.records.size() * 101 + fx.messages.size() * 7 +
        fx.to_verification.size() + fx.to_settlement.size() * 3 + fx.to_execution.size() * 5);
    if (!fx.errors.empty()) {
      std::string all;
      for (const auto& e : fx.errors)
        all += (all.empty() ? "" : " | ") + e;
      fail(std::string("the ") + core_name(who) + " core reported an error: " + all);
      return;
    }
    if (verbose())
      for (const auto& n : fx.notes)
        trace(std::string("  note (") + core_name(who) + "): " + n);
    check_tell(who, fx);
    if (failed_)
      return;
    const auto step = ++step_no_;
    for (auto& r : fx.records) {
      if (who == core_id::execution)
        if (const auto* ins = std::get_if<core::job_insert>(&r))
          exec_jobs_[ins->spec.id] = {ins->spec.client_id, ins->spec.max_price};
      if (verbose())
        trace(std::string("  record (") + core_name(who) + "): " + describe(r));
      store_queue_.push_back({who, step, std::move(r)});
    }
    for (auto& m : fx.messages) {
      if (m.to == core::port::node && m.msg.command == proto::cmd::welcome)
        welcomed_.insert(m.identity);
      send_out(m, true);
    }
    for (auto& j : fx.to_verification) {
      if (opt_.break_forge_settled && !forged_ && j.tier == "none") { // never disputed: it is charged
        forged_ = true;
        core::settled_job forged;
        forged.job_id = j.job_id;
        forged.client_id = j.client_id;
        forged.provider_key = j.receipt.provider_key;
        forged.verdict = core::job_state::unsampled;
        trace("  BREAKAGE: a forged 'settled, charged 0' for job " + std::to_string(j.job_id));
        mailbox("forger", core_id::execution, [this, forged] { exec_step(core::jobs_settled{{forged}}); });
      }
      ver_jobs_.insert(j.job_id);
      mailbox("execution", core_id::verification, [this, j = std::move(j)] { ver_step(j); });
    }
    for (auto& j : fx.to_settlement)
      mailbox("verification", core_id::settlement, [this, j = std::move(j)] { set_step(j); });
    if (!fx.to_execution.empty())
      mailbox("settlement", core_id::execution, [this, js = std::move(fx.to_execution)] { exec_step(core::jobs_settled{js}); });
    for (auto& h : fx.admitted_verifiers)
      mailbox("execution", core_id::verification, [this, h = std::move(h)] { ver_step(h); });
    for (auto& l : fx.nodes_left)
      mailbox("verification", core_id::execution, [this, l = std::move(l)] { exec_step(l); });
    for (const auto& l : fx.lookups)
      coord_after(range(100, ms(2)), [this, l] { answer_lookup(l); });
    for (auto& t : fx.referee_tasks)
      coord_after(range(100, ms(2)), [this, t = std::move(t)] { ver_step(referee(t)); });
    for (const auto& l : fx.request_lookups)
      coord_after(slow_reader_ ? range(ms(5), ms(80)) : range(100, ms(2)), [this, l] { answer_request_lookup(l); });
    schedule_tick(who, fx.wake_at_us);
    if (who == core_id::settlement) {
      // The chain head it builds on is the store's (or one behind, with a block applied but
      // not yet confirmed).
      const auto h = set_->next_height();
      const auto n = static_cast<std::int64_t>(store_.blocks.size());
      if (h != n && h != n - 1)
        return fail("the settlement core builds on height " + std::to_string(h) + ", the store has " +
                    std::to_string(n) + " blocks");
      const std::string head = h == 0 ? std::string(64, '0') : store_.blocks[static_cast<std::size_t>(h - 1)].block_hash;
      if (set_->prev_hash() != head)
        return fail("the settlement core's prev_hash is not the hash of block " + std::to_string(h - 1));
      if (set_->stopped())
        return fail("the settlement core stopped (a block rejected for no item)");
    }
    if (who == core_id::execution) {
      check_holds("after a step");
      if (draining_ && exec_->drained()) {
        draining_ = false;
        const auto e = epoch_;
        // The process exits once what it has to tell is told: the store's queue drains first.
        after(range(ms(1), ms(50)), [this, e] {
          if (up_ && epoch_ == e)
            crash(true);
        });
      }
    }
    store_kick();
  }

  void schedule_tick(core_id who, time_us wake) {
    if (wake <= 0)
      return;
    const time_us t = std::max(wake, now_);
    auto& pending = ticks_[static_cast<int>(who)];
    if (!pending.insert(t).second)
      return;
    coord_after(t - now_, [this, who, t] {
      ticks_[static_cast<int>(who)].erase(t);
      auto& same = same_time_ticks_[static_cast<int>(who)];
      if (same.first == now_) {
        if (++same.second > 200) {
          fail(std::string("the ") + core_name(who) + " core keeps asking for a tick at the same instant");
          return;
        }
      } else {
        same = {now_, 0};
      }
      if (who == core_id::execution)
        exec_step(core::tick{});
      else if (who == core_id::verification)
        ver_step(core::tick{});
      else
        set_step(core::tick{});
    });
  }

  // ---- the store (one connection, group commit, faults)

  core::outcome store_apply(const core::record& r) {
    auto o = store_.apply(r);
    if (!store_.anomalies.empty())
      fail("the store saw what a correct core never writes: " + store_.anomalies.front());
    return o;
  }

  void store_kick() {
    if (!up_ || store_busy_ || store_queue_.empty() || failed_)
      return;
    const std::size_t n = std::min(store_queue_.size(), 1 + static_cast<std::size_t>(rnd(max_batch_)));
    store_busy_ = commit_pending_ = true;
    inflight_n_ = n;
    const time_us latency = chance(0.1) ? range(ms(5), ms(40)) : range(200, ms(3));
    coord_after(latency, [this, n] { commit_done(n); });
    if (crash_in_next_commit_ && !calm_) {
      crash_in_next_commit_ = false;
      coord_after(range(0, latency + 600), [this] { crash(false); });
    }
  }

  void commit_retry_later() {
    commit_pending_ = false;
    coord_after(range(ms(1), ms(30)), [this] {
      store_busy_ = false;
      store_kick();
    });
  }

  void commit_done(std::size_t n) {
    ++report_.commits;
    mix(n);
    if (!calm_ && chance(p_commit_fail_)) {
      trace("  commit of " + std::to_string(n) + " records failed (not applied); retried later");
      ++report_.failed_commits;
      commit_retry_later();
      return;
    }
    if (!calm_ && chance(p_commit_lost_)) {
      trace("  commit of " + std::to_string(n) + " records applied, confirmation lost; retried later");
      ++report_.lost_confirmations;
      for (std::size_t i = 0; i < n; ++i)
        store_apply(store_queue_[i].rec);
      commit_retry_later();
      return;
    }
    std::vector<pending_record> batch;
    std::vector<core::outcome> outcomes;
    for (std::size_t i = 0; i < n; ++i) {
      outcomes.push_back(store_apply(store_queue_.front().rec));
      report_.duplicates += outcomes.back().what == core::outcome::kind::duplicate;
      if (const auto* t = std::get_if<core::job_transition>(&store_queue_.front().rec))
        report_.requeued += t->to == job_state::queued;
      batch.push_back(std::move(store_queue_.front()));
      store_queue_.pop_front();
    }
    store_busy_ = commit_pending_ = false;
    trace("  commit of " + std::to_string(n) + " records confirmed");
    // Confirmations go back to the core that wrote each record, in record order: one event per
    // core, or one per original step.
    std::map<std::pair<int, std::uint64_t>, core::committed> groups;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const std::pair<int, std::uint64_t> key{static_cast<int>(batch[i].who), split_commits_ ? batch[i].step : 0};
      auto& g = groups[key];
      g.records.push_back(std::move(batch[i].rec));
      g.outcomes.push_back(std::move(outcomes[i]));
    }
    // Delivered in the order of each group's first record.
    std::vector<std::pair<std::uint64_t, std::pair<int, std::uint64_t>>> order;
    {
      std::map<std::pair<int, std::uint64_t>, std::uint64_t> first;
      for (const auto& p : batch) {
        const std::pair<int, std::uint64_t> key{static_cast<int>(p.who), split_commits_ ? p.step : 0};
        first.try_emplace(key, p.step);
      }
      for (const auto& [key, step] : first)
        order.push_back({step, key});
      std::sort(order.begin(), order.end());
    }
    for (const auto& [step, key] : order) {
      auto c = std::move(groups.at(key));
      const auto who = static_cast<core_id>(key.first);
      mailbox("store", who, [this, who, c = std::move(c)] {
        if (who == core_id::execution)
          exec_step(c);
        else if (who == core_id::verification)
          ver_step(c);
        else
          set_step(c);
      });
    }
    store_kick();
  }

  void answer_lookup(const core::job_lookup& l) {
    auto it = store_.jobs.find(l.job_id);
    proto::message m;
    if (it == store_.jobs.end()) {
      m = proto::make_error(make_error(errc::unknown_job, "no job " + std::to_string(l.job_id)), "", l.job_id);
    } else {
      proto::status_reply r;
      r.job_id = l.job_id;
      r.state = core::state_name(it->second.state);
      r.attempt = it->second.attempt;
      for (const auto& [seq, e] : store_.events[l.job_id])
        r.events.push_back({core::state_name(e.to), proto::bounded_text(e.detail), e.at_us});
      m = proto::make_status_reply(r);
    }
    send_out(core::outbound{core::port::client, l.identity, std::move(m)}, true);
  }

  // The reader: which stored job holds a (client, request id), if any, as committed now.
  void answer_request_lookup(const core::request_lookup& l) {
    core::request_found f;
    f.identity = l.identity;
    f.request_id = l.request_id;
    f.client_id = l.client_id;
    f.refusal = l.refusal;
    if (auto b = store_.by_request.find({l.client_id, l.request_id}); b != store_.by_request.end()) {
      const auto& j = store_.jobs.at(b->second);
      f.job = core::existing_job{j.spec.id, j.state, store_.result_of(j)};
    }
    ++report_.request_lookups;
    mailbox("reader", core_id::execution, [this, f = std::move(f)] { exec_step(f); });
  }

  // ---------------------------------------------------------------- persist before tell

  const sim_client* client_of_identity(const std::string& identity) const {
    auto it = client_identity_.find(identity);
    return it == client_identity_.end() ? nullptr : &clients_[static_cast<std::size_t>(it->second)];
  }
  const sim_node* node_of_identity(const std::string& identity) const {
    auto it = node_identity_.find(identity);
    return it == node_identity_.end() ? nullptr : &nodes_[static_cast<std::size_t>(it->second)];
  }

  void check_tell(core_id who, const core::effects& fx) {
    const std::string from = std::string("the ") + core_name(who) + " core ";
    for (const auto& o : fx.messages) {
      const auto& cmd = o.msg.command;
      if (o.to == core::port::client) {
        if (cmd == proto::cmd::ack) {
          auto a = proto::parse_ack(o.msg);
          if (!a)
            return fail(from + "sent an ACK that does not parse: " + a.err().reason);
          auto j = store_.jobs.find(a->job_id);
          if (j == store_.jobs.end())
            return fail(from + "sent ACK for job " + std::to_string(a->job_id) + " (request " + a->request_id +
                        ") before its job_insert was committed");
          if (j->second.spec.request_id != a->request_id)
            return fail(from + "sent ACK naming job " + std::to_string(a->job_id) + " for request " + a->request_id +
                        ", but that job is request " + j->second.spec.request_id);
        } else if (cmd == proto::cmd::result) {
          auto r = proto::parse_result(o.msg);
          if (!r)
            return fail(from + "sent a RESULT that does not parse: " + r.err().reason);
          auto s = store_.receipts.find({r->job_id, r->receipt.attempt});
          if (s == store_.receipts.end())
            return fail(from + "sent RESULT for job " + std::to_string(r->job_id) + " attempt " +
                        std::to_string(r->receipt.attempt) + " before its receipt was committed");
          if (verify::receipt_hash(s->second.result.receipt) != verify::receipt_hash(r->receipt) ||
              s->second.result.receipt.signature != r->receipt.signature)
            return fail(from + "sent RESULT for job " + std::to_string(r->job_id) +
                        " with a receipt that is not the stored one");
          auto j = store_.jobs.find(r->job_id);
          if (j == store_.jobs.end() || j->second.spec.request_id != r->request_id)
            return fail(from + "sent RESULT naming job " + std::to_string(r->job_id) + " for request " +
                        r->request_id + ", which is not that job's request");
        } else if (cmd == proto::cmd::error) {
          auto e = proto::parse_error(o.msg);
          if (!e)
            return fail(from + "sent an ERROR that does not parse: " + e.err().reason);
          if ((e->code == errc::expired || e->code == errc::failed) && e->job_id != 0) {
            auto j = store_.jobs.find(e->job_id);
            const auto want = e->code == errc::expired ? job_state::expired : job_state::failed;
            if (j == store_.jobs.end() || (j->second.state != want && j->second.state != job_state::cancelled))
              return fail(from + "sent ERROR " + e->code + " for job " + std::to_string(e->job_id) +
                          " while the store has it " +
                          (j == store_.jobs.end() ? std::string("missing") : core::state_name(j->second.state)));
          }
          if (!e->request_id.empty() && (e->code == errc::insufficient_funds || e->code == errc::unknown_model ||
                                         e->code == errc::bad_input || e->code == errc::duplicate_request)) {
            const auto* cl = client_of_identity(o.identity);
            if (cl) {
              auto b = store_.by_request.find({cl->id, e->request_id});
              if (b != store_.by_request.end())
                return fail(from + "refused request " + e->request_id + " of " + cl->id + " with " + e->code + " (" +
                            e->reason + "), but that request is stored as job " + std::to_string(b->second) + " (" +
                            core::state_name(store_.jobs.at(b->second).state) +
                            "): the client is told 'refused' for a job it is charged for");
            }
          }
        }
      } else {
        if (cmd == proto::cmd::job) {
          auto j = proto::parse_job(o.msg);
          if (!j)
            return fail(from + "sent a JOB that does not parse: " + j.err().reason);
          const store_event* found = nullptr;
          if (auto evs = store_.events.find(j->job_id); evs != store_.events.end())
            for (const auto& [seq, ev] : evs->second)
              if (ev.to == job_state::assigned && ev.attempt == j->attempt)
                found = &ev;
          if (!found)
            return fail(from + "sent JOB " + std::to_string(j->job_id) + " attempt " + std::to_string(j->attempt) +
                        " before its ASSIGNED transition was committed");
          const auto* n = node_of_identity(o.identity);
          if (n && found->provider_key != n->key.public_key_hex)
            return fail(from + "sent JOB " + std::to_string(j->job_id) + " attempt " + std::to_string(j->attempt) +
                        " to " + n->name + ", but the store assigned it to " + found->provider_key.substr(0, 12));
          if (found->price != j->price)
            return fail(from + "sent JOB " + std::to_string(j->job_id) + " with price " + std::to_string(j->price) +
                        ", the stored assignment says " + std::to_string(found->price));
          const auto& spec = store_.jobs.at(j->job_id).spec;
          if (j->price > spec.max_price)
            return fail(from + "assigned job " + std::to_string(j->job_id) + " at price " + std::to_string(j->price) +
                        " above its max_price " + std::to_string(spec.max_price));
        } else if (cmd == proto::cmd::verify) {
          auto v = proto::parse_verify(o.msg);
          if (!v)
            return fail(from + "sent a VERIFY that does not parse: " + v.err().reason);
          if (o.msg.header.contains("receipt"))
            return fail(from + "sent a VERIFY for job " + std::to_string(v->job_id) + " that is not blind");
          // The job's newest stored receipt is the one being checked.
          auto s = store_.receipts.lower_bound({v->job_id + 1, std::numeric_limits<std::int32_t>::min()});
          if (s == store_.receipts.begin() || (--s)->first.first != v->job_id)
            return fail(from + "sent VERIFY for job " + std::to_string(v->job_id) + " before its receipt was stored");
          const auto& stored = s->second.result.receipt;
          if (stored.model_hash != v->model || verify::sha256_hex(v->input.data) != stored.input_hash)
            return fail(from + "sent VERIFY for job " + std::to_string(v->job_id) + " with another model or input");
          const auto* n = node_of_identity(o.identity);
          if (n && n->key.public_key_hex == stored.provider_key)
            return fail(from + "asked provider " + n->name + " to verify its own job " + std::to_string(v->job_id));
        }
      }
    }
    for (const auto& j : fx.to_verification) {
      const auto* e = store_.event(j.job_id, j.seq);
      if (!e || e->to != job_state::executed || !store_.receipts.count({j.job_id, j.attempt}))
        return fail(from + "handed job " + std::to_string(j.job_id) + " (seq " + std::to_string(j.seq) +
                    ") to verification before its EXECUTED record was committed");
    }
    for (const auto& j : fx.to_settlement) {
      if (j.verdict == job_state::unsampled) {
        // Not stored before its block: it needs the EXECUTED record and a receipt that is not drawn.
        const auto* e = store_.event(j.job_id, j.seq - 1);
        auto r = store_.receipts.find({j.job_id, j.attempt});
        if (!e || e->to != job_state::executed || r == store_.receipts.end())
          return fail(from + "handed job " + std::to_string(j.job_id) + " to settlement UNSAMPLED before its "
                      "EXECUTED record was committed");
        if (verify::receipt_hash(r->second.result.receipt) != verify::receipt_hash(j.receipt))
          return fail(from + "handed job " + std::to_string(j.job_id) + " to settlement UNSAMPLED with a receipt "
                      "that is not the stored one");
        continue;
      }
      const auto* e = store_.event(j.job_id, j.seq);
      if (!e || e->to != j.verdict)
        return fail(from + "handed job " + std::to_string(j.job_id) + " (seq " + std::to_string(j.seq) +
                    ") to settlement before its " + core::state_name(j.verdict) + " record was committed");
    }
    for (const auto& j : fx.to_execution) {
      auto s = store_.jobs.find(j.job_id);
      if (s == store_.jobs.end() || s->second.state != job_state::settled)
        return fail(from + "told execution job " + std::to_string(j.job_id) + " is settled before its block was committed");
    }
  }

  // ---------------------------------------------------------------- holds

  // The execution core's held(client) is the max_price of each of the client's jobs in memory
  // whose end is not yet durable (a hold is released when FAILED/EXPIRED is committed, captured
  // when SETTLED is).
  void check_holds(const char* when) {
    if (!exec_ || failed_)
      return;
    std::map<std::string, micros> want;
    std::size_t waiting = 0;
    for (auto it = exec_jobs_.begin(); it != exec_jobs_.end();) {
      auto v = exec_->job(it->first);
      if (!v) {
        it = exec_jobs_.erase(it);
        continue;
      }
      if (!core::is_final(v->durable))
        want[it->second.first] += it->second.second;
      waiting += v->state == job_state::submitted || v->state == job_state::queued || v->state == job_state::assigned;
      // What it holds as durable is in the store.
      if (v->durable != job_state::submitted) {
        bool stored = false;
        if (auto evs = store_.events.find(it->first); evs != store_.events.end())
          for (const auto& [seq, e] : evs->second)
            stored = stored || e.to == v->durable; // (its attempt may have moved on in memory)
        if (!stored)
          return fail("the execution core holds job " + std::to_string(it->first) + " as durably " +
                      core::state_name(v->durable) + " " + when +
                      ", but the store has no such record");
      }
      ++it;
    }
    // Every job open in the store is held in memory (and so holds its max_price) until the
    // record of its end is committed.
    for (const auto& [id, j] : store_.jobs)
      if (!core::is_final(j.state) && !exec_->job(id))
        return fail("job " + std::to_string(id) + " is " + core::state_name(j.state) + " in the store " + when +
                    ", but the execution core no longer holds it (nor its max_price)");
    // The count that admission compares with max_waiting: a leak would refuse with queue_full forever.
    if (exec_->waiting() != waiting)
      return fail(std::string("the execution core counts ") + std::to_string(exec_->waiting()) + " waiting jobs " + when +
                  ", but " + std::to_string(waiting) + " of its jobs are SUBMITTED, QUEUED or ASSIGNED");
    for (const auto& c : clients_) {
      const micros held = exec_->held(c.id);
      if (held != want[c.id])
        return fail(std::string("held(") + c.id + ") is " + std::to_string(held) + " " + when +
                    ", but the max_price of its open jobs in memory sums to " + std::to_string(want[c.id]));
      if (held > exec_->balance(c.id))
        return fail(std::string("client ") + c.id + " holds " + std::to_string(held) + " with a balance of " +
                    std::to_string(exec_->balance(c.id)) + " " + when);
    }
  }

  // A node that says DISCONNECT on its current connection is lost at once: nothing stays
  // assigned to it (ASSIGNED -> QUEUED), nothing stays out for it to verify.
  void check_gone(const std::string& identity, bool verifier) {
    if (failed_ || !up_)
      return;
    auto k = identity_key_.find(identity);
    auto n = identity_node_.find(identity);
    // Only a connection this incarnation welcomed, and still the node's newest one.
    if (k == identity_key_.end() || n == identity_node_.end() || !welcomed_.count(identity) ||
        nodes_[static_cast<std::size_t>(n->second)].identity != identity)
      return;
    const std::string& key = k->second;
    if (!verifier) {
      for (const auto& [id, info] : exec_jobs_) {
        auto v = exec_->job(id);
        if (v && v->state == job_state::assigned && v->provider_key == key)
          return fail("provider " + nodes_[static_cast<std::size_t>(n->second)].name + " (" + key.substr(0, 12) +
                      ") said DISCONNECT, yet job " + std::to_string(id) + " attempt " + std::to_string(v->attempt) +
                      " is still ASSIGNED to it");
      }
    } else {
      for (const auto id : ver_jobs_)
        if (auto v = ver_->verifier_of(id); v && *v == key)
          return fail("verifier " + nodes_[static_cast<std::size_t>(n->second)].name +
                      " said DISCONNECT, yet job " + std::to_string(id) + " is still out to it");
    }
  }

  // ---------------------------------------------------------------- the network

  std::string chan_key(const std::string& a, const std::string& b) const { return a + "|" + b; }

  // How many copies arrive (0 = lost) and when each arrives.
  std::vector<time_us> arrivals(const std::string& chan) {
    std::vector<time_us> out;
    const bool faults = !calm_;
    if (faults && chance(p_loss_))
      return out;
    const int copies = faults && chance(p_dup_) ? 2 : 1;
    for (int i = 0; i < copies; ++i) {
      time_us d = range(50, ms(2));
      if (faults && chance(p_slow_msg_))
        d += range(ms(5), ms(300));
      time_us t = now_ + d;
      auto& last = chan_last_[chan];
      if (!(faults && reorder_))
        t = std::max(t, last); // FIFO, as on one TCP connection
      last = std::max(last, t);
      out.push_back(t);
    }
    return out;
  }

  // Coordinator -> peer. `guarded`: lost if the coordinator dies before it arrives.
  void send_out(const core::outbound& o, bool guarded) {
    const auto e = epoch_;
    for (time_us t : arrivals(chan_key("coord", o.identity))) {
      at(t, [this, o, e, guarded] {
        if (guarded && (epoch_ != e || !up_))
          return;
        ++report_.deliveries;
        if (o.to == core::port::client) {
          auto it = client_identity_.find(o.identity);
          if (it == client_identity_.end())
            return trace("  (lost: " + std::string(o.msg.command) + " to gone client identity " + o.identity + ")");
          client_receive(it->second, o.msg);
        } else {
          auto it = node_identity_.find(o.identity);
          if (it == node_identity_.end() || !nodes_[static_cast<std::size_t>(it->second)].alive)
            return trace("  (lost: " + std::string(o.msg.command) + " to gone node identity " + o.identity + ")");
          node_receive(it->second, o.msg);
        }
      });
    }
  }

  // Peer -> coordinator: lost when the coordinator is down or restarts before it arrives.
  void send_in(const std::string& identity, inbound m) {
    const auto e = epoch_;
    const bool was_up = up_;
    for (time_us t : arrivals(chan_key(identity, "coord"))) {
      at(t, [this, m, e, was_up] {
        if (!was_up || !up_ || epoch_ != e)
          return;
        ++report_.deliveries;
        mix(m.index());
        route(m);
      });
    }
  }

  // The gateway: which core an inbound message goes to. It remembers the role each identity
  // said HELLO with (and forgets it in a crash); an unknown identity goes to execution, which
  // answers not_registered.
  void route(const inbound& m) {
    std::visit(
        [this](const auto& ev) {
          using T = std::decay_t<decltype(ev)>;
          if constexpr (std::is_same_v<T, core::client_submit> || std::is_same_v<T, core::client_query> ||
                        std::is_same_v<T, core::node_done> || std::is_same_v<T, core::node_fail>) {
            exec_step(ev);
          } else if constexpr (std::is_same_v<T, core::node_verdict>) {
            ver_step(ev);
          } else if constexpr (std::is_same_v<T, core::node_hello>) {
            roles_[ev.identity] = ev.caps.role;
            exec_step(ev); // every HELLO: the execution core admits nodes, and hands verifiers on
          } else {
            auto r = roles_.find(ev.identity);
            const bool verifier = r != roles_.end() && r->second == "verifier";
            if (verifier)
              ver_step(ev);
            else
              exec_step(ev);
            if constexpr (std::is_same_v<T, core::node_gone>)
              check_gone(ev.identity, verifier);
          }
        },
        m);
  }

  // ---------------------------------------------------------------- clients

  void client_new_identity(sim_client& c) {
    client_identity_.erase(c.identity);
    c.identity = "cli-" + std::to_string(c.index) + "." + std::to_string(++c.gen);
    client_identity_[c.identity] = c.index;
  }

  void client_send(sim_client& c, sim_request& r) {
    if (c.identity.empty())
      client_new_identity(c);
    r.started = true;
    ++r.sends;
    report_.resent += r.sends > 1;
    trace("client " + c.id + " -> SUBMIT " + r.req.request_id + (r.sends > 1 ? " (again)" : ""));
    send_in(c.identity, core::client_submit{c.identity, r.req.client_id, r.req});
  }

  void client_pump(int i) {
    auto& c = clients_[static_cast<std::size_t>(i)];
    if (c.stop_new || c.next >= c.reqs.size() || c.outstanding() >= c.window)
      return;
    auto& r = c.reqs[c.next++];
    ++report_.requests;
    client_send(c, r);
    after(range(0, ms(200)), [this, i] { client_pump(i); });
  }

  void client_resend_all(int i) {
    auto& c = clients_[static_cast<std::size_t>(i)];
    for (std::size_t k = 0; k < c.next; ++k) {
      auto& r = c.reqs[k];
      if (r.started && !r.answered && !r.retry_pending)
        client_send(c, r);
    }
  }

  void client_timer(int i) {
    auto& c = clients_[static_cast<std::size_t>(i)];
    client_resend_all(i);
    // Now and then a STATUS for a job it knows (answered from the store or memory).
    if (chance(0.2)) {
      std::vector<std::int64_t> ids;
      for (std::size_t k = 0; k < c.next; ++k)
        if (c.reqs[k].job_id)
          ids.push_back(*c.reqs[k].job_id);
      if (!ids.empty() && !c.identity.empty())
        send_in(c.identity, core::client_query{c.identity, c.id, pick(ids)});
    }
    client_pump(i);
    after(c.resend_us, [this, i] { client_timer(i); });
  }

  void client_receive(int i, const proto::message& m) {
    auto& c = clients_[static_cast<std::size_t>(i)];
    auto find = [&](const std::string& request_id) -> sim_request* {
      auto it = c.by_request.find(request_id);
      if (it != c.by_request.end())
        return &c.reqs[it->second];
      // A re-run the coordinator made of one of this client's jobs: the same model and input.
      if (request_id.rfind(proto::rerun_prefix, 0) != 0)
        return nullptr;
      if (auto r = c.reruns.find(request_id); r != c.reruns.end())
        return &r->second;
      auto parent = store_.jobs.find(std::stoll(request_id.substr(std::string(proto::rerun_prefix).size())));
      if (parent == store_.jobs.end() || parent->second.spec.client_id != c.id)
        return nullptr;
      const auto& spec = parent->second.spec;
      sim_request r;
      r.req = {c.id, request_id, spec.model, spec.tier, spec.max_price, 0, spec.input};
      r.started = true;
      ++report_.reruns;
      return &c.reruns.emplace(request_id, std::move(r)).first->second;
    };
    if (m.command == proto::cmd::ack) {
      auto a = proto::parse_ack(m);
      auto* r = a ? find(a->request_id) : nullptr;
      if (!r)
        return fail("client " + c.id + " got an ACK for a request it never sent");
      trace("client " + c.id + " <- ACK " + a->request_id + " job " + std::to_string(a->job_id));
      if (r->job_id && *r->job_id != a->job_id)
        return fail("request " + a->request_id + " of " + c.id + " was ACKed as job " + std::to_string(*r->job_id) +
                    " and then as job " + std::to_string(a->job_id));
      r->job_id = a->job_id;
      if (r->answered && r->answer != "RESULT" && r->answer != errc::expired && r->answer != errc::failed) {
        // Refused once, admitted on a later copy of the same SUBMIT: the admission stands.
        r->answered = false;
        r->answer.clear();
      }
      return;
    }
    if (m.command == proto::cmd::result) {
      auto res = proto::parse_result(m);
      auto* r = res ? find(res->request_id) : nullptr;
      if (!r)
        return fail("client " + c.id + " got a RESULT for a request it never sent");
      trace("client " + c.id + " <- RESULT " + res->request_id + " job " + std::to_string(res->job_id));
      const auto& rc = res->receipt;
      const auto h = verify::receipt_hash(rc);
      if (r->result) {
        if (r->result->job_id != res->job_id || r->result_receipt_hash != h ||
            r->result->receipt.signature != rc.signature)
          return fail("request " + res->request_id + " of " + c.id + " got two different RESULTs (job " +
                      std::to_string(r->result->job_id) + " and job " + std::to_string(res->job_id) + ")");
        return;
      }
      if (r->answer == errc::expired || r->answer == errc::failed)
        return fail("request " + res->request_id + " of " + c.id + " got a RESULT after ERROR " + r->answer);
      if (r->job_id && *r->job_id != res->job_id)
        return fail("request " + res->request_id + " of " + c.id + " was ACKed as job " + std::to_string(*r->job_id) +
                    " but its RESULT is job " + std::to_string(res->job_id));
      if (rc.job_id != res->job_id || rc.input_hash != verify::sha256_hex(r->req.input.data) ||
          rc.model_hash != r->req.model || rc.output_hash != verify::sha256_hex(res->output.data) ||
          res->classes != sim_classes_of(res->output) || rc.price > r->req.max_price)
        return fail("request " + res->request_id + " of " + c.id + " got a RESULT whose receipt does not describe it");
      if (!verify::verify_receipt(rc))
        return fail("request " + res->request_id + " of " + c.id + " got a RESULT with a bad receipt signature");
      r->result = std::move(res.value());
      r->result_receipt_hash = h;
      r->job_id = r->result->job_id;
      r->answered = true;
      r->answer = "RESULT";
      after(range(0, ms(100)), [this, i] { client_pump(i); });
      return;
    }
    if (m.command == proto::cmd::error) {
      auto e = proto::parse_error(m);
      if (!e)
        return fail("client " + c.id + " got an ERROR that does not parse");
      if (e->request_id.empty())
        return trace("client " + c.id + " <- ERROR " + e->code + " (job " + std::to_string(e->job_id) + ")");
      auto* r = find(e->request_id);
      if (!r)
        return fail("client " + c.id + " got ERROR " + e->code + " for a request it never sent");
      trace("client " + c.id + " <- ERROR " + e->code + " " + e->request_id + ": " + e->reason);
      if (e->code == errc::queue_full || e->code == errc::unavailable || e->code == errc::internal) {
        report_.queue_full += e->code == errc::queue_full;
        if (!r->answered && !r->retry_pending) {
          r->retry_pending = true;
          const std::size_t k = c.by_request.at(e->request_id);
          after(range(ms(200), ms(1000)), [this, i, k] {
            auto& cl = clients_[static_cast<std::size_t>(i)];
            auto& rq = cl.reqs[k];
            rq.retry_pending = false;
            if (!rq.answered)
              client_send(cl, rq);
          });
        }
        return;
      }
      if (e->code == errc::expired || e->code == errc::failed) {
        if (r->result)
          return fail("request " + e->request_id + " of " + c.id + " got ERROR " + e->code + " after its RESULT");
        if (r->job_id && e->job_id && *r->job_id != e->job_id)
          return fail("request " + e->request_id + " of " + c.id + " was ACKed as job " + std::to_string(*r->job_id) +
                      " but ERROR " + e->code + " names job " + std::to_string(e->job_id));
        if (r->answered && r->answer != e->code && r->answer != errc::insufficient_funds)
          return fail("request " + e->request_id + " of " + c.id + " got ERROR " + r->answer + " and then " + e->code);
        r->answered = true;
        r->answer = e->code;
        after(range(0, ms(100)), [this, i] { client_pump(i); });
        return;
      }
      if (e->code == errc::insufficient_funds) {
        if (!r->answered) {
          r->answered = true;
          r->answer = e->code;
          after(range(0, ms(100)), [this, i] { client_pump(i); });
        }
        return;
      }
      return fail("request " + e->request_id + " of " + c.id + " (a valid SUBMIT) got ERROR " + e->code + ": " +
                  e->reason);
    }
    if (m.command == proto::cmd::notice) {
      auto n = proto::parse_notice(m);
      if (!n)
        return fail("client " + c.id + " got a NOTICE that does not parse");
      auto* r = find(n->request_id);
      if (!r)
        return fail("client " + c.id + " got a NOTICE for a request it never sent");
      trace("client " + c.id + " <- NOTICE " + n->request_id + " (disputed)");
      // Told only of a result that really was wrong, never charged for it.
      if (r->result && r->result->output.data == sim_output(r->req.model, r->req.input).data)
        return fail("request " + n->request_id + " of " + c.id + " got a NOTICE for an honest RESULT");
      if (n->charged != 0)
        return fail("request " + n->request_id + " of " + c.id + " was charged " + std::to_string(n->charged) +
                    " for a disputed job");
      return;
    }
    if (m.command == "STATUS") {
      auto s = proto::parse_status_reply(m);
      if (!s || !core::parse_state(s->state))
        return fail("client " + c.id + " got a STATUS reply that does not parse or names no state");
      return;
    }
    fail("client " + c.id + " got an unexpected " + m.command);
  }

  // ---------------------------------------------------------------- providers and verifiers

  void node_connect(int i, bool new_key) {
    auto& n = nodes_[static_cast<std::size_t>(i)];
    if (!n.alive)
      return;
    if (new_key)
      n.key = key_from_seed(rng_(), rng_(), rng_(), rng_());
    node_identity_.erase(n.identity);
    n.identity = n.name + "." + std::to_string(++n.gen);
    node_identity_[n.identity] = i;
    identity_node_[n.identity] = i;
    identity_key_[n.identity] = n.key.public_key_hex;
    const auto session = ++n.session;
    n.welcomed = false;
    n.last_heard = now_;
    trace(n.name + " -> HELLO as " + n.identity);
    send_in(n.identity, core::node_hello{n.identity, n.caps(now_)});
    after(ms(n.heartbeat_ms), [this, i, session] { node_timer(i, session); });
  }

  void node_reconnect_later(int i) {
    auto& n = nodes_[static_cast<std::size_t>(i)];
    ++n.session; // stops the old timer and drops the old session's work
    node_identity_.erase(n.identity);
    after(range(ms(50), ms(400)), [this, i] { node_connect(i, false); });
  }

  void node_timer(int i, std::uint64_t session) {
    auto& n = nodes_[static_cast<std::size_t>(i)];
    if (!n.alive || n.session != session)
      return;
    if (n.welcomed)
      send_in(n.identity, core::node_heartbeat{n.identity});
    if (now_ - n.last_heard > ms(n.heartbeat_ms) * proto::heartbeat_liveness) {
      trace(n.name + ": " + (n.welcomed ? "coordinator silent" : "no WELCOME") + "; reconnecting");
      return node_reconnect_later(i);
    }
    after(ms(n.heartbeat_ms), [this, i, session] { node_timer(i, session); });
  }

  void node_die(int i) {
    auto& n = nodes_[static_cast<std::size_t>(i)];
    if (!n.alive || calm_)
      return;
    trace(n.name + " dies" + (n.dies_silently ? " silently" : " (DISCONNECT)"));
    if (!n.dies_silently && n.welcomed)
      send_in(n.identity, core::node_gone{n.identity, "shutting down"});
    n.alive = false;
    ++n.session;
    ++n.life;
    node_identity_.erase(n.identity);
    if (chance(0.7))
      after(range(ms(300), ms(4000)), [this, i] { node_revive(i); });
  }

  void node_revive(int i) {
    auto& n = nodes_[static_cast<std::size_t>(i)];
    if (n.alive)
      return;
    n.alive = true;
    trace(n.name + " comes back");
    node_connect(i, chance(0.5));
  }

  void node_receive(int i, const proto::message& m) {
    auto& n = nodes_[static_cast<std::size_t>(i)];
    n.last_heard = now_;
    if (m.command == proto::cmd::welcome) {
      if (!proto::parse_welcome(m))
        return fail(n.name + " got a WELCOME that does not parse");
      if (n.welcomed)
        return; // a duplicate
      n.welcomed = true;
      trace(n.name + " <- WELCOME; READY " + std::to_string(n.credit));
      send_in(n.identity, core::node_ready{n.identity, n.credit});
      return;
    }
    if (m.command == proto::cmd::heartbeat)
      return;
    if (m.command == proto::cmd::error) {
      auto e = proto::parse_error(m);
      if (!e)
        return fail(n.name + " got an ERROR that does not parse");
      trace(n.name + " <- ERROR " + e->code + ": " + e->reason);
      report_.not_registered += e->code == errc::not_registered;
      report_.stale_done += e->code == errc::unknown_job;
      if (e->code == errc::not_registered || e->code == errc::bad_signature)
        node_reconnect_later(i);
      return;
    }
    if (m.command == proto::cmd::disconnect) {
      trace(n.name + " <- DISCONNECT");
      return node_reconnect_later(i);
    }
    if (m.command == proto::cmd::job) {
      auto o = proto::parse_job(m);
      if (!o)
        return fail(n.name + " got a JOB that does not parse: " + o.err().reason);
      if (!n.provider)
        return fail("verifier " + n.name + " got a JOB");
      if (std::find(n.models.begin(), n.models.end(), o->model) == n.models.end())
        return fail("provider " + n.name + " got JOB " + std::to_string(o->job_id) + " for a model it does not have");
      trace(n.name + " <- JOB " + std::to_string(o->job_id) + " attempt " + std::to_string(o->attempt));
      time_us delay = range(ms(1), ms(30));
      if (chance(n.p_slow))
        delay = range(exec_cfg_.assign_timeout_ms * 1000 * 6 / 5, exec_cfg_.assign_timeout_ms * 1000 * 2);
      const bool fails = chance(n.p_fail);
      const bool cheats = chance(n.p_cheat);
      const time_us started = now_;
      const auto life = n.life;
      after(delay, [this, i, life, o = std::move(o.value()), fails, cheats, started] {
        auto& nd = nodes_[static_cast<std::size_t>(i)];
        // Work outlives a reconnect (it goes out on the new connection once welcomed), not a death.
        if (!nd.alive || nd.life != life || !nd.welcomed)
          return;
        if (fails) {
          trace(nd.name + " -> FAIL " + std::to_string(o.job_id));
          return send_in(nd.identity, core::node_fail{nd.identity, {o.job_id, o.attempt, "internal", "simulated failure"}});
        }
        proto::job_done d;
        d.job_id = o.job_id;
        d.attempt = o.attempt;
        d.output = sim_output(o.model, o.input, cheats ? "cheat" : "");
        d.classes = sim_classes_of(d.output);
        auto& r = d.receipt;
        r.job_id = o.job_id;
        r.model_hash = o.model;
        r.input_hash = verify::sha256_hex(o.input.data);
        r.output_hash = verify::sha256_hex(d.output.data);
        d.layer_hashes = sim_layer_hashes(o.model, d.output);
        r.trace_root = verify::merkle_root(d.layer_hashes);
        r.price = o.price;
        r.attempt = o.attempt;
        r.started_at_us = started;
        r.finished_at_us = now_;
        verify::sign_receipt(r, nd.key);
        const bool forges = chance(nd.p_forge);
        if (forges) {
          // A receipt the coordinator must refuse (and run the job again).
          switch (rnd(4)) {
          case 0: r.price += 1; break;                        // the signature no longer covers it
          case 1: r.attempt += 1; verify::sign_receipt(r, nd.key); break;
          case 2: r.input_hash = verify::sha256_hex("other input"); verify::sign_receipt(r, nd.key); break;
          default: d.classes.assign(d.classes.size(), 0); d.classes.push_back(0); break;
          }
        }
        trace(nd.name + " -> DONE " + std::to_string(o.job_id) + (cheats ? " (cheating)" : "") +
              (forges ? " (forged receipt)" : ""));
        send_in(nd.identity, core::node_done{nd.identity, std::move(d)});
      });
      return;
    }
    if (m.command == proto::cmd::verify) {
      auto v = proto::parse_verify(m);
      if (!v)
        return fail(n.name + " got a VERIFY that does not parse: " + v.err().reason);
      if (n.provider)
        return fail("provider " + n.name + " got a VERIFY");
      trace(n.name + " <- VERIFY " + std::to_string(v->job_id));
      const bool lies = chance(n.p_lie);
      const auto life = n.life;
      after(range(ms(1), ms(40)), [this, i, life, v = std::move(v.value()), lies] {
        auto& nd = nodes_[static_cast<std::size_t>(i)];
        if (!nd.alive || nd.life != life || !nd.welcomed)
          return;
        // Blind: it never sees the receipt. A liar signs the run of another output.
        const auto out = sim_output(v.model, v.input, lies ? "lie" : "");
        verify::verdict d;
        d.job_id = v.job_id;
        d.model_hash = v.model;
        d.input_hash = verify::sha256_hex(v.input.data);
        d.output_hash = verify::sha256_hex(out.data);
        d.layer_hashes = sim_layer_hashes(v.model, out);
        d.trace_root = verify::merkle_root(d.layer_hashes);
        verify::sign_verdict(d, nd.key);
        proto::verdict_reply vr;
        vr.job_id = v.job_id;
        vr.verdict = std::move(d);
        trace(nd.name + " -> VERDICT " + std::to_string(v.job_id) + (lies ? " (lying)" : ""));
        send_in(nd.identity, core::node_verdict{nd.identity, std::move(vr)});
      });
      return;
    }
    fail(n.name + " got an unexpected " + m.command);
  }

  // ---------------------------------------------------------------- the calm phase

  void calm_down() {
    calm_ = true;
    trace("---- calm: no more faults; nodes reconnect, clients finish what they started");
    // A drain in progress ends as it would have (the process exits, or is killed after 5 s).
    for (auto& n : nodes_) {
      n.p_slow = 0;
      n.p_fail = 0;
      n.p_forge = 0;
      const int i = n.index;
      if (!n.alive) {
        n.alive = true;
        after(range(ms(1), ms(200)), [this, i] { node_connect(i, false); });
      } else {
        // A lossy network leaves credit out of step (a lost READY); a reconnect resets it.
        node_reconnect_later(i);
      }
    }
    for (auto& c : clients_) {
      c.stop_new = true;
      const int i = c.index;
      after(range(ms(1), ms(200)), [this, i] { client_resend_all(i); });
    }
    after(ms(500), [this] { quiescence_check(); });
  }

  bool quiet() const {
    if (!up_ || store_busy_ || !store_queue_.empty())
      return false;
    for (const auto& c : clients_)
      for (std::size_t k = 0; k < c.next; ++k)
        if (c.reqs[k].started && !c.reqs[k].answered)
          return false;
    for (const auto& [id, j] : store_.jobs)
      if (!core::is_final(j.state))
        return false;
    return exec_->open_jobs() == 0 && ver_->backlog() == 0 && ver_->judging() == 0 && set_->backlog() == 0;
  }

  void quiescence_check() {
    if (quiet()) {
      trace("---- quiet: checking the invariants");
      finished_ = true;
      return;
    }
    after(ms(500), [this] { quiescence_check(); });
  }

  // ---------------------------------------------------------------- the invariants at the end

  void final_checks() {
    if (!store_.anomalies.empty())
      return fail("the store saw what a correct core never writes: " + store_.anomalies.front());
    if (!finished_) {
      // Name what is stuck.
      for (const auto& c : clients_)
        for (std::size_t k = 0; k < c.next; ++k) {
          const auto& r = c.reqs[k];
          if (r.started && !r.answered) {
            std::string where = "never ACKed";
            if (r.job_id) {
              auto j = store_.jobs.find(*r.job_id);
              where = "job " + std::to_string(*r.job_id) + " is " +
                      (j == store_.jobs.end() ? std::string("not stored") : core::state_name(j->second.state));
            }
            return fail("liveness: request " + r.req.request_id + " of " + c.id +
                        " got no final answer 120 s into the calm phase (" + where + ")");
          }
        }
      for (const auto& [id, j] : store_.jobs)
        if (!core::is_final(j.state))
          return fail("liveness: job " + std::to_string(id) + " is still " + core::state_name(j.state) +
                      " 120 s into the calm phase");
      if (up_)
        return fail("liveness: the cores still hold work 120 s into the calm phase (execution open " +
                    std::to_string(exec_->open_jobs()) + ", verification backlog " + std::to_string(ver_->backlog()) +
                    " judging " + std::to_string(ver_->judging()) + ", settlement backlog " +
                    std::to_string(set_->backlog()) + ")");
      return fail("liveness: the coordinator is not up at the end");
    }

    // Every job reaches exactly one final state.
    for (const auto& [id, j] : store_.jobs) {
      if (!core::is_final(j.state))
        return fail("job " + std::to_string(id) + " ended " + core::state_name(j.state) + ", not a final state");
      int finals = 0;
      for (const auto& [seq, e] : store_.events[id])
        finals += core::is_final(e.to);
      if (finals != 1)
        return fail("job " + std::to_string(id) + " has " + std::to_string(finals) + " final events");
    }

    // The chain.
    std::map<std::int64_t, const core::settled_item*> settled_in_block;
    std::string prev(64, '0');
    micros total_postings = 0;
    std::map<std::string, micros> charged_of;
    for (std::size_t h = 0; h < store_.blocks.size(); ++h) {
      const auto& bc = store_.blocks[h];
      const auto& b = bc.block;
      const std::string at = "block " + std::to_string(h) + ": ";
      if (b.height != static_cast<std::int64_t>(h))
        return fail(at + "height " + std::to_string(b.height));
      if (b.prev_hash != prev)
        return fail(at + "prev_hash does not link to the block before");
      if (verify::block_hash(b) != bc.block_hash)
        return fail(at + "block_hash is not the hash of the block");
      if (!verify::verify_block(b) || b.signer_key != set_cfg_.key.public_key_hex)
        return fail(at + "signature does not verify with the coordinator's key");
      if (b.receipts != static_cast<std::int32_t>(bc.items.size()) || bc.items.empty())
        return fail(at + std::to_string(bc.items.size()) + " items, the block says " + std::to_string(b.receipts));
      std::vector<std::string> leaves;
      micros total = 0;
      for (const auto& item : bc.items) {
        const std::string it = at + "job " + std::to_string(item.job_id) + ": ";
        leaves.push_back(verify::receipt_hash(item.receipt));
        total += item.charged;
        if (!settled_in_block.emplace(item.job_id, &item).second)
          return fail(it + "settled twice (charged twice)");
        auto j = store_.jobs.find(item.job_id);
        if (j == store_.jobs.end() || j->second.state != job_state::settled)
          return fail(it + "settled in a block but not SETTLED in the store");
        auto r = store_.receipts.find({item.job_id, item.attempt});
        if (r == store_.receipts.end() ||
            verify::receipt_hash(r->second.result.receipt) != verify::receipt_hash(item.receipt))
          return fail(it + "the settled receipt is not the stored one");
        if (!r->second.verdict || *r->second.verdict != item.verdict)
          return fail(it + "the settled verdict is not the stored one");
        if (item.client_id != j->second.spec.client_id)
          return fail(it + "charged to the wrong client " + item.client_id);
        // The referee's word: a judged job is DISPUTED exactly when its receipt is wrong, whatever
        // a lying verifier said.
        if (item.verdict != job_state::unsampled) {
          const bool honest =
              item.receipt.output_hash == verify::sha256_hex(sim_output(item.receipt.model_hash, j->second.spec.input).data);
          if (honest != (item.verdict == job_state::verified))
            return fail(it + core::state_name(item.verdict) + " for " + (honest ? "an honest" : "a cheated") + " receipt");
        }
        const bool refunded = item.verdict == job_state::disputed;
        if (item.charged != (refunded ? 0 : item.receipt.price))
          return fail(it + "charged " + std::to_string(item.charged) + " for a receipt of price " +
                      std::to_string(item.receipt.price) + " (" + core::state_name(item.verdict) + ")");
        if (item.charged > j->second.spec.max_price)
          return fail(it + "charged " + std::to_string(item.charged) + " above max_price " +
                      std::to_string(j->second.spec.max_price));
        if (market::sum(item.postings) != 0)
          return fail(it + "postings sum to " + std::to_string(market::sum(item.postings)));
        micros client_side = 0;
        for (const auto& p : item.postings)
          if (p.account == market::client_account(item.client_id))
            client_side += p.amount;
        if (client_side != -item.charged)
          return fail(it + "postings take " + std::to_string(-client_side) + " from the client, it is charged " +
                      std::to_string(item.charged));
        charged_of[item.client_id] += item.charged;
      }
      if (verify::merkle_root(leaves) != b.batch_root)
        return fail(at + "batch_root is not the Merkle root of the receipts it settles");
      if (total != b.total_amount)
        return fail(at + "total_amount " + std::to_string(b.total_amount) + ", the items charge " + std::to_string(total));
      prev = bc.block_hash;
    }
    for (const auto& [id, j] : store_.jobs)
      if (j.state == job_state::settled && !settled_in_block.count(id))
        return fail("job " + std::to_string(id) + " is SETTLED but in no block");

    // Money.
    for (const auto& g : store_.groups) {
      if (market::sum(g.postings) != 0)
        return fail("postings group " + g.ref + " sums to " + std::to_string(market::sum(g.postings)));
      total_postings += market::sum(g.postings);
    }
    micros all = 0;
    for (const auto& [account, b] : store_.balances)
      all += b;
    if (all != 0 || total_postings != 0)
      return fail("the balances of all accounts sum to " + std::to_string(all) + ", not 0");
    for (const auto& c : clients_) {
      auto bal = store_.balances.find(market::client_account(c.id));
      const micros stored = bal == store_.balances.end() ? 0 : bal->second;
      auto f = store_.funded.find(c.id);
      const micros funded = f == store_.funded.end() ? 0 : f->second;
      if (stored != funded - charged_of[c.id])
        return fail("client " + c.id + " has " + std::to_string(stored) + " in the store; funded " +
                    std::to_string(funded) + " minus charged " + std::to_string(charged_of[c.id]) + " is " +
                    std::to_string(funded - charged_of[c.id]));
      if (exec_->held(c.id) != 0)
        return fail("client " + c.id + " still has " + std::to_string(exec_->held(c.id)) + " held at the end");
      if (exec_->balance(c.id) != stored)
        return fail("the execution core says client " + c.id + " has " + std::to_string(exec_->balance(c.id)) +
                    ", the store " + std::to_string(stored));
    }
    if (set_->set_aside() != 0)
      return fail("settlement set " + std::to_string(set_->set_aside()) + " jobs aside");

    // What each client was told.
    for (const auto& c : clients_)
      for (std::size_t k = 0; k < c.next; ++k) {
        const auto& r = c.reqs[k];
        const std::string rq = "request " + r.req.request_id + " of " + c.id + ": ";
        auto b = store_.by_request.find({c.id, r.req.request_id});
        if (r.job_id) {
          if (b == store_.by_request.end() || b->second != *r.job_id)
            return fail(rq + "ACKed as job " + std::to_string(*r.job_id) + ", which the store does not hold for it");
        }
        if (r.result) {
          auto s = settled_in_block.find(r.result->job_id);
          if (s == settled_in_block.end())
            return fail(rq + "has a RESULT but its job " + std::to_string(r.result->job_id) + " is not settled");
          if (verify::receipt_hash(s->second->receipt) != r.result_receipt_hash)
            return fail(rq + "the settled receipt is not the one in its RESULT");
        } else if (r.answer == errc::expired || r.answer == errc::failed) {
          if (b == store_.by_request.end())
            return fail(rq + "told " + r.answer + " but no job is stored for it");
          const auto st = store_.jobs.at(b->second).state;
          if (st == job_state::settled)
            return fail(rq + "told " + r.answer + " but its job " + std::to_string(b->second) + " settled");
        } else if (r.answer == errc::insufficient_funds) {
          ++report_.refused;
        }
      }
  }

  // ---------------------------------------------------------------- descriptions (verbose)

  static std::string describe(const core::record& r) {
    return std::visit(
        [](const auto& x) -> std::string {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, core::job_insert>)
            return "job_insert " + std::to_string(x.spec.id) + " " + x.spec.client_id + "/" + x.spec.request_id;
          else if constexpr (std::is_same_v<T, core::job_transition>)
            return "transition job " + std::to_string(x.job_id) + " seq " + std::to_string(x.seq) + " " +
                   core::state_name(x.from) + "->" + core::state_name(x.to) + " attempt " + std::to_string(x.attempt);
          else if constexpr (std::is_same_v<T, core::node_seen>)
            return "node_seen " + x.caps.name;
          else if constexpr (std::is_same_v<T, core::transfer>)
            return "transfer " + x.ref;
          else if constexpr (std::is_same_v<T, core::dispute_ruling>)
            return "ruling job " + std::to_string(x.job_id) + ": the " + x.loser + " lost";
          else if constexpr (std::is_same_v<T, core::admin_action>)
            return std::string("admin action ") + core::action_name(x.what) + " " + x.target;
          else {
            std::string s = "block " + std::to_string(x.block.height) + " with jobs";
            for (const auto& it : x.items)
              s += " " + std::to_string(it.job_id);
            return s;
          }
        },
        r);
  }

  template <class V>
  static std::string describe(const V& ev) {
    return std::visit(
        [](const auto& x) -> std::string {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, core::client_submit>)
            return "SUBMIT " + x.req.client_id + "/" + x.req.request_id + " from " + x.identity;
          else if constexpr (std::is_same_v<T, core::request_found>)
            return "request_found " + x.request_id + (x.job ? " job " + std::to_string(x.job->job_id) : " none");
          else if constexpr (std::is_same_v<T, core::client_query>)
            return "STATUS job " + std::to_string(x.job_id);
          else if constexpr (std::is_same_v<T, core::node_hello>)
            return "HELLO " + x.caps.role + " " + x.caps.name + " as " + x.identity;
          else if constexpr (std::is_same_v<T, core::node_ready>)
            return "READY " + std::to_string(x.credit) + " from " + x.identity;
          else if constexpr (std::is_same_v<T, core::node_heartbeat>)
            return "HEARTBEAT from " + x.identity;
          else if constexpr (std::is_same_v<T, core::node_done>)
            return "DONE job " + std::to_string(x.done.job_id) + " attempt " + std::to_string(x.done.attempt) +
                   " from " + x.identity;
          else if constexpr (std::is_same_v<T, core::node_fail>)
            return "FAIL job " + std::to_string(x.fail.job_id) + " from " + x.identity;
          else if constexpr (std::is_same_v<T, core::node_gone>)
            return "DISCONNECT from " + x.identity;
          else if constexpr (std::is_same_v<T, core::node_verdict>)
            return "VERDICT job " + std::to_string(x.verdict.job_id) + " from " + x.identity;
          else if constexpr (std::is_same_v<T, core::committed>) {
            std::string s = "committed";
            for (std::size_t i = 0; i < x.records.size(); ++i)
              s += std::string(" [") + describe(x.records[i]) + (i < x.outcomes.size() && x.outcomes[i].what != core::outcome::kind::ok ? (x.outcomes[i].what == core::outcome::kind::duplicate ? ": duplicate" : ": rejected") : "") + "]";
            return s;
          } else if constexpr (std::is_same_v<T, core::jobs_settled>) {
            std::string s = "settled";
            for (const auto& j : x.jobs)
              s += " " + std::to_string(j.job_id);
            return s;
          } else if constexpr (std::is_same_v<T, core::executed_job>)
            return "executed job " + std::to_string(x.job_id) + " (" + x.tier + ")";
          else if constexpr (std::is_same_v<T, core::judged_job>)
            return std::string("judged job ") + std::to_string(x.job_id) + " " + core::state_name(x.verdict);
          else if constexpr (std::is_same_v<T, core::node_activation>)
            return "ACTIVATION job " + std::to_string(x.reply.job_id) + " from " + x.identity;
          else if constexpr (std::is_same_v<T, core::referee_checked>)
            return "referee checked job " + std::to_string(x.job_id) + (x.result ? "" : ": " + x.problem);
          else if constexpr (std::is_same_v<T, core::tick>)
            return "tick";
          else
            return "drain";
        },
        ev);
  }

  // ---------------------------------------------------------------- state

  sim_options opt_;
  sim_report report_;
  std::mt19937_64 rng_;
  static constexpr time_us t0_ = 1'700'000'000'000'000;
  time_us now_ = t0_;
  std::map<std::pair<time_us, std::uint64_t>, std::function<void()>> agenda_;
  std::uint64_t seq_ = 0;
  std::uint64_t digest_ = 0xCBF29CE484222325ULL;
  bool failed_ = false;
  bool finished_ = false;
  bool calm_ = false;
  time_us fault_end_ = 0;
  time_us hard_end_ = 0;

  // configuration
  std::vector<std::string> models_;
  core::execution_config exec_cfg_;
  core::verification_config ver_cfg_;
  core::settlement_config set_cfg_;
  double p_loss_ = 0, p_dup_ = 0, p_slow_msg_ = 0, p_commit_fail_ = 0, p_commit_lost_ = 0;
  bool reorder_ = false;
  bool split_commits_ = false;
  bool slow_reader_ = false;         // request lookups take 5-80 ms
  bool hostile_ = false;
  std::size_t max_batch_ = 8;

  // the coordinator process
  bool up_ = false;
  std::uint64_t epoch_ = 0;
  bool draining_ = false;
  bool forged_ = false;
  bool crash_in_next_commit_ = false;
  std::optional<core::execution_core> exec_;
  std::optional<core::verification_core> ver_;
  std::optional<core::settlement_core> set_;
  std::map<std::string, std::string> roles_;
  std::set<std::string> welcomed_;                   // node identities with a session in this incarnation
  std::deque<pending_record> store_queue_;
  bool store_busy_ = false;
  bool commit_pending_ = false;
  std::size_t inflight_n_ = 0;
  std::uint64_t step_no_ = 0;
  std::map<int, std::set<time_us>> ticks_;
  std::map<int, std::pair<time_us, int>> same_time_ticks_;
  std::map<std::int64_t, std::pair<std::string, micros>> exec_jobs_; // job -> (client, max_price), this incarnation

  // the world outside
  sim_store store_;
  std::vector<sim_client> clients_;
  std::vector<sim_node> nodes_;
  std::map<std::string, int> client_identity_;
  std::map<std::string, int> node_identity_;
  std::map<std::string, int> identity_node_;         // every identity ever used, for the checks
  std::map<std::string, std::string> identity_key_;  // the key each identity said HELLO with
  std::set<std::int64_t> ver_jobs_;                  // jobs handed to verification, this incarnation
  std::map<std::string, time_us> chan_last_;

public:
  // set after construction by run_simulation
  void set_store_breakage(bool drop) { store_.drop_one_postings_group = drop; }
};

inline sim_report run_simulation(const sim_options& o) {
  world w(o);
  w.set_store_breakage(o.break_drop_postings);
  return w.run();
}

} // namespace haca::sim
