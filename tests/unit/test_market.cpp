#include <doctest/doctest.h>

#include <limits>
#include <random>

#include "market/ledger.hpp"
#include "market/reputation.hpp"

using namespace haca;
using namespace haca::market;

namespace {
micros amount_for(const std::vector<posting>& ps, const std::string& account) {
  micros s = 0;
  for (const auto& p : ps)
    if (p.account == account) s += p.amount;
  return s;
}
} // namespace

TEST_CASE("account names follow the client:/provider: convention") {
  CHECK(client_account("alice") == "client:alice");
  CHECK(provider_account("ab12") == "provider:ab12");
}

TEST_CASE("settlement postings sum to zero for many prices and fees") {
  std::mt19937_64 rng(1);
  std::vector<micros> prices = {0, 1, 9, 10, 99, 9999, 10000, 10001, 123456789,
                                std::numeric_limits<micros>::max() / 2, std::numeric_limits<micros>::max()};
  for (int i = 0; i < 2000; ++i) prices.push_back(static_cast<micros>(rng() % 100000000));
  for (micros price : prices)
    for (int fee : {0, 1, 7, 250, 333, 5000, 9999, 10000}) {
      const auto ps = settlement_postings("alice", "pk", price, fee);
      CHECK(balanced(ps));
      CHECK(sum(ps) == 0);
      CHECK(amount_for(ps, "client:alice") == -price);
      const micros f = amount_for(ps, fee_account);
      CHECK(f >= 0);
      CHECK(f <= price);
      CHECK((f > 0) == (price > 0 && fee > 0));
      CHECK(amount_for(ps, "provider:pk") == price - f);
    }
}

TEST_CASE("the protocol fee is rounded up, never silently 0, and the provider gets the rest") {
  auto ps = settlement_postings("c", "p", 999, 250); // 24.975 -> 25
  CHECK(amount_for(ps, fee_account) == 25);
  CHECK(amount_for(ps, "provider:p") == 974);
  ps = settlement_postings("c", "p", 10000, 250); // exact: 250
  CHECK(amount_for(ps, fee_account) == 250);
  CHECK(amount_for(ps, "provider:p") == 9750);
  for (micros price : {10, 12}) { // 500 bps of 10 or 12 is 0.5 or 0.6: 1, not 0
    ps = settlement_postings("c", "p", price, 500);
    CHECK(amount_for(ps, fee_account) == 1);
    CHECK(amount_for(ps, "provider:p") == price - 1);
  }
  ps = settlement_postings("c", "p", 1, 1); // the smallest rate on the smallest price
  CHECK(amount_for(ps, fee_account) == 1);
  CHECK(amount_for(ps, "provider:p") == 0);
  ps = settlement_postings("c", "p", 39, 0); // no rate: no fee posting at all
  CHECK(amount_for(ps, fee_account) == 0);
  CHECK(ps.size() == 2);
  ps = settlement_postings("c", "p", 0, 500); // no price: no fee
  CHECK(ps.size() == 2);
  ps = settlement_postings("c", "p", 1000, 10000);
  CHECK(amount_for(ps, fee_account) == 1000);
  CHECK(amount_for(ps, "provider:p") == 0);
}

TEST_CASE("funding from the mint is balanced") {
  const auto ps = funding_postings("client:bob", 5000, "deposit");
  CHECK(balanced(ps));
  CHECK(amount_for(ps, mint_account) == -5000);
  CHECK(amount_for(ps, "client:bob") == 5000);
}

TEST_CASE("an escrow hold beyond the available balance fails with insufficient_funds and changes nothing") {
  escrow_book book;
  CHECK_FALSE(book.known("alice"));
  book.credit("alice", 1000);
  CHECK(book.known("alice"));
  REQUIRE(book.hold("alice", 600).ok());
  CHECK(book.held("alice") == 600);
  CHECK(book.available("alice") == 400);
  auto s = book.hold("alice", 401);
  REQUIRE_FALSE(s.ok());
  CHECK(s.err().code == errc::insufficient_funds);
  CHECK(s.err().reason.find("alice") != std::string::npos);
  CHECK(book.balance("alice") == 1000);
  CHECK(book.held("alice") == 600);
  CHECK(book.available("alice") == 400);
  CHECK(book.hold("alice", 400).ok());
  CHECK(book.available("alice") == 0);
  CHECK(book.hold("nobody", 1).err().code == errc::insufficient_funds);
  CHECK_FALSE(book.known("nobody"));
}

TEST_CASE("capture debits the real price and releases the whole hold; release frees a failed job's hold") {
  escrow_book book;
  book.credit("c", 1000);
  REQUIRE(book.hold("c", 300).ok());
  REQUIRE(book.hold("c", 200).ok());
  book.capture("c", 300, 120);
  CHECK(book.balance("c") == 880);
  CHECK(book.held("c") == 200);
  CHECK(book.available("c") == 680);
  book.release("c", 200);
  CHECK(book.held("c") == 0);
  CHECK(book.available("c") == 880);
  book.release("c", 50); // nothing held: stays at zero
  CHECK(book.held("c") == 0);
}

TEST_CASE("reputation is 1000 without a lost dispute and falls by ten verified jobs' weight per lost one") {
  CHECK(reputation({}) == 1000);
  CHECK(reputation({5000, 0}) == 1000);
  CHECK(reputation({0, 1}) == 90);    // 1 / 11
  CHECK(reputation({99, 1}) == 909);  // 100 / 110
  CHECK(reputation({0, 100}) == 0);   // 1 / 1001
  CHECK(reputation({-5, -1}) == 1000); // nonsense counts are read as none
  int last = 1001;
  for (std::int64_t d = 0; d < 50; ++d) { // each lost dispute lowers it
    const int r = reputation({100, d});
    CHECK(r < last);
    last = r;
  }
}
