#pragma once
// Wire constants of the haca protocol; docs/PROTOCOL.md is the spec.
//
// Frames of one message, as a DEALER sends them (a ROUTER sees the peer identity first):
//   [0] "HACA/1"        protocol tag and version
//   [1] command         e.g. "SUBMIT"
//   [2] header          one JSON object (UTF-8)
//   [3..] payload       zero or more binary frames; the header's "tensors" array describes
//                       each one: {"dtype": "i8"|"i32", "shape": [..]}, little-endian, row-major
#include <array>
#include <cstdint>
#include <string_view>

namespace haca::proto {

inline constexpr std::string_view protocol_tag = "HACA/1";

namespace cmd {
// client <-> coordinator (port 7700, CurveZMQ: the client's CURVE key is its account)
inline constexpr std::string_view submit = "SUBMIT";
inline constexpr std::string_view ack = "ACK";
inline constexpr std::string_view error = "ERROR";
inline constexpr std::string_view result = "RESULT";
inline constexpr std::string_view status = "STATUS";
inline constexpr std::string_view receipt = "RECEIPT";
inline constexpr std::string_view proof = "PROOF";
inline constexpr std::string_view deposit = "DEPOSIT";     // the admin key only
inline constexpr std::string_view deposited = "DEPOSITED";
inline constexpr std::string_view notice = "NOTICE";       // K -> C: a job of yours was disputed
// node <-> coordinator (port 7701)
inline constexpr std::string_view hello = "HELLO";
inline constexpr std::string_view welcome = "WELCOME";
inline constexpr std::string_view ready = "READY";
inline constexpr std::string_view heartbeat = "HEARTBEAT";
inline constexpr std::string_view job = "JOB";
inline constexpr std::string_view done = "DONE";
inline constexpr std::string_view fail = "FAIL";
inline constexpr std::string_view verify = "VERIFY";
inline constexpr std::string_view verdict = "VERDICT";
inline constexpr std::string_view disconnect = "DISCONNECT";
inline constexpr std::string_view probe = "PROBE";           // K -> verifier: the referee asks for an activation
inline constexpr std::string_view activation = "ACTIVATION"; // verifier -> K: it
} // namespace cmd

inline constexpr std::array<std::string_view, 22> all_commands{
    cmd::submit, cmd::ack, cmd::error, cmd::result, cmd::status, cmd::receipt, cmd::proof, cmd::deposit, cmd::deposited, cmd::notice, cmd::hello, cmd::welcome, cmd::ready,
    cmd::heartbeat, cmd::job, cmd::done, cmd::fail, cmd::verify, cmd::verdict, cmd::disconnect, cmd::probe, cmd::activation};

inline constexpr int default_client_port = 7700;
inline constexpr int default_node_port = 7701;
inline constexpr int default_heartbeat_ms = 500;
inline constexpr int heartbeat_liveness = 3; // missed intervals before a peer counts as dead
inline constexpr std::int64_t max_deadline_ms = 30LL * 24 * 3600 * 1000; // SUBMIT deadline_ms: 30 days at most

struct limits {
  std::size_t max_frames = 8;
  std::size_t max_header_bytes = 64 * 1024;
  std::int64_t max_tensor_bytes = 1 << 20;  // per payload frame, checked from the header first
  std::int64_t max_message_bytes = 4 << 20; // transport cap (ZMQ_MAXMSGSIZE)
};

} // namespace haca::proto
