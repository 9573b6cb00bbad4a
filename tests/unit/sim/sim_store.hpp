#pragma once
// The simulated Postgres store: an in-memory model with exactly the idempotency rules of
// core/records.hpp (job by id and by client + request id, transition by job + seq, receipt by
// job + attempt, funding by ref, block by height + hash). It also keeps what the checker needs
// (every event, every postings group) and notes anything a correct core would never make the
// store see (`anomalies`).
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/records.hpp"
#include "verify/receipt.hpp"

namespace haca::sim {

using core::job_state;
using core::micros;
using core::time_us;

struct store_job {
  core::job_spec spec;
  job_state state = job_state::queued;
  std::int32_t attempt = 0;
  std::int32_t seq = 0;
  std::string provider_key;
  micros price = 0;
  time_us updated_us = 0;
};

struct store_event {
  std::int32_t seq = 0;
  job_state from = job_state::submitted;
  job_state to = job_state::queued;
  std::int32_t attempt = 0;
  std::string provider_key;
  micros price = 0;
  std::string detail;
  time_us at_us = 0;
};

struct store_receipt {
  core::execution_result result;
  std::optional<job_state> verdict;
  std::optional<std::int64_t> block_height;
};

struct postings_group {
  std::string ref;            // "faucet:<client>" or "block:<height>:job:<id>"
  std::int64_t job_id = 0;    // 0 for a transfer of no job
  std::vector<market::posting> postings;
};

class sim_store {
public:
  // Breakage for the test that proves the checker catches it: a store that loses the postings
  // of the first settled item that charges something.
  bool drop_one_postings_group = false;
  bool dropped_postings = false;

  std::map<std::int64_t, store_job> jobs;
  std::map<std::pair<std::string, std::string>, std::int64_t> by_request;
  std::map<std::int64_t, std::map<std::int32_t, store_event>> events; // job -> seq -> event
  std::map<std::pair<std::int64_t, std::int32_t>, store_receipt> receipts;
  std::map<std::string, micros> balances; // account -> balance
  std::vector<postings_group> groups;
  std::set<std::string> funding_refs;
  std::map<std::string, micros> funded; // client -> total granted
  std::vector<core::block_commit> blocks;
  std::map<std::string, proto::capabilities> nodes;
  std::vector<std::string> anomalies;
  std::uint64_t applied = 0;

  core::outcome apply(const core::record& r) {
    ++applied;
    return std::visit([&](const auto& x) { return on(x); }, r);
  }

  std::optional<core::execution_result> result_of(const store_job& j) const {
    auto it = receipts.find({j.spec.id, j.attempt});
    if (it == receipts.end())
      return std::nullopt;
    return it->second.result;
  }

  const store_event* event(std::int64_t job_id, std::int32_t seq) const {
    auto j = events.find(job_id);
    if (j == events.end())
      return nullptr;
    auto e = j->second.find(seq);
    return e == j->second.end() ? nullptr : &e->second;
  }

  // Everything the cores need after a restart: what is committed, nothing else.
  core::snapshot snapshot() const {
    core::snapshot s;
    std::int64_t max_id = 0;
    for (const auto& [id, j] : jobs) {
      max_id = std::max(max_id, id);
      if (core::is_final(j.state))
        continue;
      core::stored_job sj;
      sj.spec = j.spec;
      sj.state = j.state;
      sj.attempt = j.attempt;
      sj.seq = j.seq;
      sj.provider_key = j.provider_key;
      sj.price = j.price;
      sj.updated_us = j.updated_us;
      sj.result = result_of(j);
      s.open_jobs.push_back(std::move(sj));
    }
    for (const auto& [account, balance] : balances)
      if (account.rfind("client:", 0) == 0)
        s.client_balances[account.substr(7)] = balance;
      else if (account.rfind("provider:", 0) == 0)
        s.node_balances[account.substr(9)] = balance;
      else if (account.rfind("stake:", 0) == 0)
        s.node_stakes[account.substr(6)] = balance;
    for (const auto& [client, amount] : funded)
      s.funded.insert(client);
    s.next_job_id = max_id + 1;
    s.next_height = static_cast<std::int64_t>(blocks.size());
    if (!blocks.empty())
      s.prev_hash = blocks.back().block_hash;
    return s;
  }

private:
  static core::outcome ok() { return {}; }
  static core::outcome rejected(std::string why) {
    core::outcome o;
    o.what = core::outcome::kind::rejected;
    o.reason = std::move(why);
    return o;
  }

