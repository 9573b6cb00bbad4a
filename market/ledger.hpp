#pragma once
// Double-entry ledger rules. Money is integer micro-units. Every group of postings produced
// here sums to zero.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "proto/error.hpp"

namespace haca::market {

using micros = std::int64_t;

inline constexpr const char* mint_account = "mint";
inline constexpr const char* fee_account = "protocol:fees";
std::string client_account(const std::string& client_id);        // "client:<id>"
std::string provider_account(const std::string& node_key);       // "provider:<key>": a node's own money
std::string stake_account(const std::string& node_key);          // "stake:<key>": what it has at stake
// The id in an account of one kind: owner_of("client:abc", "client:") is "abc"; "" for another kind.
std::string owner_of(const std::string& account, std::string_view kind);

struct posting {
  std::string account;
  micros amount = 0; // + credit, - debit
  std::string memo;
};

micros sum(const std::vector<posting>& postings);
bool balanced(const std::vector<posting>& postings);

// Settling one receipt: the client pays `price`; the fee account gets fee_bps basis points of it,
// rounded up (ceil(price * fee_bps / 10000), fee_bps clamped to [0, 10000]), so a positive rate
// never yields a fee of 0 on a positive price; the provider gets the rest. A zero fee (a zero
// price or rate) produces no fee posting.
std::vector<posting> settlement_postings(const std::string& client_id, const std::string& provider_key,
                                         micros price, int fee_bps);
// Money into `account` (a full account name: client:<id>, provider:<key>) from the mint: a
// DEPOSIT or the demo's faucet, named by `memo`.
std::vector<posting> funding_postings(const std::string& account, micros amount, const std::string& memo);

// Client balances with holds: SUBMIT holds max_price; settlement captures the real price and
// releases the hold; a failed job releases it. Pure, in memory; the coordinator rebuilds it from
// the accounts table at start.
class escrow_book {
public:
  void credit(const std::string& client_id, micros amount);
  micros balance(const std::string& client_id) const;
  micros held(const std::string& client_id) const;
  micros available(const std::string& client_id) const { return balance(client_id) - held(client_id); }
  bool known(const std::string& client_id) const { return balance_.count(client_id) > 0; }
  // insufficient_funds when available < amount; nothing changes then.
  status hold(const std::string& client_id, micros amount);
  // A hold rebuilt from storage after a restart: kept even beyond the balance (only a hand
  // edit of Postgres makes that happen, and `haca audit` reports it).
  void restore_hold(const std::string& client_id, micros amount);
  void release(const std::string& client_id, micros amount);
  // Releases `held_amount` and debits `price` (price <= held_amount).
  void capture(const std::string& client_id, micros held_amount, micros price);

private:
  std::map<std::string, micros> balance_;
  std::map<std::string, micros> held_;
};

} // namespace haca::market
