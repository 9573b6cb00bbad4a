#include "market/ledger.hpp"

namespace haca::market {

std::string client_account(const std::string& client_id) { return "client:" + client_id; }
std::string provider_account(const std::string& node_key) { return "provider:" + node_key; }
std::string stake_account(const std::string& node_key) { return "stake:" + node_key; }
std::string owner_of(const std::string& account, std::string_view kind) {
  return account.size() > kind.size() && account.compare(0, kind.size(), kind) == 0 ? account.substr(kind.size())
                                                                                     : std::string{};
}

micros sum(const std::vector<posting>& postings) {
  micros s = 0;
  for (const auto& p : postings) s += p.amount;
  return s;
}

bool balanced(const std::vector<posting>& postings) { return sum(postings) == 0; }

std::vector<posting> settlement_postings(const std::string& client_id, const std::string& provider_key,
                                         micros price, int fee_bps) {
  if (fee_bps < 0) fee_bps = 0;
  if (fee_bps > 10000) fee_bps = 10000;
  // fee = ceil(price * fee_bps / 10000) for price >= 0: a positive rate on a positive price is
  // never rounded away to 0 (500 bps of 10 is 1, not 0), and the fee never exceeds the price.
  // The provider gets the rest, so the group sums to zero. Split price as q*10000 + r so the
  // product cannot overflow for any int64 price.
  const micros q = price / 10000, r = price % 10000;
  const micros fee = q * fee_bps + (r * fee_bps + 9999) / 10000;
  const micros provider_share = price - fee;
  std::vector<posting> out;
  out.push_back({client_account(client_id), -price, "job payment"});
  out.push_back({provider_account(provider_key), provider_share, "job earnings"});
  if (fee != 0) out.push_back({fee_account, fee, "protocol fee"});
  return out;
}

std::vector<posting> funding_postings(const std::string& account, micros amount, const std::string& memo) {
  return {{mint_account, -amount, memo}, {account, amount, memo}};
}

void escrow_book::credit(const std::string& client_id, micros amount) { balance_[client_id] += amount; }

micros escrow_book::balance(const std::string& client_id) const {
  auto it = balance_.find(client_id);
  return it == balance_.end() ? 0 : it->second;
}

micros escrow_book::held(const std::string& client_id) const {
  auto it = held_.find(client_id);
  return it == held_.end() ? 0 : it->second;
}

status escrow_book::hold(const std::string& client_id, micros amount) {
  const micros avail = available(client_id);
  if (amount < 0) return make_error(errc::internal, "negative hold " + std::to_string(amount));
  if (avail < amount)
    return make_error(errc::insufficient_funds, "client " + client_id + " has " + std::to_string(avail) +
                                                    " micro-units available, needs " + std::to_string(amount) +
                                                    " (fund the account or lower max_price)");
  held_[client_id] += amount;
  return ok_status();
}

void escrow_book::restore_hold(const std::string& client_id, micros amount) {
  if (amount > 0) held_[client_id] += amount;
}

void escrow_book::release(const std::string& client_id, micros amount) {
  if (amount <= 0) return;
  auto it = held_.find(client_id);
  if (it == held_.end()) return;
  it->second -= amount < it->second ? amount : it->second;
  if (it->second == 0) held_.erase(it);
}

void escrow_book::capture(const std::string& client_id, micros held_amount, micros price) {
  release(client_id, held_amount);
  balance_[client_id] -= price;
}

} // namespace haca::market
