#pragma once
// What the coordinator's cores exchange with the world, as data: records to persist (and how
// each commit turned out), messages to send, hand-offs from one core to the next, and the
// snapshot a core is rebuilt from after a restart. Pure: no CAF, ZeroMQ or pqxx.
//
// Persist before you tell: a core emits a record, and only when the commit of that record is
// confirmed (a `committed` event) does it emit the messages and hand-offs that depend on it.
// Every record is idempotent (job by client + request id and by job id, transition by
// job + seq, receipt by job + attempt, block by height + hash, transfer by ref), so a store
// may apply the same record twice after a lost confirmation.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "core/job_state.hpp"
#include "kernels/tensor.hpp"
#include "market/ledger.hpp"
#include "market/reputation.hpp"
#include "proto/commands.hpp"
#include "verify/receipt.hpp"

namespace haca::core {

using micros = market::micros;
using time_us = std::int64_t; // unix microseconds

// What a client asked for, as admitted.
struct job_spec {
  std::int64_t id = 0;
  std::string client_id;
  std::string request_id;
  std::string model;
  std::string tier;              // none | sampled | full
  micros max_price = 0;
  time_us deadline_us = 0;       // absolute; 0 = none
  kernels::tensor input;
  std::string input_hash;
  time_us submitted_us = 0;
};

// An accepted DONE: what the client is sent in RESULT (and STATUS).
struct execution_result {
  std::vector<std::int32_t> classes;
  kernels::tensor output;
  verify::receipt receipt;
  std::vector<std::string> layer_hashes; // the provider's, from its DONE (stored with the receipt, for disputes)
};

// ---- records ----

// A new job, stored as QUEUED (seq 1) with its first events, SUBMITTED (seq 0) and QUEUED
// (seq 1); the job's own transitions start at seq 2. Idempotent by job id and by
// (client_id, request_id): when another job already holds that pair the outcome is `duplicate`.
struct job_insert {
  job_spec spec;
};

// One state change of a job: a job_events row (job_id, seq) and the jobs row when seq is newer
// than the stored one. `result` stores the receipt and output (to = executed). The verdict is
// written on the receipt when its block settles it.
struct job_transition {
  std::int64_t job_id = 0;
  std::int32_t seq = 0;
  job_state from = job_state::submitted;
  job_state to = job_state::submitted;
  std::int32_t attempt = 0;
  std::string provider_key;      // "" = unchanged
  micros price = 0;              // to = assigned: the provider's price, which its receipt must carry
  std::string detail;
  time_us at_us = 0;
  std::optional<execution_result> result;
};

// A node seen (HELLO): the providers table, for operators.
struct node_seen {
  proto::capabilities caps;
  time_us at_us = 0;
};

// Money moved outside a block, once per ref; its postings sum to zero. A DEPOSIT by the admin
// key or the demo faucet's grant (mint -> client:<id> or provider:<key>), a node's stake held
// when it joins (provider:<key> -> stake:<key>) and released after it left, and the slashes
// that follow a dispute's ruling. The ref's prefix ("deposit", "faucet", "stake", "unstake",
// "slash") names what it is.
struct transfer {
  std::vector<market::posting> postings;
  std::string ref;
  std::int64_t job_id = 0;       // a slash: the job whose ruling it carries out; 0 = none
  time_us at_us = 0;
};

// What a job's dispute ruling decided about money: the slashes carried out when its block
// settles (core/stake.hpp says how much).
struct ruling_parties {
  bool provider_lost = false;    // its stake pays the client's compensation (and the verifier's reward)
  std::string honest_verifier;   // the verifier that was right against a lying provider: rewarded
  std::string liar_verifier;     // a verifier the referee caught: its stake is taken
  kernels::tensor input;         // provider_lost: the job's input, for its re-run on another provider
  bool any() const { return provider_lost || !liar_verifier.empty(); }
};

// A job settled DISPUTED against its provider whose re-run is not stored yet (a restart came
// in between): its spec with the input, and the provider to avoid.
struct rerun_owed {
  job_spec parent;
  std::string provider_key;
};

// One receipt settled in a block.
struct settled_item {
  std::int64_t job_id = 0;
  std::int32_t attempt = 0;
  std::int32_t seq = 0;          // of the job's SETTLED transition
  std::string client_id;
  verify::receipt receipt;
  job_state verdict = job_state::unsampled;
  micros charged = 0;            // what the client pays (0 when refunded)
  std::vector<market::posting> postings; // sum to zero; empty when nothing is charged
  ruling_parties ruling;
};

// A signed block and everything it settles, committed in one transaction. Idempotent by
// height: a stored block of the same height and hash is this block; another hash is a fork.
struct block_commit {
  verify::block block;
  std::string block_hash;
  int fee_bps = 0;               // the fee rate its postings charged (stored; not signed)
  std::vector<settled_item> items;
};

// A dispute's ruling with its evidence: the trace layer the two sides first disagree on, what
// each signed for it and what the referee computed. Idempotent by (job, attempt, verifier).
struct dispute_ruling {
  std::int64_t job_id = 0;
  std::int32_t attempt = 0;
  std::string provider_key;
  std::string verifier_key;
  std::int32_t layer = -1;       // the trace layer re-run; -1: the whole job (no bisection possible)
  std::string provider_hash;     // its layer hash (or trace root) there, and its output hash
  std::string verifier_hash;
  std::string referee_hash;
  std::string loser;             // "provider" | "verifier" | "both"
  std::string detail;
  time_us at_us = 0;
};

// An operator's action through the admin API, with who took it: the audit trail. Idempotent by
// ref. Bans, drains and the settings are rebuilt from these rows at a restart (the newest per
// node or setting wins over the config file).
struct admin_action {
  enum class kind : std::uint8_t { drain, undrain, ban, unban, fee, sample_rate, deposit };
  std::string ref;               // unique per action ("admin:<who>:<request id>")
  std::string who;               // the admin token's name
  kind what = kind::drain;
  std::string target;            // drain..unban: a node key; deposit: the account credited; else ""
  std::int64_t value = 0;        // fee: basis points; sample_rate: parts per million; deposit: micro-units
  time_us at_us = 0;
};
const char* action_name(admin_action::kind k);
std::optional<admin_action::kind> parse_action(const std::string& name);

using record = std::variant<job_insert, job_transition, node_seen, transfer, block_commit, dispute_ruling, admin_action>;

// How one record's commit turned out.
struct existing_job {             // the job that already holds a (client, request id)
  std::int64_t job_id = 0;
  job_state state = job_state::queued;
  std::optional<execution_result> result;
};
struct outcome {
  enum class kind : std::uint8_t { ok, duplicate, rejected };
  kind what = kind::ok;
  std::string reason;             // rejected: why (logged); the record was not applied
  std::optional<existing_job> existing; // duplicate
  std::vector<std::int64_t> bad_jobs;   // rejected block: the items that made it fail
};

// ---- messages out ----

enum class port : std::uint8_t { client, node };

struct outbound {
  port to = port::client;
  std::string identity;          // ZeroMQ routing identity
  proto::message msg;
};

// ---- hand-offs between cores (each released after the record it follows is committed) ----

// A node's HELLO (an event of the execution core, which admits every node: its stake). A
// verifier's is handed on to the verification core once admitted.
struct node_hello {
  std::string identity;
  proto::capabilities caps;      // signature already checked by the codec
};
// verification -> execution: a verifier's session ended (its stake's cool-down starts).
struct node_left {
  std::string key;
  std::string role;
};

// execution -> verification: an executed job.
struct executed_job {
  std::int64_t job_id = 0;
  std::int32_t attempt = 0;
  std::int32_t seq = 0;          // of the EXECUTED transition
  std::string client_id;
  std::string tier;
  verify::receipt receipt;
  std::string provider_operator; // the operator key the provider declared, or ""
  kernels::tensor input;         // for blind re-execution
  std::vector<std::string> provider_layers; // its trace layer hashes, for bisection (also after a restart: stored with the receipt)
};

// verification -> settlement: a job with its verdict.
struct judged_job {
  std::int64_t job_id = 0;
  std::int32_t attempt = 0;
  std::int32_t seq = 0;          // of the verdict transition
  std::string client_id;
  verify::receipt receipt;
  job_state verdict = job_state::unsampled; // verified | unsampled | disputed
  ruling_parties ruling;         // after a referee's ruling: who is slashed
};

// settlement -> execution: a job is in a committed block.
struct settled_job {
  std::int64_t job_id = 0;
  std::string client_id;
  micros charged = 0;
  std::string provider_key;      // whose receipt settled
  job_state verdict = job_state::unsampled; // verified and disputed ones count toward its reputation
  micros price = 0;              // the receipt's price
  micros earned = 0;             // what the provider's account got
  ruling_parties ruling;         // the slashes owed
};

// verification -> the adapter: the referee's re-run of one trace layer of a disputed job (or of
// the whole job when the provider's layer hashes are not at hand), answered with a
// referee_checked event.
struct referee_task {
  enum class mode : std::uint8_t {
    one_layer,  // run trace layer `layer` on `entering`, the agreed activation entering it
    from_input, // `entering` is the job's input: run trace layers 0..layer (no party sent the activation)
    whole_job,  // `entering` is the job's input: run the whole model
  };
  std::int64_t job_id = 0;
  std::string model;
  mode how = mode::one_layer;
  std::int32_t layer = 0;
  kernels::tensor entering;
  kernels::tensor input;         // the job's input (one_layer): used instead when `entering` does not fit the layer
};
struct referee_result {
  std::string layer_hash;        // of trace layer `layer` (one_layer, from_input)
  std::string output_hash;       // SHA-256 of the output, when the run reached the last layer
  std::string trace_root;        // whole_job only
};

// A STATUS for a job no longer in memory: answered from Postgres by a reader, not a core.
struct job_lookup { // a client_query for the reader
  std::string identity;
  std::string account;           // the asker: a job of another account is `forbidden`
  std::int64_t job_id = 0;
  std::string command = "STATUS";
};

// A SUBMIT this core would refuse for good (no funds) for a request id it does not hold:
// it may be the resend of a job that settled long ago, which only Postgres still knows. A
// reader looks the id up and answers with a `request_found` event.
struct request_lookup {
  std::string identity;
  std::string client_id;
  std::string request_id;
  error refusal;                 // what the client gets when no job holds the id
};

// What one step asks the adapter to do, in this order: persist `records` (in order), send
// `messages` (in order), hand off, look up, and call `tick` again at `wake_at_us`.
struct effects {
  std::vector<record> records;
  std::vector<outbound> messages;
  std::vector<executed_job> to_verification;
  std::vector<judged_job> to_settlement;
  std::vector<settled_job> to_execution;
  std::vector<node_hello> admitted_verifiers; // execution -> verification: staked (or no stake needed)
  std::vector<node_left> nodes_left;          // verification -> execution: a verifier's stake cools down
  std::vector<admin_action> orders;           // execution -> verification and settlement: committed admin actions
  std::vector<job_lookup> lookups;
  std::vector<request_lookup> request_lookups;
  std::vector<referee_task> referee_tasks;
  time_us wake_at_us = 0;         // 0 = no timer wanted
  std::vector<std::string> errors; // broken invariants (an illegal transition): log loudly
  std::vector<std::string> notes;  // notable events (a provider lost, a job failed): log
};

// ---- recovery ----

// A job as Postgres has it, for a core being rebuilt.
struct stored_job {
  job_spec spec;
  job_state state = job_state::queued;
  std::int32_t attempt = 0;
  std::int32_t seq = 0;
  std::string provider_key;
  std::string provider_operator; // the operator key the provider declared (its stored HELLO), or ""
  micros price = 0;              // of the current assignment
  time_us updated_us = 0;
  std::optional<execution_result> result; // the receipt and output, once executed
  ruling_parties ruling;         // judged after a referee's ruling (disputes table)
  std::string avoid_provider;    // a re-run ("rerun:<id>"): the provider that lost that job's ruling
};

// Everything the cores need after a restart: what Postgres committed, nothing else.
struct snapshot {
  std::vector<stored_job> open_jobs;            // every job not in a final state
  std::map<std::string, micros> client_balances; // client id -> balance (accounts client:<id>)
  std::set<std::string> funded;                 // clients whose faucet grant is stored
  std::map<std::string, std::pair<std::string, micros>> deposits; // stored deposits: ref -> (account, amount)
  std::int64_t next_job_id = 1;
  std::int64_t next_height = 0;
  std::string prev_hash = std::string(64, '0');
  std::map<std::string, market::verdict_record> provider_verdicts; // by provider key, from settled receipts
  std::map<std::string, int> verifier_lies;     // by verifier key: rulings it lost (disputes table)
  std::map<std::string, micros> node_balances;  // by node key: accounts provider:<key>
  std::map<std::string, micros> node_stakes;    // by node key: accounts stake:<key>
  std::vector<settled_job> unslashed;           // settled after a ruling whose slashes are not stored
  std::vector<rerun_owed> reruns;               // settled against the provider, re-run not stored
  std::map<job_state, std::int64_t> jobs_by_state; // every stored job, by its state (for operators)
  // The operators' standing orders (admin_actions): the newest per node or setting.
  std::set<std::string> banned;                 // node keys
  std::set<std::string> drained;                // node keys
  std::optional<int> fee_bps;                   // set at run time, over the config's
  std::optional<double> sample_rate;
};

} // namespace haca::core
