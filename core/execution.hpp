#pragma once
// The execution core: admission and escrow holds, per-client queues, provider sessions,
// credit, assignment, attempts, deadlines in every state, assignment timeouts, results.
// A deterministic state machine: step(event, now) -> effects. It owns every fact it decides
// (credit, holds, attempts), so no two counts can disagree; the `job_queue` actor only
// decodes into events and carries out the effects.
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "core/events.hpp"
#include "core/stake.hpp"
#include "market/ledger.hpp"
#include "scheduler/queue_policy.hpp"

namespace haca::core {

// What a model takes and gives: i8 [rows, input_dim] in, i8 [rows, output_dim] out.
struct model_shape {
  int input_dim = 0;
  int output_dim = 0;
};

struct execution_config {
  std::map<std::string, model_shape> models; // by model hash
  int max_rows = 64;                  // rows per job
  std::size_t max_waiting = 100000;   // jobs admitted and not yet executed, all clients
  std::size_t max_client_waiting = 20000; // the same, per client
  std::size_t max_open = 400000;      // jobs in memory (not yet settled): bounds memory
  int max_attempts = 3;
  micros faucet = 0;                  // demo switch: granted to an account never funded; 0 = none
  std::string admin_account;          // the CURVE key (hex) whose DEPOSITs are obeyed; "" = none
  std::int64_t default_deadline_ms = 600000;
  int heartbeat_ms = 500;             // a node silent for 3 intervals is lost
  std::int64_t assign_timeout_ms = 30000; // an assigned job without DONE/FAIL is re-queued
  std::int32_t max_credit = 4096;     // READY credit a session may hold
  int min_reputation = 0;             // permille: providers below it get no JOB (0 = no floor)
  std::size_t max_lookups = 256;      // request_lookups in flight; past that a refusal is sent as is
  std::string coordinator_key;        // sent in WELCOME
  stake_config stake;                 // what a node (provider or verifier) must have at stake to join
};

using execution_event = std::variant<client_submit, client_query, client_deposit, admin_order, request_found, node_hello,
                                     node_ready, node_heartbeat, node_left, node_done, node_fail, node_gone, committed,
                                     jobs_settled, tick, drain>;

class execution_core {
public:
  explicit execution_core(execution_config cfg);
  // A provider's reputation (permille): market::reputation of its settled verdicts; matching
  // skips providers below min_reputation and prefers the better one at equal price.
  int reputation_of(const std::string& provider_key) const;
  // Rebuilt from what Postgres committed: queued jobs run, assigned ones are re-queued when
  // their provider does not come back within the liveness timeout, executed ones are owed to
  // the verification core (recover that one from the same snapshot), holds and balances exact.
  static execution_core recover(execution_config cfg, const snapshot& s, time_us now);

  effects step(const execution_event& ev, time_us now);

  // Read-only views for tests, the simulator and metrics.
  struct job_view {
    job_state state;
    job_state durable;
    std::int32_t attempt;
    std::string provider_key;
    time_us submitted_us;
  };
  std::optional<job_view> job(std::int64_t id) const;
  std::size_t open_jobs() const { return jobs_.size(); }
  std::size_t waiting() const { return waiting_; }
  micros held(const std::string& client) const { return escrow_.held(client); }
  micros balance(const std::string& client) const { return escrow_.balance(client); }
  const stake_book& stakes() const { return stake_; }
  const std::map<std::string, market::verdict_record>& track_records() const { return verdicts_; } // by provider key
  const std::map<std::string, std::size_t>& waiting_by_client() const { return client_waiting_; }
  struct session_view {
    std::int32_t credit;
    time_us last_heard;
  };
  std::map<std::string, session_view> session_views() const; // by provider key
  std::size_t sessions() const { return sessions_.size(); }
  bool drained() const; // draining and no job is out with a provider
  bool banned(const std::string& node_key) const { return banned_.count(node_key) > 0; }
  bool drained(const std::string& node_key) const { return drained_.count(node_key) > 0; }
  std::vector<outbound> farewell() const; // DISCONNECT to every session, the last thing sent

private:
  struct job_entry {
    job_spec spec;                    // input dropped once executed
    job_state state = job_state::submitted;
    job_state durable = job_state::submitted; // newest state whose record is committed
    std::int32_t attempt = 0;
    std::int32_t seq = 0;             // of the newest transition emitted
    std::string provider_key;         // while assigned
    std::string provider_operator;    // the operator key its HELLO declared (verifiers exclude it)
    micros price = 0;                 // of the current assignment
    std::string reply_to;             // the client identity that gets ACK and RESULT
    bool inserted = false;            // the job_insert is committed (ACK sent)
    bool waiting = false;             // counted in waiting_: not executed, not final
    time_us timeout_at = 0;           // while assigned: re-queued then without DONE/FAIL
    std::string end_code;             // failed/expired/cancelled: the ERROR owed to the client
    std::string end_reason;
    std::optional<execution_result> result;
    std::string avoid_provider;       // a re-run: not the provider that lost the ruling
  };
  struct session {
    std::string identity;
    proto::capabilities caps;
    std::int32_t credit = 0;          // free slots
    std::set<std::pair<std::int64_t, std::int32_t>> held; // (job, attempt) sent and not answered
    time_us last_heard = 0;
  };

