#pragma once
// The verification core: sampling (an HMAC of the receipt under a secret the providers never
// see), dispatch to verifier sessions with credit, verification timeouts, verdicts. Off the
// client's path: the client has its RESULT before a job arrives here. Nothing here needs to be
// stored before a VERIFY goes out (sampling is a function of the stored receipt), so after a
// restart the executed jobs are simply sampled and dispatched again.
//
// Persist before you tell: a verdict (VERIFIED | UNSAMPLED | DISPUTED) is a job_transition
// record; the judged job goes to settlement only when `committed` confirms that record.
// After `recover`, call step(tick{}, now) once: it carries the records recovery produced
// (the UNSAMPLED transitions of recovered jobs) and arms the timer.
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>

#include "core/events.hpp"

namespace haca::core {

struct verification_config {
  double sample_rate = 0.1;           // p for tier "sampled"; "none" is 0, "full" is 1
  std::string sampling_secret;
  int heartbeat_ms = 500;
  std::int64_t verify_timeout_ms = 10000; // a VERIFY without VERDICT goes to another verifier
  std::int32_t max_credit = 4096;
  std::size_t max_pending = 1000000;  // sampled jobs waiting for a verifier (memory bound)
  std::string coordinator_key;        // hex public key, sent in WELCOME
  int max_verifier_lies = 1;          // rulings a verifier may lose before it verifies nothing more (0 = no limit)
};

using verification_event = std::variant<executed_job, node_hello, node_ready, node_heartbeat, node_verdict,
                                        node_activation, referee_checked, node_gone, committed, admin_action, tick>;

class verification_core {
public:
  explicit verification_core(verification_config cfg);
  // Executed jobs of the snapshot are sampled again (same decision) and dispatched.
  static verification_core recover(verification_config cfg, const snapshot& s, time_us now);

  effects step(const verification_event& ev, time_us now);
  std::vector<outbound> farewell() const; // DISCONNECT to every session, the last thing sent

  std::size_t backlog() const { return pending_.size() + in_flight_.size() + disputes_.size(); }
  std::size_t disputes() const { return disputes_.size(); } // mismatches before the referee's ruling
  std::size_t judging() const { return judging_.size(); }
  std::size_t sessions() const { return sessions_.size(); }
  // Read-only views for tests, the simulator and metrics.
  std::size_t pending() const { return pending_.size(); }
  std::optional<std::string> verifier_of(std::int64_t job_id) const; // key of the verifier it is in flight to
  std::int32_t credit_of(const std::string& verifier_key) const;     // 0 when no such session
  double sample_rate() const { return cfg_.sample_rate; }
  struct session_view {
    std::int32_t credit;
    time_us last_heard;
    std::int64_t in_flight;   // VERIFYs it holds now
  };
  std::map<std::string, session_view> session_views() const; // by verifier key
  // Verdicts each verifier signed and that were judged (matched or disputed), by key, since start.
  const std::map<std::string, std::uint64_t>& verdicts_given() const { return verdicts_given_; }

private:
  struct task {
    executed_job job;
    int tries = 0;
    std::string last_verifier;        // the verifier that timed out, was lost or could not run it last
    time_us retry_at = 0;             // that verifier gets it again only from then on
  };
  struct session {
    std::string identity;
    proto::capabilities caps;
    std::int32_t credit = 0;
    time_us last_heard = 0;
  };
  struct flight {
    task t;
    std::string verifier_key;
    time_us deadline = 0;
  };

  void on(const executed_job& e, time_us now, effects& out);
  void on(const node_hello& e, time_us now, effects& out);
  void on(const node_ready& e, time_us now, effects& out);
  void on(const node_heartbeat& e, time_us now, effects& out);
  void on(const node_verdict& e, time_us now, effects& out);
  void on(const node_activation& e, time_us now, effects& out);
  void on(const referee_checked& e, time_us now, effects& out);
  void on(const node_gone& e, time_us now, effects& out);
  void on(const committed& e, time_us now, effects& out);
  void on(const admin_action& e, time_us now, effects& out);
  void on(const tick& e, time_us now, effects& out);

  // A mismatch between a receipt and a checked verdict: bisected to the first trace layer the
  // two disagree on, whose entering activation the referee asks of the verifier (PROBE).
  struct dispute {
    task t;
    verify::verdict verdict;
    std::string verifier_identity;
    std::string verifier_who;
    std::int32_t layer = -1;          // the trace layer in question; -1: the whole job
    time_us probe_deadline = 0;       // while a PROBE is out
    bool verifier_lost = false;       // ruled against the verifier: the referee re-runs the whole job
    // Ruled against the provider on `layer`, where the verifier was right: whether the verifier
    // lied on a later layer shows only in a whole run, which the referee makes before recording it.
    std::optional<dispute_ruling> provider_lost;
  };
  void start_dispute(flight f, const verify::verdict& v, const session& s, time_us now, effects& out);
  void referee(dispute& d, referee_task::mode how, kernels::tensor entering, effects& out);
  void rule(dispute d, const referee_result& r, time_us now, effects& out);
  void count_lie(const std::string& verifier_key, std::int64_t job_id, effects& out);

  void judge(const executed_job& job, job_state verdict, std::string detail, time_us now, effects& out,
             ruling_parties ruling = {});
  void dispatch(time_us now, effects& out);
  void lose_session(const std::string& key, effects& out, const std::string& why);
  void to_pending_front(flight f);
  void retry_elsewhere(flight f, time_us now, effects& out); // no judgement came: another verifier, later this one
  session* choose(const task& t, time_us now); // a verifier with credit that is not the provider, or null
  session* session_of(const std::string& identity);
  time_us next_wake() const;

  verification_config cfg_;
  std::deque<task> pending_;
  std::map<std::int64_t, flight> in_flight_;          // by job id
  std::map<std::int64_t, judged_job> judging_;        // verdict record not yet committed
  std::map<std::int64_t, dispute> disputes_;          // by job id: waiting for an activation or the referee
  std::set<std::pair<time_us, std::int64_t>> probe_deadlines_; // (deadline, job id) of PROBEs out
  std::set<std::int64_t> known_;                      // job ids pending, in flight or judging
  std::map<std::string, session> sessions_;           // by verifier key
  std::map<std::string, std::string> key_of_;         // identity -> verifier key
  std::set<std::pair<time_us, std::int64_t>> deadlines_; // (deadline, job id) of in_flight_
  std::int64_t credit_total_ = 0;                     // sum of the sessions' credit
  std::map<std::string, int> lies_;                   // by verifier key: rulings lost (rebuilt from the disputes table)
  bool barred(const std::string& verifier_key) const; // lost max_verifier_lies rulings, or banned
  std::set<std::string> banned_, drained_;            // by operators (admin actions)
  std::map<std::string, std::uint64_t> verdicts_given_; // by verifier key (admitted, staked verifiers only)
  time_us next_heartbeat_ = 0;                        // when tick sends the next HEARTBEATs
  effects carry_;                                     // produced by recover, out with the next step
};

} // namespace haca::core
