#include "db/store.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <pqxx/pqxx>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "db/rows.hpp"
#include "verify/hash.hpp"

namespace haca::db {
namespace {

using core::job_state;

// A Postgres array literal, built element by element: the whole array travels as one
// statement parameter, so a commit of n rows is one statement whatever n is.
class array_param {
public:
  array_param& num(std::int64_t v) {
    sep();
    text_ += std::to_string(v);
    return *this;
  }
  array_param& str(std::string_view v) {
    sep();
    text_ += '"';
    for (char c : v) {
      if (c == '"' || c == '\\')
        text_ += '\\';
      text_ += c == '\0' ? '?' : c; // Postgres text cannot hold NUL; ids never do (checked at decode)
    }
    text_ += '"';
    return *this;
  }
  array_param& bytes(std::string_view v) {
    static constexpr char hex[] = "0123456789abcdef";
    sep();
    text_ += "\"\\\\x"; // bytea hex input, its backslash escaped for the array literal
    for (unsigned char c : v) {
      text_ += hex[c >> 4];
      text_ += hex[c & 15];
    }
    text_ += '"';
    return *this;
  }
  array_param& null() {
    sep();
    text_ += "NULL";
    return *this;
  }
  std::string done() const { return text_ + '}'; }

private:
  void sep() { text_ += first_ ? "" : ","; first_ = false; }
  std::string text_ = "{";
  bool first_ = true;
};

constexpr std::size_t max_detail_bytes = 1024; // of a job event's detail text

// A function's array parameters, in its argument order (db/migrations/003_write.sql).
using params = std::vector<std::string>;

template <class... Arrays>
void append(params& p, const Arrays&... arrays) {
  (p.push_back(arrays.done()), ...);
}

// Rows for haca_insert_jobs: jobs, each with its first assignment when it was assigned in
// the step that admitted it.
class job_rows {
public:
  void add(const core::job_spec& s, const core::job_transition* first_assignment) {
    const auto* t = first_assignment;
    id_.num(s.id);
    client_.str(s.client_id);
    request_.str(s.request_id);
    model_.str(s.model);
    input_hash_.str(s.input_hash);
    input_.bytes(s.input.data);
    shape_.str(kernels::shape_string(s.input.shape));
    tier_.str(s.tier);
    max_price_.num(s.max_price);
    deadline_.num(s.deadline_us);
    submitted_.num(s.submitted_us);
    key_.str(t ? t->provider_key : ""); // empty: not assigned yet
    price_.num(t ? t->price : 0);
    attempt_.num(t ? t->attempt : 0);
    detail_.str(t ? std::string_view(t->detail).substr(0, max_detail_bytes) : "");
    assigned_.num(t ? t->at_us : 0);
  }
  void append_to(params& p) const {
    append(p, id_, client_, request_, model_, input_hash_, input_, shape_, tier_, max_price_, deadline_, submitted_,
           key_, price_, attempt_, detail_, assigned_);
  }
  void append_requests_to(params& p) const { append(p, id_, client_, request_); } // for find_requests

private:
  array_param id_, client_, request_, model_, input_hash_, input_, shape_, tier_, max_price_, deadline_, submitted_,
      key_, price_, attempt_, detail_, assigned_;
};

// Rows for haca_transitions: job events, and the jobs rows they make newer.
class transition_rows {
public:
  void add(std::int64_t job_id, std::int32_t seq, job_state to, std::int32_t attempt, std::string_view provider_key,
           std::int64_t price, std::string_view detail, std::int64_t at_us) {
    job_.num(job_id);
    seq_.num(seq);
    state_.str(core::state_name(to));
    attempt_.num(attempt);
    key_.str(provider_key);
    price_.num(price);
    detail_.str(detail.substr(0, max_detail_bytes));
    at_.num(at_us);
    empty_ = false;
  }
  bool empty() const { return empty_; }
  void append_to(params& p) const { append(p, job_, seq_, state_, attempt_, key_, price_, detail_, at_); }

private:
  array_param job_, seq_, state_, attempt_, key_, price_, detail_, at_;
  bool empty_ = true;
};

// Rows for the receipts of EXECUTED transitions, with the output the client is sent.
class receipt_rows {
public:
  void add(const core::job_transition& t) {
    const auto& r = t.result->receipt;
    job_.num(t.job_id);
    attempt_.num(t.attempt);
    hash_.str(verify::receipt_hash(r));
    model_.str(r.model_hash);
    input_.str(r.input_hash);
    output_.str(r.output_hash);
    trace_.str(r.trace_root);
    key_.str(r.provider_key);
    price_.num(r.price);
    started_.num(r.started_at_us);
    finished_.num(r.finished_at_us);
    signature_.str(r.signature);
    output_bytes_.bytes(t.result->output.data);
    shape_.str(kernels::shape_string(t.result->output.shape));
    classes_.str(nlohmann::json(t.result->classes).dump());
    layers_.str(fmt::format("{}", fmt::join(t.result->layer_hashes, ",")));
  }
  void append_to(params& p) const {
    append(p, job_, attempt_, hash_, model_, input_, output_, trace_, key_, price_, started_, finished_, signature_,
           output_bytes_, shape_, classes_, layers_);
  }

private:
  array_param job_, attempt_, hash_, model_, input_, output_, trace_, key_, price_, started_, finished_, signature_,
      output_bytes_, shape_, classes_, layers_;
};

// ---- statements (prepared once per connection) ----

std::string us(const char* column) { return fmt::format("(extract(epoch from {}) * 1000000)::bigint", column); }
std::string placeholders(int n) {
  std::string s;
  for (int i = 1; i <= n; ++i)
    s += (i > 1 ? ", $" : "$") + std::to_string(i);
  return s;
}

void prepare(pqxx::connection& c) {
  // One commit's jobs, transitions and receipts (db/migrations/003_write.sql).
  c.prepare("write", "select haca_write(" + placeholders(40) + ")");
  // The job that holds each (client, request id), with its receipt when it has one.
  c.prepare("find_requests",
            std::string("select v.id as mine, j.id, j.state, ") + result_columns +
                " "
            "from unnest($1::bigint[], $2::text[], $3::text[]) as v (id, client_id, request_id) "
            "join jobs j on j.client_id = v.client_id and j.client_req_id = v.request_id "
            "left join receipts r on r.job_id = j.id and r.attempt = j.attempt");
  // A block with its members, postings and credits (db/migrations/007_block_rows.sql).
  c.prepare("settle_block", "select stored_hash, left_out from haca_settle_block(" + placeholders(17) + ")");
  c.prepare("credit_accounts", "insert into accounts (id, balance) select * from unnest($1::text[], $2::bigint[]) "
                               "on conflict (id) do update set balance = accounts.balance + excluded.balance");
  c.prepare("insert_postings",
            "insert into postings (block_height, job_id, account, amount, memo, ref) select * from unnest("
            "$1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[])");
  c.prepare("insert_ruling",
            "insert into disputes (job_id, attempt, verifier_key, provider_key, layer, provider_hash, verifier_hash, "
            "referee_hash, loser, detail, ruled_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
            "to_timestamp($11::double precision / 1000000)) on conflict do nothing");
  c.prepare("insert_admin_action",
            "insert into admin_actions (ref, who, action, target, value, taken_at) values ($1, $2, $3, $4, $5, "
            "to_timestamp($6::double precision / 1000000)) on conflict (ref) do nothing");
  c.prepare("open_accounts", "insert into accounts (id, balance) select unnest($1::text[]), 0 on conflict do nothing");
  c.prepare("claim_ref", "insert into postings (job_id, account, amount, memo, ref) values ($1, $2, $3, $4, $5) "
                         "on conflict (ref) where ref is not null do nothing returning id");
  c.prepare("upsert_node",
            "insert into providers (public_key, role, name, device, price, capabilities) values ($1, $2, $3, $4, $5, "
            "$6::jsonb) on conflict (public_key) do update set role = excluded.role, name = excluded.name, device = "
            "excluded.device, price = excluded.price, capabilities = excluded.capabilities, last_seen = now()");
}

const char* verdict_word(job_state s) {
  return s == job_state::verified ? "verified" : s == job_state::disputed ? "mismatch" : "unsampled";
}

// ---- applying records ----

class batch_writer {
public:
  batch_writer(pqxx::transaction_base& tx, const std::vector<core::record>& records) : tx_(tx), records_(records) {}