  void on(const client_submit& e, time_us now, effects& out);
  void on(const client_query& e, time_us now, effects& out);
  void on(const client_deposit& e, time_us now, effects& out);
  void on(const admin_order& e, time_us now, effects& out);
  void on(const request_found& e, time_us now, effects& out);
  void on(const node_hello& e, time_us now, effects& out);
  void on(const node_ready& e, time_us now, effects& out);
  void on(const node_heartbeat& e, time_us now, effects& out);
  void on(const node_left& e, time_us now, effects& out);
  void on(const node_done& e, time_us now, effects& out);
  void on(const node_fail& e, time_us now, effects& out);
  void on(const node_gone& e, time_us now, effects& out);
  void on(const committed& e, time_us now, effects& out);
  void on(const jobs_settled& e, time_us now, effects& out);
  void on(const tick& e, time_us now, effects& out);
  void on(const drain& e, time_us now, effects& out);

  void on_commit(const record& r, const outcome& o, time_us now, effects& out);
  void on_commit(const transfer& t, const outcome& o, time_us now, effects& out);
  void on_commit(const admin_action& a, time_us now, effects& out);
  void welcome(const node_hello& e, time_us now, effects& out); // a node with its stake: its session starts
  micros balance_of(const std::string& account) const; // client:<key> or provider:<key>
  void book(transfer t, effects& out);     // apply a transfer in memory and persist it
  void apply(const transfer& t, int sign); // +1: apply it, -1: take it back
  void slash(const settled_job& s, time_us now, effects& out);
  void enqueue(job_spec spec, const std::string& reply_to, time_us now, effects& out, std::string avoid_provider = {});
  std::string rerun(const job_spec& parent, kernels::tensor input, const std::string& reply_to,
                    const std::string& avoid_provider, time_us now, effects& out);
  void top_up(const std::string& key, std::int64_t job_id, time_us now, effects& out);
  bool transition(job_entry& j, job_state to, time_us now, effects& out, std::string detail = {},
                  std::optional<execution_result> result = std::nullopt);
  void requeue(job_entry& j, time_us now, effects& out, const std::string& why);
  void finish_unpaid(job_entry& j, job_state to, time_us now, effects& out, const char* code, const std::string& why);
  void stop_waiting(job_entry& j);
  void drop_job(std::int64_t id);
  void assign(job_entry& j, session& s, time_us now, effects& out);
  void lose_session(std::string key, time_us now, effects& out, const std::string& why); // key by value: callers pass map entries it erases
  void release_slot(session& s, std::int64_t job_id, std::int32_t attempt);
  void dispatch(time_us now, effects& out);
  void reply_duplicate(const std::string& identity, const std::string& request_id, const job_entry& j, effects& out);
  void reply_stored(const std::string& identity, const std::string& request_id, const existing_job& x, effects& out);
  time_us next_wake() const;
  session* session_of(const std::string& identity);

  execution_config cfg_;
  std::map<std::int64_t, job_entry> jobs_;                        // not yet settled or final
  std::map<std::pair<std::string, std::string>, std::int64_t> by_request_; // (client, request id) of jobs_
  std::map<std::string, std::size_t> client_waiting_;             // per client: admitted, not executed
  std::size_t waiting_ = 0;
  scheduler::fair_queue queue_{SIZE_MAX};
  market::escrow_book escrow_;
  std::set<std::string> funded_;
  struct deposit_entry {
    std::string account;               // the ledger account: client:<key> or provider:<key>
    micros amount = 0;
    std::string request_id;
    bool stored = false;               // its funding record committed (and was credited)
    std::vector<std::string> waiting;  // identities owed a DEPOSITED once it commits
  };
  std::map<std::string, deposit_entry> deposits_;                 // by ref "deposit:<request_id>", all ever made
  std::map<std::string, session> sessions_;                        // by provider key
  stake_book stake_;                                               // nodes' accounts and stakes
  std::map<std::string, std::string> verifier_identity_;           // admitted verifiers: key -> identity (a DISCONNECT after a slash)
  std::vector<settled_job> unslashed_;                             // from the snapshot: slashed at the first tick
  std::vector<rerun_owed> reruns_;                                 // from the snapshot: re-run at the first tick
  std::map<std::string, std::vector<node_hello>> awaiting_stake_;  // by node key: HELLOs welcomed once its hold commits
  std::map<std::string, std::string> key_of_;                      // identity -> provider key
  // Jobs found ASSIGNED at recovery, by provider key: no session holds them, yet losing that
  // provider (again) must re-queue them at once, like the jobs a session holds.
  std::map<std::string, std::set<std::int64_t>> recovered_by_key_;
  std::set<std::pair<time_us, std::int64_t>> deadlines_;           // (deadline, job) of waiting jobs
  std::set<std::pair<time_us, std::int64_t>> timeouts_;            // (timeout_at, job) of assigned jobs
  time_us last_beat_ = 0;                                          // HEARTBEATs last sent
  std::int64_t next_job_id_ = 1;
  std::map<std::string, market::verdict_record> verdicts_; // by provider key: its reputation
  std::size_t lookups_in_flight_ = 0;                              // request_lookups not yet answered
  // Per (client, request id) with a look-up in flight: how many, and whether a resend was
  // admitted meanwhile (then their answers are stale, even after that job ended and left).
  struct lookup_state {
    int in_flight = 0;
    bool stale = false;
  };
  std::map<std::pair<std::string, std::string>, lookup_state> lookups_;
  bool draining_ = false;
  std::set<std::string> banned_;                                   // node keys an operator banned: HELLO refused
  std::set<std::string> drained_;                                  // node keys an operator drained: no new work
  std::map<std::string, std::vector<std::string>> order_replies_;  // admin action ref -> requests awaiting its commit
};

} // namespace haca::core
