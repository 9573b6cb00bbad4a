#pragma once
// The job life cycle: one enum and one table of legal transitions (docs/ARCHITECTURE.md draws
// it). Every state change of a job goes through `legal`; an illegal one is an error that names
// the job, never a silent change.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace haca::core {

enum class job_state : std::uint8_t {
  submitted, // admitted; its record is not committed yet (nobody has been told)
  queued,    // durable, waiting for a provider
  assigned,  // durable: provider and attempt recorded before the JOB went out
  executed,  // receipt and output durable; the client has its RESULT
  verified,  // a verifier re-ran it and agreed
  unsampled, // not drawn for verification
  disputed,  // a verifier disagreed
  settled,   // in a committed block: charged or refunded, final
  failed,    // gave up after max attempts: final, nothing charged
  expired,   // the deadline passed before a result: final, nothing charged
  cancelled, // final, nothing charged
};

inline constexpr int job_state_count = 11;

const char* state_name(job_state s); // upper case, as stored and sent: "QUEUED"
std::optional<job_state> parse_state(std::string_view name);
bool is_final(job_state s);          // settled, failed, expired, cancelled
bool legal(job_state from, job_state to);

} // namespace haca::core