  // Kinds of records are applied in dependency order: accounts and nodes, jobs, their
  // transitions (receipts, verdicts), then blocks in height order. Each record depends only
  // on records of an earlier kind or earlier in the list, so this order is the list's.
  std::vector<core::outcome> run() {
    std::vector<core::outcome> out(records_.size());
    for (std::size_t i = 0; i < records_.size(); ++i) {
      if (const auto* t = std::get_if<core::transfer>(&records_[i]))
        post(*t);
      else if (const auto* n = std::get_if<core::node_seen>(&records_[i]))
        node(*n);
      else if (const auto* d = std::get_if<core::dispute_ruling>(&records_[i]))
        tx_.exec_prepared("insert_ruling", d->job_id, d->attempt, d->verifier_key, d->provider_key, d->layer,
                          d->provider_hash, d->verifier_hash, d->referee_hash, d->loser, d->detail, d->at_us);
      else if (const auto* a = std::get_if<core::admin_action>(&records_[i]))
        tx_.exec_prepared("insert_admin_action", a->ref, a->who, core::action_name(a->what), a->target, a->value,
                          a->at_us);
    }
    write(out);
    for (const auto& r : records_)
      if (const auto* b = std::get_if<core::block_commit>(&r))
        block(*b);
    return out;
  }

private:
  // A transfer is applied once: its first posting claims the ref; the others carry
  // "<ref>/<i>". A retried commit finds the ref taken and writes nothing.
  void post(const core::transfer& t) {
    if (t.postings.empty())
      return;
    array_param names;
    for (const auto& p : t.postings)
      names.str(p.account);
    tx_.exec_prepared("open_accounts", names.done());
    const std::optional<std::int64_t> job = t.job_id ? std::optional<std::int64_t>(t.job_id) : std::nullopt;
    const auto& first = t.postings.front();
    if (tx_.exec_prepared("claim_ref", job, first.account, first.amount, first.memo, t.ref).empty())
      return; // made before: a retried commit
    array_param height, jobs, accounts, amounts, memos, refs, credited, credits;
    for (std::size_t i = 1; i < t.postings.size(); ++i) {
      const auto& p = t.postings[i];
      height.null();
      if (job)
        jobs.num(*job);
      else
        jobs.null();
      accounts.str(p.account);
      amounts.num(p.amount);
      memos.str(p.memo);
      refs.str(t.ref + "/" + std::to_string(i));
    }
    for (const auto& p : t.postings) {
      credited.str(p.account);
      credits.num(p.amount);
    }
    if (t.postings.size() > 1)
      tx_.exec_prepared("insert_postings", height.done(), jobs.done(), accounts.done(), amounts.done(), memos.done(),
                        refs.done());
    tx_.exec_prepared("credit_accounts", credited.done(), credits.done());
  }

