#pragma once
// The events the coordinator's cores step on: decoded messages from clients and nodes, commit
// confirmations, hand-offs from another core, and timers. Plain data.
#include <string>
#include <vector>

#include "core/records.hpp"

namespace haca::core {

// Every client message carries the account its connection proved (the ZAP User-Id: the
// client's CURVE public key, hex); a message for another account is `forbidden`.
struct client_submit {
  std::string identity;
  std::string account;
  proto::submit_request req;
};
struct client_query { // STATUS, RECEIPT or PROOF: answered only to the job's own client
  std::string identity;
  std::string account;
  std::int64_t job_id = 0;
  std::string command = "STATUS";
};
struct client_deposit { // DEPOSIT: only from the admin account
  std::string identity;
  std::string account;
  proto::deposit_request req;
};
// node_hello and node_left are in records.hpp: they are also hand-offs between the cores.
struct node_ready {
  std::string identity;
  std::int32_t credit = 0;
};
struct node_heartbeat {
  std::string identity;
};
struct node_done {
  std::string identity;
  proto::job_done done;
};
struct node_fail {
  std::string identity;
  proto::job_failed fail;
};
struct node_gone {                    // DISCONNECT
  std::string identity;
  std::string reason;
};
struct committed {                    // the store applied `records` (this core's), with outcomes
  std::vector<record> records;
  std::vector<outcome> outcomes;
};
struct request_found {                // the answer to a request_lookup
  std::string identity;
  std::string request_id;
  std::optional<existing_job> job;    // the job that holds the request id, if any
  error refusal;
  std::string client_id;
};
struct jobs_settled {
  std::vector<settled_job> jobs;
};
struct node_verdict {
  std::string identity;
  proto::verdict_reply verdict;
};
struct node_activation {             // a verifier's answer to the referee's PROBE
  std::string identity;
  proto::activation_reply reply;
};
struct referee_checked {              // the answer to a referee_task
  std::int64_t job_id = 0;
  std::optional<referee_result> result; // none: the referee could not run it (why in `problem`)
  std::string problem;
};
// An operator's action from the admin API (app/admin_actions.cpp). The execution core records
// it, carries it out once committed (hands the verification and settlement cores theirs) and
// answers `reply_to`; a deposit goes the way of a DEPOSIT from the admin key.
struct admin_order {
  std::string reply_to;               // the adapter's handle of the waiting HTTP request
  admin_action action;
  proto::deposit_request deposit;     // action deposit: checked like a DEPOSIT (proto::parse_deposit)
};
struct tick {};                       // timers: liveness, deadlines, timeouts, batches
struct drain {};                      // SIGTERM: admit nothing more

} // namespace haca::core
