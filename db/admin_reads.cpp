#include "db/admin_reads.hpp"

#include <algorithm>
#include <ctime>
#include <functional>
#include <limits>
#include <regex>

#include <fmt/format.h>
#include <pqxx/pqxx>

#include "market/ledger.hpp"

namespace haca::db {
namespace {

using json = nlohmann::json;

// A text cell as JSON (null when SQL NULL); a number cell as an integer.
json text(const pqxx::field& f) { return f.is_null() ? json(nullptr) : json(f.c_str()); }
json integer(const pqxx::field& f) { return f.is_null() ? json(nullptr) : json(f.as<std::int64_t>()); }

// Rows beyond `limit` only say that a next page exists: its key is the last row returned.
json page(const pqxx::result& rows, int limit, const char* key, const std::function<json(const pqxx::row&)>& item) {
  json out{{"items", json::array()}, {"next", nullptr}};
  const auto n = std::min<std::size_t>(rows.size(), static_cast<std::size_t>(limit));
  for (std::size_t i = 0; i < n; ++i)
    out["items"].push_back(item(rows[static_cast<pqxx::result::size_type>(i)]));
  if (rows.size() > n)
    out["next"] = rows[static_cast<pqxx::result::size_type>(n - 1)][key].c_str();
  return out;
}

int bounded(int limit) { return std::clamp(limit, 1, max_page); }

// A filtered list looks at no more than this many rows per item asked (a page of 500: 10,000).
constexpr int scan_budget_per_item = 20;

// Where a filtered page's scan ends: `window_sql` selects count(*) and the last key of the
// keys the page may look at, its budget (limit * scan_budget_per_item) bound as the last
// parameter. The end when the budget is all used; nothing when the keys ran out first.
template <class... Args>
std::optional<std::string> window_end(pqxx::read_transaction& tx, int limit, const std::string& window_sql,
                                      const Args&... args) {
  const int budget = limit * scan_budget_per_item;
  const pqxx::row w = tx.exec_params1(window_sql, args..., budget);
  if (w[0].as<int>() < budget)
    return std::nullopt;
  return std::string(w[1].c_str());
}

// A page that ends short inside a full window goes on from the window's end.
json& page_on(json& out, const std::optional<std::string>& window) {
  if (out["next"].is_null() && window)
    out["next"] = *window;
  return out;
}

// A page key that is a number (a job id, a height); `fallback` when the list starts from the
// beginning. `what` says what it is: "jobs is a job id".
result<std::int64_t> numeric_key(const page_request& p, const char* what, std::int64_t fallback) {
  if (p.after.empty())
    return fallback;
  try {
    return std::stoll(p.after);
  } catch (const std::exception&) {
    return make_error(errc::bad_input, fmt::format("'after' of {}, got '{}'", what, p.after.substr(0, 40)));
  }
}

std::string iso(const char* column) { return fmt::format("to_char({} at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", column); }

} // namespace

struct admin_reads::connection {
  explicit connection(const std::string& url) : db(url) {}
  pqxx::connection db;
};

admin_reads::admin_reads(std::string url) : url_(std::move(url)) {}
admin_reads::~admin_reads() = default;

template <class F>
result<json> admin_reads::read(F&& f) {
  std::lock_guard lock(mu_);
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      if (!conn_)
        conn_ = std::make_unique<connection>(url_);
      pqxx::read_transaction tx{conn_->db};
      return f(tx);
    } catch (const pqxx::broken_connection& e) {
      conn_.reset(); // one reconnect, then the error
      if (attempt == 1)
        return make_error(errc::unavailable, std::string("Postgres cannot be read now: ") + e.what());
    } catch (const std::exception& e) {
      conn_.reset();
      return make_error(errc::unavailable, std::string("Postgres cannot be read now: ") + e.what());
    }
  }
  return make_error(errc::unavailable, "Postgres cannot be read now");
}