  core::outcome on(const core::job_insert& ins) {
    const auto& s = ins.spec;
    if (auto it = jobs.find(s.id); it != jobs.end()) {
      if (it->second.spec.client_id != s.client_id || it->second.spec.request_id != s.request_id)
        anomalies.push_back("job_insert of job " + std::to_string(s.id) + " (" + s.client_id + "/" + s.request_id +
                            ") reuses the id of stored job " + it->second.spec.client_id + "/" +
                            it->second.spec.request_id);
      return ok(); // the same job again: a retry after a lost confirmation
    }
    if (auto it = by_request.find({s.client_id, s.request_id}); it != by_request.end()) {
      const auto& j = jobs.at(it->second);
      core::outcome o;
      o.what = core::outcome::kind::duplicate;
      o.existing = core::existing_job{j.spec.id, j.state, result_of(j)};
      return o;
    }
    if (s.id <= 0)
      anomalies.push_back("job_insert with id " + std::to_string(s.id));
    store_job j;
    j.spec = s;
    j.state = job_state::queued;
    j.updated_us = s.submitted_us;
    jobs.emplace(s.id, std::move(j));
    by_request[{s.client_id, s.request_id}] = s.id;
    events[s.id][0] = store_event{0, job_state::submitted, job_state::queued, 0, "", 0, "inserted", s.submitted_us};
    return ok();
  }

  // One event row; the job row when seq is newer. Returns false when (job, seq) was stored.
  void apply_event(store_job& j, const store_event& e) {
    auto& evs = events[j.spec.id];
    if (auto it = evs.find(e.seq); it != evs.end()) {
      const auto& old = it->second;
      if (old.to != e.to || old.attempt != e.attempt)
        anomalies.push_back("job " + std::to_string(j.spec.id) + " seq " + std::to_string(e.seq) + ": stored " +
                            core::state_name(old.from) + "->" + core::state_name(old.to) + " (attempt " +
                            std::to_string(old.attempt) + "), then a different " + core::state_name(e.from) + "->" +
                            core::state_name(e.to) + " (attempt " + std::to_string(e.attempt) +
                            ") with the same seq was ignored");
      return;
    }
    evs[e.seq] = e;
    if (e.seq <= j.seq) {
      anomalies.push_back("job " + std::to_string(j.spec.id) + ": transition seq " + std::to_string(e.seq) + " " +
                          core::state_name(e.from) + "->" + core::state_name(e.to) + " arrived after seq " +
                          std::to_string(j.seq) + " (" + core::state_name(j.state) + ")");
      return;
    }
    // A SUBMITTED job is stored as QUEUED: `from` may name either.
    const bool from_ok = e.from == j.state || (e.from == job_state::submitted && j.state == job_state::queued);
    if (!from_ok || !core::legal(j.state, e.to))
      anomalies.push_back("job " + std::to_string(j.spec.id) + " seq " + std::to_string(e.seq) + ": stored state is " +
                          core::state_name(j.state) + " (seq " + std::to_string(j.seq) + "), the transition says " +
                          core::state_name(e.from) + "->" + core::state_name(e.to));
    j.state = e.to;
    j.attempt = e.attempt;
    j.seq = e.seq;
    if (!e.provider_key.empty())
      j.provider_key = e.provider_key;
    if (e.to == job_state::assigned)
      j.price = e.price;
    j.updated_us = e.at_us;
  }

  core::outcome on(const core::job_transition& t) {
    auto it = jobs.find(t.job_id);
    if (it == jobs.end())
      return ok(); // a job whose insert was a duplicate (or never stored): nothing to change
    auto& j = it->second;
    const bool fresh = event(t.job_id, t.seq) == nullptr;
    apply_event(j, store_event{t.seq, t.from, t.to, t.attempt, t.provider_key, t.price, t.detail, t.at_us});
    if (t.result) {
      auto [r, inserted] = receipts.try_emplace({t.job_id, t.attempt}, store_receipt{*t.result, {}, {}});
      if (!inserted && verify::receipt_hash(r->second.result.receipt) != verify::receipt_hash(t.result->receipt))
        anomalies.push_back("job " + std::to_string(t.job_id) + " attempt " + std::to_string(t.attempt) +
                            ": a second, different receipt");
    }
    if (fresh && (t.to == job_state::verified || t.to == job_state::unsampled || t.to == job_state::disputed)) {
      auto r = receipts.find({t.job_id, t.attempt});
      if (r == receipts.end())
        anomalies.push_back("job " + std::to_string(t.job_id) + ": verdict " + core::state_name(t.to) +
                            " for attempt " + std::to_string(t.attempt) + " which has no stored receipt");
      else
        r->second.verdict = t.to;
    }
    return ok();
  }

