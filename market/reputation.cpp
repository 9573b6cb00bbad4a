#include "market/reputation.hpp"

#include <algorithm>

namespace haca::market {

int reputation(const verdict_record& r) {
  const std::int64_t v = std::max<std::int64_t>(r.verified, 0) + 1;
  const std::int64_t d = std::max<std::int64_t>(r.disputes_lost, 0);
  if (d == 0)
    return 1000;
  // v and d count jobs: far below the overflow of 1000 * v for any real history.
  return static_cast<int>(1000 * v / (v + 10 * d));
}

} // namespace haca::market