result<json> admin_reads::providers(const page_request& p) {
  const int limit = bounded(p.limit);
  return read([&](pqxx::read_transaction& tx) {
    auto rows = tx.exec_params(
        "select n.public_key, n.role, n.name, n.device, n.price, n.capabilities->'backends' as backends, "
        "n.capabilities->'models' as models, " + iso("n.last_seen") + " as last_seen, coalesce(s.balance, 0) as stake, "
        "coalesce(a.balance, 0) as balance, "
        // The operators' standing orders on it: the newest ban/unban and drain/undrain.
        "(select x.action = 'ban' from admin_actions x where x.target = n.public_key and x.action in ('ban', 'unban') "
        "order by x.id desc limit 1) as banned, "
        "(select x.action = 'drain' from admin_actions x where x.target = n.public_key and x.action in ('drain', "
        "'undrain') order by x.id desc limit 1) as drained "
        "from providers n left join accounts s on s.id = 'stake:' || n.public_key "
        "left join accounts a on a.id = 'provider:' || n.public_key where n.public_key > $1 order by n.public_key "
        "limit $2",
        p.after, limit + 1);
    return page(rows, limit, "public_key", [](const pqxx::row& r) {
      return json{{"key", text(r["public_key"])}, {"role", text(r["role"])}, {"name", text(r["name"])},
                  {"device", text(r["device"])}, {"price", integer(r["price"])},
                  {"backends", json::parse(r["backends"].is_null() ? "[]" : r["backends"].c_str())},
                  {"models", json::parse(r["models"].is_null() ? "[]" : r["models"].c_str())},
                  {"last_seen", text(r["last_seen"])}, {"stake", integer(r["stake"])},
                  {"balance", integer(r["balance"])}, {"banned", !r["banned"].is_null() && r["banned"].as<bool>()},
                  {"drained", !r["drained"].is_null() && r["drained"].as<bool>()}};
    });
  });
}

std::optional<std::int64_t> parse_utc(const std::string& text) {
  static const std::regex form(R"((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.(\d{1,6}))?Z)");
  std::smatch m;
  if (!std::regex_match(text, m, form))
    return std::nullopt;
  std::tm t{};
  t.tm_year = std::stoi(m[1]) - 1900;
  t.tm_mon = std::stoi(m[2]) - 1;
  t.tm_mday = std::stoi(m[3]);
  t.tm_hour = std::stoi(m[4]);
  t.tm_min = std::stoi(m[5]);
  t.tm_sec = std::stoi(m[6]);
  const std::tm asked = t;
  const std::int64_t seconds = timegm(&t); // normalizes: Feb 30 becomes Mar 2, which is refused below
  if (t.tm_year != asked.tm_year || t.tm_mon != asked.tm_mon || t.tm_mday != asked.tm_mday ||
      t.tm_hour != asked.tm_hour || t.tm_min != asked.tm_min || t.tm_sec != asked.tm_sec)
    return std::nullopt;
  std::string fraction = m[8].str();
  fraction.resize(6, '0');
  return seconds * 1'000'000 + std::stoll(fraction);
}

