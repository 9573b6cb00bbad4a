#include "core/job_state.hpp"

#include <array>

namespace haca::core {
namespace {

constexpr std::array<const char*, job_state_count> names{"SUBMITTED", "QUEUED",   "ASSIGNED", "EXECUTED",
                                                         "VERIFIED",  "UNSAMPLED", "DISPUTED", "SETTLED",
                                                         "FAILED",    "EXPIRED",  "CANCELLED"};

using S = job_state;

// from -> to. A re-queue after a lost provider is assigned -> queued (attempt + 1). A job may
// expire before its insert is confirmed (submitted -> expired): the insert stores it QUEUED.
constexpr bool table(S from, S to) {
  switch (from) {
  case S::submitted: return to == S::queued || to == S::assigned || to == S::expired || to == S::cancelled;
  case S::queued: return to == S::assigned || to == S::expired || to == S::cancelled;
  case S::assigned:
    return to == S::queued || to == S::executed || to == S::failed || to == S::expired || to == S::cancelled;
  case S::executed: return to == S::verified || to == S::unsampled || to == S::disputed;
  case S::verified:
  case S::unsampled:
  case S::disputed: return to == S::settled;
  case S::settled:
  case S::failed:
  case S::expired:
  case S::cancelled: return false;
  }
  return false;
}

} // namespace

const char* state_name(job_state s) { return names[static_cast<std::size_t>(s)]; }

std::optional<job_state> parse_state(std::string_view name) {
  for (std::size_t i = 0; i < names.size(); ++i)
    if (name == names[i])
      return static_cast<job_state>(i);
  return std::nullopt;
}

bool is_final(job_state s) {
  return s == S::settled || s == S::failed || s == S::expired || s == S::cancelled;
}

bool legal(job_state from, job_state to) { return table(from, to); }

} // namespace haca::core
