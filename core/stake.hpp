#pragma once
// Nodes' money: each node key (provider or verifier) has an account, provider:<key> (deposits
// by the admin key, a provider's earnings, rewards), and a stake, stake:<key>. A node joins
// only with `min_stake` at stake: its HELLO moves what is missing from its account to its
// stake (a transfer, committed before WELCOME), or is refused when the account cannot pay.
// The stake stays while the node is connected in any role and for `cooldown_ms` after it
// left; then it goes back to the account. A dispute's ruling is paid from the loser's stake:
//
//   - a provider that lost pays the client `price` (compensation; the client was not charged
//     for the job either) and the honest verifier `price` (its reward), as far as its stake goes;
//   - a verifier that lost loses its whole stake: to the provider, or to the client when the
//     provider lied too.
//
// Pure (part of the execution core, which owns every balance). The transfers it returns are
// not applied yet: the execution core applies each one (to this book and to the clients'
// escrow) when it emits it, and takes it back if its commit is rejected.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/records.hpp"
#include "proto/error.hpp"

namespace haca::core {

struct stake_config {
  micros min_stake = 0;              // 0: nodes join without stake
  std::int64_t cooldown_ms = 60000;  // after a node left, its stake goes back to its account
};

class stake_book {
public:
  explicit stake_book(stake_config cfg = {}) : cfg_(cfg) {}
  void restore(const snapshot& s, time_us now); // every node counts as gone at `now`

  // A HELLO: `hold` to commit first (its ref then names the admission), or none when the node
  // has its stake already; an error when the account cannot pay for it.
  struct admission {
    std::optional<transfer> hold;
    std::optional<error> refusal;
  };
  admission admit(const std::string& key, time_us now);
  // A hold whose commit is not confirmed yet: a HELLO meanwhile waits for it.
  bool holding(const std::string& key) const;
  void hold_done(const std::string& key, const std::string& ref); // committed or not: the next HELLO may ask again

  void joined(const std::string& key, const std::string& role);
  void left(const std::string& key, const std::string& role, time_us now);
  bool present(const std::string& key) const;
  bool below_minimum(const std::string& key) const { return staked(key) < cfg_.min_stake; }

  // Stakes of nodes gone for the cool-down, back to their accounts.
  std::vector<transfer> releases_due(time_us now);
  time_us next_release() const; // 0 = none
  // The slashes a settled job's ruling asks for. Apply each before asking again.
  std::vector<transfer> slash(const settled_job& s, time_us now) const;

  // One posting on a node account (provider:<key> or stake:<key>), as committed or taken back.
  // False when the account is not a node's.
  bool apply(const market::posting& p);

  micros balance(const std::string& key) const;
  micros staked(const std::string& key) const;
  const stake_config& config() const { return cfg_; }
  std::size_t known_nodes() const { return nodes_.size(); } // memory: nodes connected or with money
  micros total_staked() const;

private:
  struct node {
    micros balance = 0;                // provider:<key>
    micros staked = 0;                 // stake:<key>
    std::string holding;               // ref of a hold not yet committed
    std::set<std::string> roles;       // connected as
    time_us left_at = 0;               // when its last role left (the cool-down's start)
  };

  stake_config cfg_;
  std::map<std::string, node> nodes_;
};

} // namespace haca::core
