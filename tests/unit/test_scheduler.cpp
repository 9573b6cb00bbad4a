#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "scheduler/match.hpp"
#include "scheduler/queue_policy.hpp"

using namespace haca::scheduler;

namespace {

const std::string model_a = "7f3a12bc" + std::string(56, '0');
const std::string model_b = "c0ffee00" + std::string(56, '1');

provider_view provider(std::string key, std::int64_t price, int credit = 2, int reputation = 1000,
                       std::string device = "cpu", std::set<std::string> models = {model_a}) {
  provider_view p;
  p.key = std::move(key);
  p.price = price;
  p.credit = credit;
  p.reputation = reputation;
  p.device = std::move(device);
  p.models = std::move(models);
  return p;
}

job_needs needs(std::int64_t max_price = 100, int min_reputation = 0, std::string device = "") {
  return job_needs{model_a, std::move(device), max_price, min_reputation};
}

} // namespace

TEST_CASE("match picks the cheapest capable provider") {
  auto r = match(needs(), {provider("a", 30), provider("b", 10), provider("c", 20)});
  REQUIRE(r.provider_key);
  CHECK(*r.provider_key == "b");
  CHECK(r.reason.empty());
}

TEST_CASE("match skips providers without credit, without the model, on the wrong device or under the floor") {
  std::vector<provider_view> ps = {
      provider("no-credit", 1, 0),
      provider("no-model", 2, 2, 1000, "cpu", {model_b}),
      provider("low-rep", 3, 2, 400),
      provider("gpu", 4, 2, 1000, "cuda"),
      provider("ok", 5),
  };
  CHECK(*match(needs(100, 500), ps).provider_key == "gpu");
  CHECK(*match(needs(100, 500, "cpu"), ps).provider_key == "ok");
  CHECK(*match(needs(100, 0, "cpu"), ps).provider_key == "low-rep");
}

TEST_CASE("match respects max_price and says what the cheapest provider asks") {
  auto r = match(needs(10), {provider("a", 20), provider("b", 25)});
  CHECK_FALSE(r.provider_key);
  CHECK(r.reason == "cheapest capable provider asks 20 > max_price 10");
  CHECK(*match(needs(20), {provider("a", 20)}).provider_key == "a");
}

TEST_CASE("match breaks price ties by reputation, then credit, then key") {
  CHECK(*match(needs(), {provider("a", 10, 1, 900), provider("b", 10, 1, 950)}).provider_key == "b");
  CHECK(*match(needs(), {provider("a", 10, 1), provider("b", 10, 3)}).provider_key == "b");
  CHECK(*match(needs(), {provider("b", 10), provider("a", 10)}).provider_key == "a");
  CHECK(*match(needs(), {provider("a", 10), provider("b", 10)}).provider_key == "a");
}

TEST_CASE("match explains why nothing fits") {
  CHECK(match(needs(), {}).reason == "no providers online");
  auto r = match(needs(), {provider("a", 1, 1, 1000, "cpu", {model_b}), provider("b", 1, 1, 1000, "cpu", {model_b}),
                           provider("c", 1, 1, 1000, "cpu", {})});
  CHECK_FALSE(r.provider_key);
  CHECK(r.reason == "no provider has model 7f3a12bc.. (3 online)");
  r = match(needs(), {provider("a", 1, 0), provider("b", 1, 0)});
  CHECK(r.reason == "2 providers have model 7f3a12bc.. but none has credit");
  r = match(needs(), {provider("a", 1, 0)});
  CHECK(r.reason == "1 provider has model 7f3a12bc.. but none has credit");
  r = match(needs(100, 0, "cuda"), {provider("a", 1)});
  CHECK(r.reason == "1 provider has model 7f3a12bc.. but none is a 'cuda' device");
  r = match(needs(100, 900), {provider("a", 1, 1, 700), provider("b", 1, 1, 800)});
  CHECK(r.reason == "2 providers have model 7f3a12bc.. and credit but none has reputation >= 900 (best 800)");
}

TEST_CASE("fair_queue serves clients round-robin so a pipelining client does not starve another") {
  fair_queue q(100);
  for (int i = 0; i < 10; ++i) REQUIRE(q.push("busy", 100 + i));
  REQUIRE(q.push("quiet", 1));
  REQUIRE(q.push("quiet", 2));
  REQUIRE(q.push("third", 50));
  auto all = [](std::int64_t) { return true; };
  CHECK(q.take(4, all) == std::vector<std::int64_t>{100, 1, 50, 101});
  CHECK(q.take(3, all) == std::vector<std::int64_t>{2, 102, 103});
  CHECK(q.size() == 6);
  CHECK(q.take(100, all) == std::vector<std::int64_t>{104, 105, 106, 107, 108, 109});
  CHECK(q.size() == 0);
  CHECK(q.take(5, all).empty());
}

TEST_CASE("fair_queue resumes after the client served last across calls") {
  fair_queue q(100);
  q.push("a", 1);
  q.push("a", 2);
  q.push("b", 3);
  q.push("b", 4);
  auto all = [](std::int64_t) { return true; };
  CHECK(q.take(1, all) == std::vector<std::int64_t>{1});
  CHECK(q.take(1, all) == std::vector<std::int64_t>{3});
  CHECK(q.take(1, all) == std::vector<std::int64_t>{2});
  CHECK(q.take(1, all) == std::vector<std::int64_t>{4});
}

TEST_CASE("fair_queue push fails when full and push_front puts a returned job first") {
  fair_queue q(3);
  CHECK(q.push("a", 1));
  CHECK(q.push("a", 2));
  CHECK(q.push("b", 3));
  CHECK(q.full());
  CHECK_FALSE(q.push("c", 4));
  CHECK(q.size() == 3);
  auto all = [](std::int64_t) { return true; };
  CHECK(q.take(1, all) == std::vector<std::int64_t>{1});
  CHECK_FALSE(q.full());
  q.push_front("a", 1); // its provider died: back to the front
  CHECK(q.size() == 3);
  q.push_front("b", 9); // allowed past the bound, a returned job is never dropped
  CHECK(q.size() == 4);
  CHECK(q.take(10, all) == std::vector<std::int64_t>{9, 1, 3, 2});
}

TEST_CASE("fair_queue take skips ineligible jobs and keeps their order") {
  fair_queue q(100);
  for (std::int64_t j : {1, 2, 3, 4, 5}) q.push("a", j);
  for (std::int64_t j : {10, 11, 12}) q.push("b", j);
  auto even = [](std::int64_t j) { return j % 2 == 0; };
  CHECK(q.take(10, even) == std::vector<std::int64_t>{2, 10, 4, 12});
  CHECK(q.size() == 4);
  auto all = [](std::int64_t) { return true; };
  CHECK(q.take(10, all) == std::vector<std::int64_t>{1, 11, 3, 5});
  CHECK(q.take(3, even).empty());
}

TEST_CASE("fair_queue remove drops a cancelled job wherever it is") {
  fair_queue q(10);
  q.push("a", 1);
  q.push("a", 2);
  q.push("b", 3);
  CHECK(q.remove(2));
  CHECK_FALSE(q.remove(2));
  CHECK(q.remove(3));
  CHECK(q.size() == 1);
  CHECK_FALSE(q.remove(99));
  auto all = [](std::int64_t) { return true; };
  CHECK(q.take(10, all) == std::vector<std::int64_t>{1});
}
