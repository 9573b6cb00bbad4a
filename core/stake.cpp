#include "core/stake.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace haca::core {
namespace {

transfer move(const std::string& from, const std::string& to, micros amount, const std::string& memo,
              std::string ref, std::int64_t job_id, time_us now) {
  return transfer{{{from, -amount, memo}, {to, amount, memo}}, std::move(ref), job_id, now};
}

} // namespace

void stake_book::restore(const snapshot& s, time_us now) {
  for (const auto& [key, balance] : s.node_balances)
    nodes_[key].balance = balance;
  for (const auto& [key, staked] : s.node_stakes)
    nodes_[key].staked = staked;
  for (auto& [key, n] : nodes_)
    n.left_at = now; // nobody is connected after a restart: each stake cools down unless its node returns
}

stake_book::admission stake_book::admit(const std::string& key, time_us now) {
  auto& n = nodes_[key];
  if (n.staked >= cfg_.min_stake)
    return {};
  const micros missing = cfg_.min_stake - n.staked;
  if (n.balance < missing) {
    // An account nobody funded is not kept in memory: a flood of HELLOs from new keys stays small.
    const auto refusal = make_error(
        errc::insufficient_funds,
        fmt::format("a node needs {} micro-units at stake; this key has {} at stake and {} in its account {} (ask the "
                    "operator for a DEPOSIT to the node)",
                    cfg_.min_stake, n.staked, n.balance, market::provider_account(key)));
    if (n.balance == 0 && n.staked == 0 && n.roles.empty() && n.holding.empty())
      nodes_.erase(key);
    return {std::nullopt, refusal};
  }
  auto t = move(market::provider_account(key), market::stake_account(key), missing, "stake",
                fmt::format("stake:{}:{}", key, now), 0, now);
  n.holding = t.ref;
  return {std::move(t), std::nullopt};
}

bool stake_book::holding(const std::string& key) const {
  auto it = nodes_.find(key);
  return it != nodes_.end() && !it->second.holding.empty();
}

void stake_book::hold_done(const std::string& key, const std::string& ref) {
  if (auto it = nodes_.find(key); it != nodes_.end() && it->second.holding == ref)
    it->second.holding.clear();
}

void stake_book::joined(const std::string& key, const std::string& role) { nodes_[key].roles.insert(role); }

void stake_book::left(const std::string& key, const std::string& role, time_us now) {
  auto it = nodes_.find(key);
  if (it == nodes_.end() || !it->second.roles.erase(role))
    return;
  auto& n = it->second;
  if (!n.roles.empty())
    return;
  n.left_at = now;
  if (n.balance == 0 && n.staked == 0 && n.holding.empty())
    nodes_.erase(it); // nothing to keep: HELLOs from ever new keys leave no trace in memory
}

bool stake_book::present(const std::string& key) const {
  auto it = nodes_.find(key);
  return it != nodes_.end() && !it->second.roles.empty();
}

std::vector<transfer> stake_book::releases_due(time_us now) {
  std::vector<transfer> out;
  const time_us cooldown = cfg_.cooldown_ms * 1000;
  for (const auto& [key, n] : nodes_)
    if (n.staked > 0 && n.roles.empty() && n.holding.empty() && n.left_at + cooldown <= now)
      out.push_back(move(market::stake_account(key), market::provider_account(key), n.staked, "unstake",
                         fmt::format("unstake:{}:{}", key, now), 0, now));
  return out;
}

time_us stake_book::next_release() const {
  time_us wake = 0;
  const time_us cooldown = cfg_.cooldown_ms * 1000;
  for (const auto& [key, n] : nodes_)
    if (n.staked > 0 && n.roles.empty() && n.holding.empty() && (wake == 0 || n.left_at + cooldown < wake))
      wake = std::max<time_us>(n.left_at + cooldown, 1);
  return wake;
}

// Each party's slash is written even when its stake is empty (one posting of 0), so the
// ruling counts as carried out and a restart does not take it again from a later stake.
std::vector<transfer> stake_book::slash(const settled_job& s, time_us now) const {
  std::vector<transfer> out;
  const auto& r = s.ruling;
  if (r.provider_lost) {
    // The provider's stake pays, in this order, the client's compensation and the verifier's reward.
    micros left = staked(s.provider_key);
    const micros compensation = std::min(left, s.price);
    left -= compensation;
    const micros reward = r.honest_verifier.empty() ? 0 : std::min(left, s.price);
    std::vector<market::posting> ps{{market::stake_account(s.provider_key), -(compensation + reward), "slash"}};
    if (compensation > 0)
      ps.push_back({market::client_account(s.client_id), compensation, "slash: compensation"});
    if (reward > 0)
      ps.push_back({market::provider_account(r.honest_verifier), reward, "slash: verifier's reward"});
    out.push_back(transfer{std::move(ps), fmt::format("slash:{}:provider", s.job_id), s.job_id, now});
  }
  if (!r.liar_verifier.empty()) {
    const micros all = staked(r.liar_verifier);
    const auto to = r.provider_lost ? market::client_account(s.client_id) : market::provider_account(s.provider_key);
    auto t = move(market::stake_account(r.liar_verifier), to, all, "slash",
                  fmt::format("slash:{}:verifier", s.job_id), s.job_id, now);
    if (all <= 0)
      t.postings.pop_back();
    out.push_back(std::move(t));
  }
  return out;
}

bool stake_book::apply(const market::posting& p) {
  if (auto key = market::owner_of(p.account, "provider:"); !key.empty()) {
    nodes_[key].balance += p.amount;
    return true;
  }
  if (auto key = market::owner_of(p.account, "stake:"); !key.empty()) {
    nodes_[key].staked += p.amount;
    return true;
  }
  return false;
}

micros stake_book::total_staked() const {
  micros sum = 0;
  for (const auto& [key, n] : nodes_)
    sum += n.staked;
  return sum;
}

micros stake_book::balance(const std::string& key) const {
  auto it = nodes_.find(key);
  return it == nodes_.end() ? 0 : it->second.balance;
}

micros stake_book::staked(const std::string& key) const {
  auto it = nodes_.find(key);
  return it == nodes_.end() ? 0 : it->second.staked;
}

} // namespace haca::core
