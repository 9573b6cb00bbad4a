#include "db/store.hpp"

#include <map>
#include <pqxx/pqxx>

#include <fmt/format.h>

namespace haca::db {
namespace {

// A unix-microseconds value as a timestamptz expression.
std::string ts(std::int64_t us) { return fmt::format("to_timestamp({}::double precision / 1e6)", us); }

std::string bytea(pqxx::dbtransaction& tx, const std::string& bytes) {
  return tx.quote_raw(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

template <class T, class F>
std::string join_rows(const std::vector<T>& items, F&& row) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty())
      out += ',';
    out += '(' + row(item) + ')';
  }
  return out;
}

void insert_jobs(pqxx::dbtransaction& tx, const std::vector<const insert_job*>& jobs, std::vector<result<answer>*>& answers) {
  auto values = join_rows(jobs, [&](const insert_job* op) {
    const auto& j = op->job;
    return fmt::format("{},{},{},{},{},{},{},{}::bigint,{},{}", tx.quote(j.client_id), tx.quote(j.request_id),
                       tx.quote(j.model), tx.quote(j.input_hash), bytea(tx, j.input.data),
                       tx.quote(kernels::shape_string(j.input.shape)), tx.quote(j.tier), j.max_price,
                       j.deadline_us ? ts(j.deadline_us) : "null::timestamptz", ts(j.submitted_us));
  });
  auto rows = tx.exec(
      "with v (client_id, client_req_id, model_hash, input_hash, input, input_shape, tier, max_price, deadline, "
      "submitted_at) as (values " + values + "), "
      "ins as (insert into jobs (id, client_id, client_req_id, model_hash, input_hash, input, input_shape, tier, "
      "max_price, deadline, state, attempt, submitted_at, updated_at) "
      "select nextval('job_id_seq'), client_id, client_req_id, model_hash, input_hash, input, input_shape, tier, "
      "max_price, deadline, 'QUEUED', 0, submitted_at, submitted_at from v "
      "on conflict (client_id, client_req_id) do nothing returning id, client_id, client_req_id, submitted_at), "
      "ev as (insert into job_events (job_id, state, at) select id, 'SUBMITTED', submitted_at from ins "
      "union all select id, 'QUEUED', submitted_at from ins) "
      "select id, client_id, client_req_id from ins");
  std::map<std::pair<std::string, std::string>, std::int64_t> ids;
  for (const auto& row : rows)
    ids[{row[1].c_str(), row[2].c_str()}] = row[0].as<std::int64_t>();
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    const auto& j = jobs[i]->job;
    auto it = ids.find({j.client_id, j.request_id});
    if (it == ids.end()) {
      *answers[i] = make_error(errc::duplicate_request,
                               fmt::format("client '{}' already submitted request id '{}'", j.client_id, j.request_id));
    } else {
      *answers[i] = answer{it->second};
      ids.erase(it); // a duplicate within the same batch gets the error
    }
  }
}

void insert_events(pqxx::dbtransaction& tx, const std::vector<job_event>& events) {
  if (events.empty())
    return;
  tx.exec("insert into job_events (job_id, state, detail, at) values " +
          join_rows(events, [&](const job_event& e) {
            return fmt::format("{},{},{},{}", e.job_id, tx.quote(e.state), tx.quote(e.detail), ts(e.at_us));
          }));
  std::map<std::int64_t, const job_event*> last; // the newest state per job wins
  for (const auto& e : events)
    last[e.job_id] = &e;
  std::string values;
  for (const auto& [id, e] : last) {
    if (!values.empty())
      values += ',';
    values += fmt::format("({}::bigint,{},{}::int,{},{})", id, tx.quote(e->state), e->attempt, tx.quote(e->provider_key),
                          ts(e->at_us));
  }
  tx.exec("update jobs j set state = v.state, attempt = v.attempt, "
          "provider_key = coalesce(nullif(v.pk, ''), j.provider_key), updated_at = v.at "
          "from (values " + values + ") as v (id, state, attempt, pk, at) where j.id = v.id");
}

