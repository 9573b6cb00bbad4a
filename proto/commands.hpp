#pragma once
// Typed views of each command's header: make_* builds a message, parse_* checks one and names
// the missing field (missing_field) or the field of the wrong type, range or form (bad_input).
// Field lists and the id / text rules: docs/PROTOCOL.md.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/tensor.hpp"
#include "proto/message.hpp"
#include "verify/merkle.hpp"
#include "verify/receipt.hpp"

namespace haca::proto {

// ---- field rules shared by every command ----

// An id (client_id, request_id, a node's name, device, backend names, error codes, states) is
// 1 to max_id_bytes bytes, each a printable ASCII character 0x21..0x7E: no space, NUL, control
// or non-ASCII byte. So an id can go into a log line, a file name or a SQL literal unescaped
// and means the same to every reader.
inline constexpr std::size_t max_id_bytes = 128;
// Free text (reason, detail) is any UTF-8 without NUL, at most max_text_bytes bytes.
inline constexpr std::size_t max_text_bytes = 1024;

// The id rule, in one place. `what` names the value in the reason, e.g. "SUBMIT field
// 'request_id'"; the error is bad_input: "<what> must be 1 to 128 printable ASCII characters
// (0x21-0x7E: no space, control or non-ASCII byte), got <what came>".
status check_id(std::string_view s, std::string_view what = "id");
bool is_id(std::string_view s);
// The free-text rule: bad_input "<what> must be at most 1024 bytes without NUL, got ...".
status check_text(std::string_view s, std::string_view what = "text");
// A local string cut to max_text_bytes (at a UTF-8 character boundary) with NUL bytes replaced
// by '?': what make_* puts in a reason or detail, so a peer's parser accepts it.
std::string bounded_text(std::string_view s);

// The header's request_id when it is present and a valid id, else "": what an ERROR answering
// a message (even one refused for another field) may echo back.
std::string request_id_of(const message& m);

// ---- client side ----
struct submit_request {
  std::string client_id;      // the account that pays: optional ("" = omitted); when given, it must be the
                              // connection's account (its CURVE public key, hex), else `forbidden`
  std::string request_id;     // client's id, unique per client; a resend gets the same job's answers
  std::string model;          // model hash (64 hex)
  std::string tier = "sampled"; // none | sampled | full
  std::int64_t max_price = 0; // micro-units
  std::int64_t deadline_ms = 0; // from the coordinator's receipt; 0 = its default; at most max_deadline_ms
  kernels::tensor input;      // i8 [rows, input_dim]
};
message make_submit(const submit_request& s);
result<submit_request> parse_submit(const message& m);

struct ack_reply { std::string request_id; std::int64_t job_id = 0; };
message make_ack(const ack_reply& a);
result<ack_reply> parse_ack(const message& m);

struct error_reply {
  std::string code;
  std::string reason;
  std::string request_id;     // when the error answers a SUBMIT
  std::int64_t job_id = 0;    // when it concerns a job
};
message make_error(const error_reply& e);
message make_error(const error& e, const std::string& request_id = {}, std::int64_t job_id = 0);
result<error_reply> parse_error(const message& m);

struct job_result {
  std::string request_id;
  std::int64_t job_id = 0;
  std::vector<std::int32_t> classes;
  kernels::tensor output;     // i8 [rows, classes]
  verify::receipt receipt;
};
message make_result(const job_result& r);
result<job_result> parse_result(const message& m);

// STATUS, RECEIPT and PROOF asked by a client: {job_id}. Each is answered from what Postgres
// committed, with a reply of the same command (or ERROR).
struct job_query {
  std::int64_t job_id = 0;
  std::string command = std::string(cmd::status); // STATUS | RECEIPT | PROOF
};
message make_job_query(const job_query& q);
result<job_query> parse_job_query(const message& m);

// DEPOSIT (admin key only): money into an account, once per request_id; answered DEPOSITED.
struct deposit_request {
  std::string request_id;     // makes it idempotent: the same id is never credited twice
  std::string account;        // a key: 64 hex characters (a client's CURVE key, or a node's Ed25519 key)
  std::int64_t amount = 0;    // micro-units, 1 .. max_deposit
  std::string to = "client";  // "client": its client account; "node": the node account provider:<key> (stake)
};
inline constexpr std::int64_t max_deposit = 1'000'000'000'000'000; // 10^15 micro-units per deposit
message make_deposit(const deposit_request& d);
result<deposit_request> parse_deposit(const message& m);
struct deposit_reply {
  std::string request_id;
  std::string account;
  std::int64_t amount = 0;
  std::int64_t balance = 0;   // the account's balance after it (in the coordinator's memory)
  bool repeated = false;      // this request id was deposited before: nothing new was credited
  std::string to = "client";
};
message make_deposited(const deposit_reply& d);
result<deposit_reply> parse_deposited(const message& m);

// NOTICE: pushed to the client when its job settles DISPUTED: the referee ruled the provider's
// result wrong, so the RESULT it already has is not to be trusted, and it was not charged.
struct dispute_notice {
  std::int64_t job_id = 0;
  std::string request_id;
  std::string verdict = "disputed";
  std::int64_t charged = 0;   // micro-units the client paid for it: 0
  std::string detail;         // text: what happened; STATUS has the ruling's evidence
  std::string rerun_request_id; // the job runs again under this request id ("rerun:<job_id>"); "" = no re-run
};
// Request ids the coordinator gives its re-runs of disputed jobs: "rerun:<job id>".
inline constexpr const char* rerun_prefix = "rerun:";
message make_notice(const dispute_notice& n);
result<dispute_notice> parse_notice(const message& m);

// RECEIPT reply: the stored receipt of the job's current attempt.
struct receipt_reply {
  std::int64_t job_id = 0;
  verify::receipt receipt;
};
message make_receipt_reply(const receipt_reply& r);
result<receipt_reply> parse_receipt_reply(const message& m);

// PROOF reply, and the file `haca prove-inclusion` writes: the job's receipt, the verdict it
// settled with, its Merkle path to the batch root of its block, and that block's signed header.
// Checked offline by verify::check_inclusion.
struct inclusion_proof {
  std::int64_t job_id = 0;
  verify::receipt receipt;
  std::string verdict;                   // verified | unsampled | mismatch
  std::int32_t index = 0;                // the receipt's place in the block's batch
  std::vector<verify::merkle_step> path; // from the receipt hash up to the batch root
  verify::block block;
};
nlohmann::json proof_json(const inclusion_proof& p);
result<inclusion_proof> parse_proof_json(const nlohmann::json& j);
message make_proof_reply(const inclusion_proof& p);
result<inclusion_proof> parse_proof_reply(const message& m);

struct status_event { std::string state; std::string detail; std::int64_t at_us = 0; };
// Once a job has a stored receipt, STATUS also carries its result: `classes` and `receipt` in
// the header and the output tensor, as in RESULT.
struct status_result {
  std::vector<std::int32_t> classes;
  verify::receipt receipt;
  kernels::tensor output;
};
struct status_reply {
  std::int64_t job_id = 0;
  std::string state;
  std::int32_t attempt = 0;
  std::vector<status_event> events;
  std::optional<status_result> result;
};
message make_status_reply(const status_reply& s);
result<status_reply> parse_status_reply(const message& m);

// ---- node side ----
struct capabilities {
  std::string role;           // provider | verifier
  std::string name;
  std::string public_key;     // hex Ed25519
  std::string device;         // cpu | cuda
  std::vector<std::string> backends;
  std::vector<std::string> models; // model hashes on the node
  std::int64_t price = 0;     // micro-units per job (providers)
  std::int64_t stake = 0;
  std::int64_t memory_bytes = 0;
  bool int8 = true;
  std::int64_t timestamp_us = 0; // freshness of the signature
  std::string operator_key;   // hex Ed25519 key of the node's operator, or "" (optional field)
};
nlohmann::json capabilities_json(const capabilities& c);
// HELLO header: {"capabilities": {...}, "signature": hex}; the signature covers
// capabilities_json(c).dump() (keys sorted, no spaces).
message make_hello(const capabilities& c, const verify::key_pair& key);
// Checks fields and the signature (bad_signature).
result<capabilities> parse_hello(const message& m);
// A HELLO must come from a connection authenticated (CurveZMQ) with the CURVE key derived from
// the Ed25519 key it names: a HELLO replayed from another connection is refused (bad_signature).
status check_hello_bound(const capabilities& c, const std::string& connection_curve_key_hex);

struct welcome_reply { std::int32_t heartbeat_ms = 0; std::string coordinator_key; };
message make_welcome(const welcome_reply& w);
result<welcome_reply> parse_welcome(const message& m);

message make_ready(std::int32_t credit);
result<std::int32_t> parse_ready(const message& m); // credit >= 1
message make_heartbeat();
message make_disconnect(const std::string& reason);

struct job_order {
  std::int64_t job_id = 0;
  std::int32_t attempt = 0;
  std::string model;
  std::int64_t price = 0;
  kernels::tensor input;
};
message make_job(const job_order& j);
result<job_order> parse_job(const message& m);

struct job_done {
  std::int64_t job_id = 0;
  std::int32_t attempt = 0;
  std::vector<std::int32_t> classes;
  kernels::tensor output;
  verify::receipt receipt;
  std::vector<std::string> layer_hashes; // the trace layers' hashes: their Merkle root is the receipt's trace_root
};
message make_done(const job_done& d);
result<job_done> parse_done(const message& m);

struct job_failed { std::int64_t job_id = 0; std::int32_t attempt = 0; std::string code; std::string reason; };
message make_fail(const job_failed& f);
result<job_failed> parse_fail(const message& m);

// Blind: the model and the input, never the provider's receipt or any of its hashes.
struct verify_task {
  std::int64_t job_id = 0;
  std::string model;
  kernels::tensor input;
};
message make_verify(const verify_task& v);
result<verify_task> parse_verify(const message& m);

// The verifier's signed re-execution, or (verdict absent) the reason it could not run the job.
struct verdict_reply {
  std::int64_t job_id = 0;
  std::optional<verify::verdict> verdict;
  std::string reason;
};
inline constexpr std::size_t max_layer_hashes = 4096; // in a VERDICT
message make_verdict(const verdict_reply& v);
result<verdict_reply> parse_verdict(const message& m);

// A dispute's referee (the coordinator) asks the verifier for the activation entering the first
// trace layer the two sides disagree on: the output of trace layer `layer` on the job's input.
struct probe_request {
  std::int64_t job_id = 0;
  std::string model;
  std::int32_t layer = 0;     // a trace layer index
  kernels::tensor input;      // the job's input
};
message make_probe(const probe_request& p);
result<probe_request> parse_probe(const message& m);
struct activation_reply {
  std::int64_t job_id = 0;
  std::int32_t layer = 0;
  kernels::tensor activation; // i8 [rows, width]: what trace layer `layer` output
};
message make_activation(const activation_reply& a);
result<activation_reply> parse_activation(const message& m);

nlohmann::json receipt_json(const verify::receipt& r);
result<verify::receipt> parse_receipt_json(const nlohmann::json& j);

} // namespace haca::proto
