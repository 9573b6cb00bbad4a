#include "scheduler/queue_policy.hpp"

#include <algorithm>
#include <set>

namespace haca::scheduler {

bool fair_queue::push(const std::string& client_id, std::int64_t job_id) {
  if (full()) return false;
  per_client_[client_id].push_back(job_id);
  ++size_;
  return true;
}

// Not bounded: the job was already admitted once, and dropping it here would lose it.
void fair_queue::push_front(const std::string& client_id, std::int64_t job_id) {
  per_client_[client_id].push_front(job_id);
  ++size_;
}

std::vector<std::int64_t> fair_queue::take(std::size_t n, const std::function<bool(std::int64_t)>& eligible) {
  std::vector<std::int64_t> out;
  // Within one call a client's ineligible prefix stays ineligible, so its scan resumes there.
  std::map<std::string, std::size_t> scan_from;
  std::set<std::string> exhausted;
  std::string cursor = last_served_;
  while (out.size() < n) {
    auto it = per_client_.upper_bound(cursor);
    bool found = false;
    for (std::size_t tried = 0; tried < per_client_.size(); ++tried, ++it) {
      if (it == per_client_.end()) it = per_client_.begin();
      if (!exhausted.count(it->first)) {
        found = true;
        break;
      }
    }
    if (!found) break;
    const std::string client = it->first;
    auto& fifo = it->second;
    std::size_t& p = scan_from[client];
    while (p < fifo.size() && !eligible(fifo[p])) ++p;
    cursor = client;
    if (p == fifo.size()) {
      exhausted.insert(client);
      continue;
    }
    out.push_back(fifo[p]);
    fifo.erase(fifo.begin() + static_cast<std::ptrdiff_t>(p));
    --size_;
    last_served_ = client;
    if (fifo.empty()) {
      per_client_.erase(it);
      scan_from.erase(client);
    }
  }
  return out;
}

bool fair_queue::remove(std::int64_t job_id) {
  for (auto it = per_client_.begin(); it != per_client_.end(); ++it) {
    auto& fifo = it->second;
    auto pos = std::find(fifo.begin(), fifo.end(), job_id);
    if (pos == fifo.end()) continue;
    fifo.erase(pos);
    --size_;
    if (fifo.empty()) per_client_.erase(it);
    return true;
  }
  return false;
}

} // namespace haca::scheduler