void apply_postings(pqxx::dbtransaction& tx, std::optional<std::int64_t> height, std::int64_t job_id,
                    const std::vector<market::posting>& postings) {
  if (postings.empty())
    return;
  if (!market::balanced(postings))
    throw std::runtime_error(fmt::format("postings for job {} do not sum to zero", job_id));
  std::map<std::string, std::int64_t> per_account;
  for (const auto& p : postings)
    per_account[p.account] += p.amount;
  std::string accounts;
  for (const auto& [id, amount] : per_account)
    accounts += fmt::format("{}({},{}::bigint)", accounts.empty() ? "" : ",", tx.quote(id), amount);
  tx.exec("insert into accounts (id, balance) values " + accounts +
          " on conflict (id) do update set balance = accounts.balance + excluded.balance");
  tx.exec("insert into postings (block_height, job_id, account, amount, memo) values " +
          join_rows(postings, [&](const market::posting& p) {
            return fmt::format("{},{},{},{}::bigint,{}", height ? std::to_string(*height) : "null::bigint",
                               job_id ? std::to_string(job_id) : "null::bigint", tx.quote(p.account), p.amount,
                               tx.quote(p.memo));
          }));
}

std::int64_t apply_settlement(pqxx::dbtransaction& tx, const settlement& s) {
  const auto& b = s.block;
  tx.exec(fmt::format("insert into blocks (height, prev_hash, batch_root, receipts, total_amount, block_hash, "
                      "signer_key, signature, created_at) values ({},{},{},{},{},{},{},{},{})",
                      b.height, tx.quote(b.prev_hash), tx.quote(b.batch_root), b.receipts, b.total_amount,
                      tx.quote(verify::block_hash(b)), tx.quote(b.signer_key), tx.quote(b.signature), b.created_at_us));
  if (s.items.empty())
    return b.height;
  // Idempotent by receipt: a receipt already in a block makes the whole batch fail.
  auto updated = tx.exec(fmt::format("update receipts r set verdict = v.verdict, block_height = {}, block_index = v.idx "
                                     "from (values {}) as v (job_id, verdict, idx) "
                                     "where r.job_id = v.job_id and r.block_height is null",
                                     b.height, join_rows(s.items, [&, i = 0](const settled_item& it) mutable {
                                       return fmt::format("{}::bigint,{},{}::int", it.job_id, tx.quote(it.verdict), i++);
                                     })));
  if (updated.affected_rows() != s.items.size())
    throw std::runtime_error(fmt::format("block {}: {} of {} receipts are missing or already settled", b.height,
                                         s.items.size() - updated.affected_rows(), s.items.size()));
  std::vector<job_event> events;
  for (const auto& it : s.items) {
    apply_postings(tx, b.height, it.job_id, it.postings);
    events.push_back({it.job_id, "SETTLED", fmt::format("block {} ({})", b.height, it.verdict), it.receipt.attempt, "",
                      b.created_at_us});
  }
  insert_events(tx, events);
  return b.height;
}

proto::status_reply read_job_status(pqxx::dbtransaction& tx, std::int64_t job_id) {
  proto::status_reply out;
  auto job = tx.exec(fmt::format("select state, attempt from jobs where id = {}", job_id));
  if (job.empty())
    throw std::out_of_range(fmt::format("no job {}", job_id));
  out.job_id = job_id;
  out.state = job[0][0].c_str();
  out.attempt = job[0][1].as<std::int32_t>();
  auto events = tx.exec(fmt::format("select state, detail, (extract(epoch from at) * 1e6)::bigint from job_events "
                                    "where job_id = {} order by id", job_id));
  for (const auto& row : events)
    out.events.push_back({row[0].c_str(), row[1].c_str(), row[2].as<std::int64_t>()});
  return out;
}

// Jobs first (events and receipts refer to them), then the rest in arrival order.
void apply_all(pqxx::dbtransaction& tx, const std::vector<const operation*>& ops, std::vector<result<answer>>& out,
               const std::vector<std::size_t>& index);

} // namespace

struct store::connection {
  explicit connection(const std::string& url) : db(url) {}
  pqxx::connection db;
};

store::store(const std::string& url) : conn_(std::make_unique<connection>(url)), url_(url) {}
store::~store() = default;

result<startup_state> store::load_startup() {
  try {
    pqxx::work tx{conn_->db};
    startup_state s;
    auto last = tx.exec("select height, block_hash from blocks order by height desc limit 1");
    if (last.empty()) {
      s.prev_hash = std::string(64, '0');
    } else {
      s.next_height = last[0][0].as<std::int64_t>() + 1;
      s.prev_hash = last[0][1].c_str();
    }
    for (const auto& row : tx.exec("select substr(id, 8), balance from accounts where id like 'client:%'"))
      s.client_balances.emplace_back(row[0].c_str(), row[1].as<std::int64_t>());
    tx.commit();
    return s;
  } catch (const std::exception& e) {
    return make_error(errc::io_error, fmt::format("reading the ledger head from {}: {}", url_, e.what()));
  }
}

