// Operators' actions (core/records.hpp admin_action): their names on the wire and in the
// admin_actions table.
#include <array>

#include "core/records.hpp"

namespace haca::core {
namespace {

constexpr std::array<const char*, 7> action_names{"drain", "undrain", "ban", "unban", "fee", "sample_rate", "deposit"};

} // namespace

const char* action_name(admin_action::kind k) { return action_names[static_cast<std::size_t>(k)]; }

std::optional<admin_action::kind> parse_action(const std::string& name) {
  for (std::size_t i = 0; i < action_names.size(); ++i)
    if (name == action_names[i])
      return static_cast<admin_action::kind>(i);
  return std::nullopt;
}

} // namespace haca::core