namespace {

// The first job id submitted at or after `at_us` (max id + 1 when none). Job ids are handed
// out in admission order with the admission time, so submitted_at never decreases with the id
// and a binary search on the primary key finds it: a time filter reads O(log n) rows, not a
// scan.
std::int64_t first_job_at(pqxx::read_transaction& tx, std::int64_t at_us) {
  std::int64_t lo = 1, hi = tx.exec1("select coalesce(max(id), 0) + 1 from jobs")[0].as<std::int64_t>();
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    auto row = tx.exec_params("select (extract(epoch from submitted_at) * 1000000)::bigint from jobs where id >= $1 "
                              "order by id limit 1",
                              mid);
    if (row.empty() || row[0][0].as<std::int64_t>() >= at_us)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

} // namespace

result<json> admin_reads::jobs(const job_filter& f, const page_request& p) {
  const int limit = bounded(p.limit);
  const auto key = numeric_key(p, "jobs is a job id", 0);
  if (!key)
    return key.err();
  return read([&](pqxx::read_transaction& tx) {
    std::int64_t after = key.value();
    std::int64_t last = std::numeric_limits<std::int64_t>::max();
    if (f.since_us)
      after = std::max(after, first_job_at(tx, *f.since_us) - 1);
    if (f.until_us)
      last = first_job_at(tx, *f.until_us) - 1;
    // A filter on a column without an index (state, provider) would scan the whole table for a
    // rare value: a filtered page looks at no more than scan_budget job ids, and when it fills
    // fewer than `limit` items its `next` is the last id it looked at, so the caller pages on.
    const bool filtered = !f.state.empty() || !f.client.empty() || !f.provider.empty();
    const auto window = filtered ? window_end(tx, limit,
                                              "select count(*), max(id) from (select id from jobs where id > $1 and "
                                              "id <= $2 order by id limit $3) w",
                                              after, last)
                                 : std::nullopt;
    if (window)
      last = std::stoll(*window);
    auto rows = tx.exec_params(
        "select id, client_id, client_req_id, state, attempt, provider_key, price, max_price, tier, " +
            iso("submitted_at") + " as submitted_at, " + iso("updated_at") +
            " as updated_at from jobs where id > $1 and id <= $6 and ($2 = '' or state = $2) and ($3 = '' or "
            "client_id = $3) and ($4 = '' or provider_key = $4) order by id limit $5",
        after, f.state, f.client, f.provider, limit + 1, last);
    auto out = page(rows, limit, "id", [](const pqxx::row& r) {
      return json{{"id", integer(r["id"])},         {"client", text(r["client_id"])},
                  {"request_id", text(r["client_req_id"])}, {"state", text(r["state"])},
                  {"attempt", integer(r["attempt"])}, {"provider", text(r["provider_key"])},
                  {"price", integer(r["price"])},   {"max_price", integer(r["max_price"])},
                  {"tier", text(r["tier"])},        {"submitted_at", text(r["submitted_at"])},
                  {"updated_at", text(r["updated_at"])}};
    });
    return page_on(out, window);
  });
}
result<json> admin_reads::job(std::int64_t id) {
  return read([&](pqxx::read_transaction& tx) -> json {
    auto row = tx.exec_params("select id, client_id, client_req_id, model_hash, input_hash, state, attempt, seq, "
                              "provider_key, price, max_price, tier, " + iso("submitted_at") + " as submitted_at, " +
                                  iso("updated_at") + " as updated_at, " + iso("deadline") +
                                  " as deadline from jobs where id = $1",
                              id);
    if (row.empty())
      return nullptr;
    const auto& r = row[0];
    json out{{"id", integer(r["id"])},           {"client", text(r["client_id"])},
             {"request_id", text(r["client_req_id"])}, {"model", text(r["model_hash"])},
             {"input_hash", text(r["input_hash"])}, {"state", text(r["state"])},
             {"attempt", integer(r["attempt"])},  {"seq", integer(r["seq"])},
             {"provider", text(r["provider_key"])}, {"price", integer(r["price"])},
             {"max_price", integer(r["max_price"])}, {"tier", text(r["tier"])},
             {"submitted_at", text(r["submitted_at"])}, {"updated_at", text(r["updated_at"])},
             {"deadline", text(r["deadline"])}};
    out["timeline"] = json::array();
    for (const auto& e : tx.exec_params("select seq, state, attempt, detail, " + iso("at") +
                                            " as at from job_timeline where job_id = $1 order by seq",
                                        id))
      out["timeline"].push_back(json{{"seq", integer(e["seq"])}, {"state", text(e["state"])},
                                     {"attempt", integer(e["attempt"])}, {"detail", text(e["detail"])},
                                     {"at", text(e["at"])}});
    out["receipts"] = json::array();
    // The attempt its row settled has its verdict and block.
    for (const auto& c : tx.exec_params("select r.attempt, r.receipt_hash, r.output_hash, r.trace_root, r.provider_key, "
                                        "r.price, s.verdict, s.block_height, r.signature from receipts r left join "
                                        "jobs s on s.id = r.job_id and s.attempt = r.attempt and s.block_height is "
                                        "not null where r.job_id = $1 order by r.attempt",
                                        id))
      out["receipts"].push_back(json{{"attempt", integer(c["attempt"])}, {"receipt_hash", text(c["receipt_hash"])},
                                     {"output_hash", text(c["output_hash"])}, {"trace_root", text(c["trace_root"])},
                                     {"provider", text(c["provider_key"])}, {"price", integer(c["price"])},
                                     {"verdict", text(c["verdict"])}, {"block", integer(c["block_height"])},
                                     {"signature", text(c["signature"])}});
    out["disputes"] = json::array();
    for (const auto& d : tx.exec_params("select attempt, verifier_key, provider_key, layer, provider_hash, "
                                        "verifier_hash, referee_hash, loser, detail, " + iso("ruled_at") +
                                            " as ruled_at from disputes where job_id = $1 order by attempt",
                                        id))
      out["disputes"].push_back(json{{"attempt", integer(d["attempt"])}, {"verifier", text(d["verifier_key"])},
                                     {"provider", text(d["provider_key"])}, {"layer", integer(d["layer"])},
                                     {"provider_hash", text(d["provider_hash"])},
                                     {"verifier_hash", text(d["verifier_hash"])},
                                     {"referee_hash", text(d["referee_hash"])}, {"loser", text(d["loser"])},
                                     {"detail", text(d["detail"])}, {"ruled_at", text(d["ruled_at"])}});
    // Its share of its block's postings (a block posts per account, not per job: the share
    // follows from the receipt's price and the block's fee rate), then postings of its own
    // (slashes; and, in blocks written before migration 007, its block postings).
    out["postings"] = json::array();
    auto share = tx.exec_params("select j.client_id, j.block_height, b.fee_bps, r.provider_key, r.price from jobs j "
                                "join blocks b on b.height = j.block_height join receipts r on r.job_id = j.id and "
                                "r.attempt = j.attempt where j.id = $1 and j.verdict <> 'mismatch' and b.fee_bps is "
                                "not null",
                                id);
    for (const auto& s : share)
      for (const auto& p : market::settlement_postings(s["client_id"].c_str(), s["provider_key"].c_str(),
                                                       s["price"].as<std::int64_t>(), s["fee_bps"].as<int>()))
        out["postings"].push_back(json{{"account", p.account}, {"amount", p.amount},
                                       {"memo", p.memo + " (its share of the block's)"},
                                       {"block", integer(s["block_height"])}});
    for (const auto& q : tx.exec_params("select account, amount, memo, block_height from postings where job_id = $1 "
                                        "order by id",
                                        id))
      out["postings"].push_back(json{{"account", text(q["account"])}, {"amount", integer(q["amount"])},
                                     {"memo", text(q["memo"])}, {"block", integer(q["block_height"])}});
    return out;
  });
}

result<json> admin_reads::disputes(const page_request& p) {
  const int limit = bounded(p.limit);
  const auto key = numeric_key(p, "disputes is a job id", 0);
  if (!key)
    return key.err();
  const std::int64_t after = key.value();
  return read([&](pqxx::read_transaction& tx) {
    auto rows = tx.exec_params("select job_id, attempt, verifier_key, provider_key, layer, loser, detail, " +
                                   iso("ruled_at") + " as ruled_at from disputes where job_id > $1 order by job_id "
                                                     "limit $2",
                               after, limit + 1);
    return page(rows, limit, "job_id", [](const pqxx::row& r) {
      return json{{"job_id", integer(r["job_id"])}, {"attempt", integer(r["attempt"])},
                  {"verifier", text(r["verifier_key"])}, {"provider", text(r["provider_key"])},
                  {"layer", integer(r["layer"])},   {"loser", text(r["loser"])},
                  {"detail", text(r["detail"])},    {"ruled_at", text(r["ruled_at"])}};
    });
  });
}

result<json> admin_reads::blocks(const page_request& p) {
  const int limit = bounded(p.limit);
  const auto key = numeric_key(p, "blocks is a height", std::numeric_limits<std::int64_t>::max());
  if (!key)
    return key.err();
  const std::int64_t before = key.value();
  return read([&](pqxx::read_transaction& tx) {
    auto rows = tx.exec_params("select height, block_hash, prev_hash, batch_root, receipts, total_amount, signer_key, "
                               "created_at from blocks where height < $1 order by height desc limit $2",
                               before, limit + 1);
    return page(rows, limit, "height", [](const pqxx::row& r) {
      return json{{"height", integer(r["height"])},     {"hash", text(r["block_hash"])},
                  {"prev_hash", text(r["prev_hash"])},  {"batch_root", text(r["batch_root"])},
                  {"receipts", integer(r["receipts"])}, {"total_amount", integer(r["total_amount"])},
                  {"signer", text(r["signer_key"])},    {"created_at_us", integer(r["created_at"])}};
    });
  });
}

result<json> admin_reads::accounts(const std::string& prefix, const page_request& p) {
  const int limit = bounded(p.limit);
  return read([&](pqxx::read_transaction& tx) {
    // The prefix is matched literally (starts_with), not as a LIKE pattern; the scan starts at
    // it and looks at a bounded window of accounts (as jobs do: `next` pages on).
    const auto window = window_end(tx, limit,
                                   "select count(*), max(id) from (select id from accounts where id > $1 and id >= $2 "
                                   "order by id limit $3) w",
                                   p.after, prefix);
    auto rows = tx.exec_params("select id, balance from accounts where id > $1 and id >= $2 and ($4::text is null or "
                               "id <= $4) and starts_with(id, $2) order by id limit $3",
                               p.after, prefix, limit + 1, window);
    auto out = page(rows, limit, "id", [](const pqxx::row& r) {
      return json{{"account", text(r["id"])}, {"balance", integer(r["balance"])}};
    });
    return page_on(out, window);
  });
}

result<json> admin_reads::postings(const std::string& account, const page_request& p) {
  const int limit = bounded(p.limit);
  const auto key = numeric_key(p, "postings is a posting id", std::numeric_limits<std::int64_t>::max());
  if (!key)
    return key.err();
  const std::int64_t before = key.value();
  return read([&](pqxx::read_transaction& tx) {
    // postings has no index on account (a block writes one per account): an account's page
    // looks at a bounded window of postings, newest first, and `next` pages on.
    const auto window = account.empty() ? std::nullopt
                                        : window_end(tx, limit,
                                                     "select count(*), min(id) from (select id from postings where id "
                                                     "< $1 order by id desc limit $2) w",
                                                     before);
    const std::int64_t lowest = window ? std::stoll(*window) : 0;
    auto rows = tx.exec_params("select id, block_height, job_id, account, amount, memo, ref, " + iso("at") +
                                   " as at from postings where id < $1 and id >= $2 and ($3 = '' or account = $3) "
                                   "order by id desc limit $4",
                               before, lowest, account, limit + 1);
    auto out = page(rows, limit, "id", [](const pqxx::row& r) {
      return json{{"id", integer(r["id"])},         {"block", integer(r["block_height"])},
                  {"job_id", integer(r["job_id"])}, {"account", text(r["account"])},
                  {"amount", integer(r["amount"])}, {"memo", text(r["memo"])},
                  {"ref", text(r["ref"])},          {"at", text(r["at"])}};
    });
    return page_on(out, window);
  });
}

result<json> admin_reads::actions(const page_request& p) {
  const int limit = bounded(p.limit);
  const auto key = numeric_key(p, "actions is an action id", std::numeric_limits<std::int64_t>::max());
  if (!key)
    return key.err();
  const std::int64_t before = key.value();
  return read([&](pqxx::read_transaction& tx) {
    auto rows = tx.exec_params("select id, ref, who, action, target, value, " + iso("taken_at") +
                                   " as taken_at from admin_actions where id < $1 order by id desc limit $2",
                               before, limit + 1);
    return page(rows, limit, "id", [](const pqxx::row& r) {
      return json{{"id", integer(r["id"])},         {"ref", text(r["ref"])},       {"who", text(r["who"])},
                  {"action", text(r["action"])},    {"target", text(r["target"])}, {"value", integer(r["value"])},
                  {"taken_at", text(r["taken_at"])}};
    });
  });
}

result<json> admin_reads::chain_head() {
  return read([&](pqxx::read_transaction& tx) -> json {
    auto rows = tx.exec("select height, block_hash, created_at from blocks order by height desc limit 1");
    if (rows.empty())
      return nullptr;
    return json{{"height", integer(rows[0]["height"])}, {"hash", text(rows[0]["block_hash"])},
                {"created_at_us", integer(rows[0]["created_at"])}};
  });
}

result<json> admin_reads::ledger_totals() {
  {
    std::lock_guard lock(mu_);
    if (ledger_ && std::chrono::steady_clock::now() - ledger_at_ < ledger_every)
      return *ledger_;
  }
  auto r = read([&](pqxx::read_transaction& tx) {
    json out = json::object();
    // numeric sums, as text: a sum of int64 balances may not fit an int64 (then it is an error).
    for (const auto& row : tx.exec("select split_part(id, ':', 1) as kind, sum(balance)::text as balance, count(*) "
                                   "as accounts from accounts group by 1 order by 1"))
    {
      std::int64_t balance = 0;
      try {
        balance = std::stoll(row["balance"].c_str());
      } catch (const std::out_of_range&) {
        throw std::runtime_error(fmt::format("the balances of kind '{}' sum to {}, beyond 64 bits",
                                             row["kind"].c_str(), row["balance"].c_str()));
      }
      out[row["kind"].c_str()] = json{{"balance", balance}, {"accounts", integer(row["accounts"])}};
    }
    return out;
  });
  if (r) {
    std::lock_guard lock(mu_);
    ledger_ = r.value();
    ledger_at_ = std::chrono::steady_clock::now();
  }
  return r;
}

} // namespace haca::db