  core::outcome on(const core::node_seen& n) {
    nodes[n.caps.public_key] = n.caps;
    return ok();
  }

  core::outcome on(const core::dispute_ruling&) { return ok(); } // evidence only: no state the checks read
  core::outcome on(const core::admin_action&) { return ok(); }   // the simulation's operators take none

  core::outcome on(const core::transfer& t) {
    if (!funding_refs.insert(t.ref).second)
      return ok();
    for (const auto& p : t.postings) {
      balances[p.account] += p.amount;
      if (p.account.rfind("client:", 0) == 0)
        funded[p.account.substr(7)] += p.amount; // money into a client outside a block
    }
    groups.push_back({t.ref, t.job_id, t.postings});
    return ok();
  }

  core::outcome on(const core::block_commit& bc) {
    const auto h = bc.block.height;
    if (h < 0)
      return rejected("negative height");
    if (static_cast<std::size_t>(h) < blocks.size()) {
      if (blocks[static_cast<std::size_t>(h)].block_hash == bc.block_hash)
        return ok(); // this block, stored before
      return rejected("fork: height " + std::to_string(h) + " holds block " +
                      blocks[static_cast<std::size_t>(h)].block_hash.substr(0, 16) + ", not " +
                      bc.block_hash.substr(0, 16));
    }
    if (static_cast<std::size_t>(h) > blocks.size()) {
      anomalies.push_back("block " + std::to_string(h) + " arrived while the chain has " +
                          std::to_string(blocks.size()) + " blocks");
      return rejected("gap: the chain has " + std::to_string(blocks.size()) + " blocks");
    }
    const std::string head = blocks.empty() ? std::string(64, '0') : blocks.back().block_hash;
    if (bc.block.prev_hash != head) {
      anomalies.push_back("block " + std::to_string(h) + " links to " + bc.block.prev_hash.substr(0, 16) +
                          ", the head is " + head.substr(0, 16));
      return rejected("prev_hash is not the head");
    }
    core::outcome bad = rejected("");
    std::set<std::pair<std::int64_t, std::int32_t>> seen;
    for (const auto& item : bc.items) {
      auto r = receipts.find({item.job_id, item.attempt});
      if (r == receipts.end() || r->second.block_height || !seen.insert({item.job_id, item.attempt}).second)
        bad.bad_jobs.push_back(item.job_id);
    }
    if (!bad.bad_jobs.empty()) {
      bad.reason = std::to_string(bad.bad_jobs.size()) + " items have no stored receipt or are settled already";
      return bad;
    }
    for (const auto& item : bc.items) {
      receipts.at({item.job_id, item.attempt}).block_height = h;
      if (drop_one_postings_group && !dropped_postings && item.charged > 0) {
        dropped_postings = true; // the breakage: these postings are lost
      } else {
        for (const auto& p : item.postings)
          balances[p.account] += p.amount;
        groups.push_back({"block:" + std::to_string(h) + ":job:" + std::to_string(item.job_id), item.job_id,
                          item.postings});
      }
      if (auto j = jobs.find(item.job_id); j != jobs.end()) {
        // An unsampled verdict is stored by the block that settles it (once).
        if (item.verdict == job_state::unsampled && !event(item.job_id, item.seq - 1)) {
          apply_event(j->second, store_event{item.seq - 1, job_state::executed, job_state::unsampled, item.attempt,
                                             "", 0, "not drawn", bc.block.created_at_us});
          receipts.at({item.job_id, item.attempt}).verdict = job_state::unsampled;
        }
        apply_event(j->second, store_event{item.seq, item.verdict, job_state::settled, item.attempt, "", 0,
                                           "block " + std::to_string(h), bc.block.created_at_us});
      } else
        anomalies.push_back("block " + std::to_string(h) + " settles job " + std::to_string(item.job_id) +
                            " which is not stored");
    }
    blocks.push_back(bc);
    return ok();
  }
};

} // namespace haca::sim