namespace {
void apply_all(pqxx::dbtransaction& tx, const std::vector<const operation*>& ops, std::vector<result<answer>>& out,
               const std::vector<std::size_t>& index) {
  std::vector<const insert_job*> jobs;
  std::vector<result<answer>*> job_answers;
  for (std::size_t i = 0; i < ops.size(); ++i)
    if (auto* j = std::get_if<insert_job>(ops[i])) {
      jobs.push_back(j);
      job_answers.push_back(&out[index[i]]);
    }
  if (!jobs.empty())
    insert_jobs(tx, jobs, job_answers);
  std::vector<job_event> events;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    auto& slot = out[index[i]];
    std::visit(
        [&](const auto& op) {
          using T = std::decay_t<decltype(op)>;
          if constexpr (std::is_same_v<T, record_events>) {
            events.insert(events.end(), op.events.begin(), op.events.end());
            slot = answer{};
          } else if constexpr (std::is_same_v<T, upsert_node>) {
            const auto& c = op.caps;
            tx.exec(fmt::format("insert into providers (public_key, role, name, device, price, capabilities) values "
                                "({},{},{},{},{},{}::jsonb) on conflict (public_key) do update set role = "
                                "excluded.role, name = excluded.name, device = excluded.device, price = "
                                "excluded.price, capabilities = excluded.capabilities, last_seen = now()",
                                tx.quote(c.public_key), tx.quote(c.role), tx.quote(c.name), tx.quote(c.device),
                                c.price, tx.quote(proto::capabilities_json(c).dump())));
            slot = answer{};
          } else if constexpr (std::is_same_v<T, save_receipt>) {
            const auto& r = op.receipt;
            tx.exec(fmt::format("insert into receipts (job_id, receipt_hash, model_hash, input_hash, output_hash, "
                                "trace_root, provider_key, price, attempt, started_at, finished_at, signature) values "
                                "({},{},{},{},{},{},{},{},{},{},{},{})",
                                op.job_id, tx.quote(verify::receipt_hash(r)), tx.quote(r.model_hash),
                                tx.quote(r.input_hash), tx.quote(r.output_hash), tx.quote(r.trace_root),
                                tx.quote(r.provider_key), r.price, r.attempt, r.started_at_us, r.finished_at_us,
                                tx.quote(r.signature)));
            slot = answer{};
          } else if constexpr (std::is_same_v<T, fund_client>) {
            apply_postings(tx, std::nullopt, 0, market::funding_postings(op.client_id, op.amount));
            slot = answer{};
          }
        },
        *ops[i]);
  }
  // Events before settlements: a job's EXECUTED/VERIFIED lands before its SETTLED.
  insert_events(tx, events);
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (auto* s = std::get_if<settle>(ops[i]))
      out[index[i]] = answer{apply_settlement(tx, s->batch)};
    else if (auto* r = std::get_if<read_status>(ops[i]))
      out[index[i]] = answer{read_job_status(tx, r->job_id)};
  }
}

} // namespace

std::vector<result<answer>> store::apply(const std::vector<operation>& ops) {
  std::vector<result<answer>> out(ops.size(), result<answer>{answer{}});
  std::vector<const operation*> all;
  std::vector<std::size_t> index;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    all.push_back(&ops[i]);
    index.push_back(i);
  }
  try {
    pqxx::work tx{conn_->db};
    apply_all(tx, all, out, index);
    tx.commit();
    return out;
  } catch (const std::exception&) {
    // Fall through: find the operation that failed by applying each alone.
  }
  for (std::size_t i = 0; i < ops.size(); ++i) {
    try {
      if (!conn_->db.is_open())
        conn_ = std::make_unique<connection>(url_);
      pqxx::work tx{conn_->db};
      apply_all(tx, {&ops[i]}, out, {i});
      tx.commit();
    } catch (const std::out_of_range& e) {
      out[i] = make_error(errc::unknown_job, e.what());
    } catch (const std::exception& e) {
      out[i] = make_error(errc::io_error, e.what());
    }
  }
  return out;
}

} // namespace haca::db