  void node(const core::node_seen& n) {
    const auto& c = n.caps;
    tx_.exec_prepared("upsert_node", c.public_key, c.role, c.name, c.device, c.price,
                      proto::capabilities_json(c).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }

  // Jobs, transitions and the receipts of the EXECUTED ones, in one statement. The first
  // assignment of a job inserted in this commit goes in with the job (haca_insert_jobs).
  void write(std::vector<core::outcome>& out) {
    std::map<std::int64_t, const core::job_transition*> first_assignment;
    for (const auto& r : records_)
      if (const auto* t = std::get_if<core::job_transition>(&r); t && t->seq == 2 && t->to == job_state::assigned)
        first_assignment.emplace(t->job_id, t);
    job_rows jobs;
    std::set<const core::job_transition*> folded;
    std::vector<std::size_t> job_records; // indexes in records_
    for (std::size_t i = 0; i < records_.size(); ++i)
      if (const auto* ins = std::get_if<core::job_insert>(&records_[i])) {
        const auto a = first_assignment.find(ins->spec.id);
        const core::job_transition* t = a == first_assignment.end() ? nullptr : a->second;
        if (t)
          folded.insert(t);
        jobs.add(ins->spec, t);
        job_records.push_back(i);
      }
    transition_rows transitions;
    receipt_rows receipts;
    bool any_transition = false;
    for (const auto& rec : records_) {
      const auto* t = std::get_if<core::job_transition>(&rec);
      if (!t || folded.count(t))
        continue;
      any_transition = true;
      transitions.add(t->job_id, t->seq, t->to, t->attempt, t->provider_key, t->price, t->detail, t->at_us);
      if (t->result)
        receipts.add(*t);
    }
    if (job_records.empty() && !any_transition)
      return;
    params p;
    jobs.append_to(p);
    transitions.append_to(p);
    receipts.append_to(p);
    const auto inserted = tx_.exec_prepared1("write", pqxx::prepare::make_dynamic_params(p))[0].as<std::size_t>();
    if (inserted < job_records.size())
      find_holders(jobs, job_records, out);
  }

  // Some request ids were stored before, by an earlier try of this commit (then the pair is
  // held by our own id) or by another job (a duplicate: the outcome names it).
  void find_holders(const job_rows& jobs, const std::vector<std::size_t>& job_records,
                    std::vector<core::outcome>& out) {
    params p;
    jobs.append_requests_to(p);
    std::map<std::int64_t, pqxx::row> holder;
    for (const auto& row : tx_.exec_prepared("find_requests", pqxx::prepare::make_dynamic_params(p)))
      holder.emplace(row["mine"].as<std::int64_t>(), row);
    for (auto i : job_records) {
      const auto& s = std::get<core::job_insert>(records_[i]).spec;
      auto h = holder.find(s.id);
      if (h == holder.end())
        throw bad_record(fmt::format("job {} of client '{}' is neither stored nor held by another job (is job id {} "
                                     "taken?)",
                                     s.id, s.client_id, s.id),
                         {s.id});
      const auto& row = h->second;
      const auto existing = row["id"].as<std::int64_t>();
      if (existing == s.id)
        continue;
      core::existing_job x;
      x.job_id = existing;
      x.state = core::parse_state(row["state"].c_str()).value_or(job_state::queued);
      x.result = result_of(row, existing);
      out[i].what = core::outcome::kind::duplicate;
      out[i].existing = std::move(x);
    }
  }

  // A block in a constant number of rows, in one statement: its own row (with its members in
  // Merkle order), one update of its members' job rows, one posting per account and memo.
  void block(const core::block_commit& bc) {
    const auto& b = bc.block;
    array_param job, attempt, seq, verdict;
    // (account, memo) -> sum; views into the block's postings, which outlive it
    std::map<std::pair<std::string_view, std::string_view>, std::int64_t> per_account;
    for (const auto& it : bc.items) {
      job.num(it.job_id);
      attempt.num(it.attempt);
      seq.num(it.seq);
      verdict.str(verdict_word(it.verdict));
      if (!market::balanced(it.postings))
        throw bad_record(fmt::format("block {}: the postings of job {} do not sum to zero", b.height, it.job_id),
                         {it.job_id});
      for (const auto& p : it.postings)
        per_account[{p.account, p.memo}] += p.amount;
    }
    array_param accounts, amounts, memos;
    for (const auto& [key, amount] : per_account) {
      accounts.str(key.first);
      amounts.num(amount);
      memos.str(key.second);
    }
    const auto row = tx_.exec_prepared1("settle_block", b.height, b.prev_hash, b.batch_root, b.receipts,
                                        b.total_amount, bc.block_hash, b.signer_key, b.signature, b.created_at_us,
                                        bc.fee_bps, job.done(), attempt.done(), seq.done(), verdict.done(),
                                        accounts.done(), amounts.done(), memos.done());
    if (!row["stored_hash"].is_null()) {
      const std::string stored = row["stored_hash"].c_str();
      if (stored == bc.block_hash)
        return; // this very block, committed by an earlier try
      throw bad_record(fmt::format("block {} is already stored with hash {}, this one is {}: a fork", b.height,
                                   stored.substr(0, 16), bc.block_hash.substr(0, 16)));
    }
    const auto left_out = int_array(row["left_out"].c_str());
    if (!left_out.empty())
      throw bad_record(fmt::format("block {}: {} of {} jobs have no stored receipt, are settled already or have moved "
                                   "on (first: job {})",
                                   b.height, left_out.size(), bc.items.size(), left_out.front()),
                       left_out);
  }

  // "{1,2,3}" (a Postgres bigint[] as text) as numbers.
  static std::vector<std::int64_t> int_array(std::string_view text) {
    std::vector<std::int64_t> out;
    std::int64_t v = 0;
    bool in_number = false;
    for (char c : text) {
      if (c >= '0' && c <= '9') {
        v = v * 10 + (c - '0');
        in_number = true;
      } else if (in_number) {
        out.push_back(v);
        v = 0;
        in_number = false;
      }
    }
    return out;
  }

  pqxx::transaction_base& tx_;
  const std::vector<core::record>& records_;
};

// SQLSTATE classes that mean "this data is wrong" (retrying cannot help): data exceptions,
// integrity violations, syntax or access rule violations, raised exceptions.
bool permanent(const std::string& sqlstate) {
  auto cls = sqlstate.substr(0, 2);
  return cls == "22" || cls == "23" || cls == "42" || cls == "P0" || cls == "2F";
}

} // namespace

struct store::connection {
  explicit connection(const std::string& url) : db(url) {
    // The statements take arrays of any length; a plan built for each call's lengths costs more
    // than the statement itself (0.2 of 0.5 ms for a one-row transition), and a generic plan is
    // the same index look-ups.
    db.set_variable("plan_cache_mode", "force_generic_plan");
    prepare(db);
  }
  pqxx::connection db;
};

store::store(std::string url) : url_(std::move(url)) {}
store::~store() = default;

store::connection& store::conn() {
  if (!conn_ || !conn_->db.is_open())
    conn_ = std::make_unique<connection>(url_);
  return *conn_;
}

namespace {

// One record, or all, in one transaction: ok, or the exception that stopped it. Jobs,
// transitions and receipts alone are one statement (haca_write), and so is a block alone
// (haca_settle_block): sent without BEGIN and COMMIT, Postgres runs a lone statement as a
// transaction of its own, in one round trip. (A look-up of request ids stored before may
// follow haca_write; it only reads.)
std::vector<core::outcome> apply_in(pqxx::connection& c, const std::vector<core::record>& records) {
  const bool one_statement =
      (records.size() == 1 && std::holds_alternative<core::block_commit>(records.front())) ||
      std::all_of(records.begin(), records.end(), [](const core::record& r) {
        return std::holds_alternative<core::job_insert>(r) || std::holds_alternative<core::job_transition>(r);
      });
  if (one_statement) {
    pqxx::nontransaction tx{c};
    return batch_writer{tx, records}.run();
  }
  pqxx::work tx{c};
  auto out = batch_writer{tx, records}.run();
  tx.commit();
  return out;
}

} // namespace

std::variant<std::vector<core::outcome>, transient_error> store::apply(const std::vector<core::record>& records) {
  auto transient = [&](const std::string& why) {
    conn_.reset(); // a fresh connection next time (prepared statements included)
    return transient_error{why};
  };
  try {
    return apply_in(conn().db, records);
  } catch (const bad_record&) {
  } catch (const pqxx::sql_error& e) {
    if (!permanent(e.sqlstate()))
      return transient(e.what());
  } catch (const pqxx::failure& e) { // broken connection, commit in doubt, ...
    return transient(e.what());
  } catch (const std::exception& e) {
    return transient(e.what());
  }
  // Some record is bad: apply each alone, so only it fails.
  std::vector<core::outcome> out(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    try {
      out[i] = apply_in(conn().db, {records[i]}).front();
    } catch (const bad_record& e) {
      out[i] = {core::outcome::kind::rejected, e.what(), std::nullopt, e.bad_jobs};
    } catch (const pqxx::sql_error& e) {
      if (!permanent(e.sqlstate()))
        return transient(e.what());
      out[i] = {core::outcome::kind::rejected, e.what(), std::nullopt, {}};
    } catch (const std::exception& e) {
      return transient(e.what());
    }
  }
  return out;
}

result<core::snapshot> store::load_snapshot() {
  try {
    pqxx::read_transaction tx{conn().db};
    core::snapshot s;
    auto head = tx.exec("select height, block_hash from blocks order by height desc limit 1");
    if (!head.empty()) {
      s.next_height = head[0][0].as<std::int64_t>() + 1;
      s.prev_hash = head[0][1].c_str();
    }
    s.next_job_id = tx.exec1("select coalesce(max(id), 0) + 1 from jobs")[0].as<std::int64_t>();
    // Read once at start (recovery reads the whole table anyway); the metrics keep it up to date.
    for (const auto& row : tx.exec("select state, count(*) from jobs group by state"))
      if (auto st = core::parse_state(row[0].c_str()))
        s.jobs_by_state[*st] = row[1].as<std::int64_t>();
    // The operators' standing orders: the newest action per node (ban/unban, drain/undrain)
    // and per setting.
    for (const auto& row : tx.exec("select distinct on (target, action in ('ban', 'unban')) target, action from "
                                   "admin_actions where action in ('ban', 'unban', 'drain', 'undrain') order by "
                                   "target, action in ('ban', 'unban'), id desc")) {
      const std::string action = row[1].c_str();
      if (action == "ban")
        s.banned.insert(row[0].c_str());
      else if (action == "drain")
        s.drained.insert(row[0].c_str());
    }
    for (const auto& row : tx.exec("select distinct on (action) action, value from admin_actions where action in "
                                   "('fee', 'sample_rate') order by action, id desc")) {
      if (std::string(row[0].c_str()) == "fee")
        s.fee_bps = static_cast<int>(row[1].as<std::int64_t>());
      else
        s.sample_rate = static_cast<double>(row[1].as<std::int64_t>()) / 1e6;
    }
    for (const auto& row : tx.exec("select substr(id, 8), balance from accounts where id like 'client:%'"))
      s.client_balances.emplace(row[0].c_str(), row[1].as<std::int64_t>());
    // A funding transfer is two postings: the mint's (it claims the ref) and the credited
    // account's ("<ref>/1").
    for (const auto& row : tx.exec("select substr(ref, 8) from postings where ref like 'faucet:%' and ref not like "
                                   "'%/%'"))
      s.funded.insert(row[0].c_str());
    for (const auto& row : tx.exec_params("select split_part(ref, '/', 1), account, amount from postings where ref "
                                          "like 'deposit:%' and account <> $1",
                                          std::string(market::mint_account)))
      s.deposits[row[0].c_str()] = {row[1].c_str(), row[2].as<std::int64_t>()};
    for (const auto& row : tx.exec("select substr(id, 10), balance from accounts where id like 'provider:%'"))
      s.node_balances.emplace(row[0].c_str(), row[1].as<std::int64_t>());
    for (const auto& row : tx.exec("select substr(id, 7), balance from accounts where id like 'stake:%'"))
      s.node_stakes.emplace(row[0].c_str(), row[1].as<std::int64_t>());
    // Rulings: of open jobs, for the slashes owed when they settle; of settled jobs whose
    // slashes are not stored (a crash between the block and them), to slash now.
    std::map<std::int64_t, core::ruling_parties> rulings;
    std::vector<core::settled_job> settled_rulings;
    for (const auto& row : tx.exec(
             "select d.job_id, d.verifier_key, d.loser, j.state, j.client_id, r.provider_key, r.price, "
             "coalesce(case when j.attempt = d.attempt then j.verdict end, '') from disputes d join jobs j on j.id = "
             "d.job_id join receipts r on r.job_id = d.job_id and r.attempt = d.attempt where j.state in ('VERIFIED', 'DISPUTED', 'SETTLED') and not exists "
             "(select 1 from postings p where p.ref in ('slash:' || d.job_id || ':provider', 'slash:' || d.job_id || "
             "':verifier')) order by d.job_id")) {
      const auto id = row[0].as<std::int64_t>();
      const std::string verifier = row[1].c_str(), loser = row[2].c_str(), state = row[3].c_str();
      auto& r = rulings[id];
      const bool disputed = state == "DISPUTED" || std::string(row[7].c_str()) == "mismatch";
      r.provider_lost = r.provider_lost || loser != "verifier" || disputed;
      if (loser == "provider")
        r.honest_verifier = verifier;
      else
        r.liar_verifier = verifier;
      if (state == "SETTLED") {
        core::settled_job sj;
        sj.job_id = id;
        sj.client_id = row[4].c_str();
        sj.provider_key = row[5].c_str();
        sj.price = row[6].as<std::int64_t>();
        sj.verdict = disputed ? core::job_state::disputed : core::job_state::verified;
        settled_rulings.push_back(std::move(sj));
      }
    }
    for (auto& sj : settled_rulings) {
      sj.ruling = rulings.at(sj.job_id);
      s.unslashed.push_back(std::move(sj));
    }
    for (const auto& row : tx.exec("select r.provider_key, count(*) filter (where j.verdict = 'verified'), "
                                   "count(*) filter (where j.verdict = 'mismatch') from jobs j join receipts r on "
                                   "r.job_id = j.id and r.attempt = j.attempt where j.verdict in ('verified', "
                                   "'mismatch') group by r.provider_key"))
      s.provider_verdicts[row[0].c_str()] = {row[1].as<std::int64_t>(), row[2].as<std::int64_t>()};
    for (const auto& row : tx.exec("select verifier_key, count(*) from disputes where loser in ('verifier', 'both') "
                                   "group by verifier_key"))
      s.verifier_lies[row[0].c_str()] = row[1].as<int>();
    auto jobs = tx.exec(
        "select j.id, j.client_id, j.client_req_id, j.model_hash, j.tier, j.max_price, coalesce(" + us("j.deadline") +
        ", 0) as deadline_us, j.input, j.input_shape, j.input_hash, " + us("j.submitted_at") +
        " as submitted_us, j.state, j.attempt, j.seq, coalesce(j.provider_key, '') as provider_key, "
        "coalesce(j.price, 0) as price, coalesce(p.capabilities->>'operator_key', '') as provider_operator, " +
        us("j.updated_at") +
        " as updated_us, " + result_columns +
        ", case when j.client_req_id ~ '^rerun:[0-9]{1,18}$' then (select pr.provider_key from jobs pj join receipts "
        "pr on pr.job_id = pj.id and pr.attempt = pj.attempt where pj.id = substr(j.client_req_id, 7)::bigint) end "
        "as avoid_provider "
        "from jobs j left join receipts r on r.job_id = j.id and r.attempt = j.attempt "
        "left join providers p on p.public_key = j.provider_key "
        "where j.state not in ('SETTLED', 'FAILED', 'EXPIRED', 'CANCELLED') order by j.id");
    for (const auto& row : jobs) {
      core::stored_job j;
      auto& spec = j.spec;
      spec.id = row["id"].as<std::int64_t>();
      spec.client_id = row["client_id"].c_str();
      spec.request_id = row["client_req_id"].c_str();
      spec.model = row["model_hash"].c_str();
      spec.tier = row["tier"].c_str();
      spec.max_price = row["max_price"].as<std::int64_t>();
      spec.deadline_us = row["deadline_us"].as<std::int64_t>();
      spec.input.type = kernels::dtype::i8;
      spec.input.data = bytes_of(row["input"]);
      spec.input.shape = parse_shape(row["input_shape"].c_str());
      spec.input_hash = row["input_hash"].c_str();
      spec.submitted_us = row["submitted_us"].as<std::int64_t>();
      auto state = core::parse_state(row["state"].c_str());
      if (!state)
        return make_error(errc::io_error, fmt::format("job {} has an unknown state '{}'", spec.id, row["state"].c_str()));
      j.state = *state;
      j.attempt = row["attempt"].as<std::int32_t>();
      j.seq = row["seq"].as<std::int32_t>();
      j.provider_key = row["provider_key"].c_str();
      j.provider_operator = row["provider_operator"].c_str();
      j.price = row["price"].as<std::int64_t>();
      j.updated_us = row["updated_us"].as<std::int64_t>();
      j.result = result_of(row, spec.id);
      if (!row["avoid_provider"].is_null())
        j.avoid_provider = row["avoid_provider"].c_str(); // a re-run: not on the provider that lost
      if (auto r = rulings.find(spec.id); r != rulings.end()) {
        j.ruling = r->second;
        if (j.ruling.provider_lost)
          j.ruling.input = spec.input; // for its re-run
      }
      s.open_jobs.push_back(std::move(j));
    }
    // Jobs settled DISPUTED after a ruling whose re-run ("rerun:<id>") is not stored.
    for (const auto& row : tx.exec(
             "select j.id, j.client_id, j.client_req_id, j.model_hash, j.tier, j.max_price, coalesce(" +
             us("j.deadline") + ", 0), " + us("j.submitted_at") +
             ", j.input, j.input_shape, r.provider_key from jobs j join receipts r on r.job_id = j.id and r.attempt = "
             "j.attempt where j.state = 'SETTLED' and j.verdict = 'mismatch' and exists (select 1 from disputes d "
             "where d.job_id = j.id) and not exists (select 1 from jobs c where c.client_id = j.client_id and "
             "c.client_req_id = 'rerun:' || j.id) order by j.id")) {
      core::rerun_owed owed;
      auto& spec = owed.parent;
      spec.id = row[0].as<std::int64_t>();
      spec.client_id = row[1].c_str();
      spec.request_id = row[2].c_str();
      spec.model = row[3].c_str();
      spec.tier = row[4].c_str();
      spec.max_price = row[5].as<std::int64_t>();
      spec.deadline_us = row[6].as<std::int64_t>();
      spec.submitted_us = row[7].as<std::int64_t>();
      spec.input.type = kernels::dtype::i8;
      spec.input.data = bytes_of(row[8]);
      spec.input.shape = parse_shape(row[9].c_str());
      owed.provider_key = row[10].c_str();
      s.reruns.push_back(std::move(owed));
    }
    return s;
  } catch (const std::exception& e) {
    return make_error(errc::io_error, fmt::format("reading what {} committed: {}", url_, e.what()));
  }
}

} // namespace haca::db
