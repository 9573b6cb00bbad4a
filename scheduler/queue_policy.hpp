#pragma once
// Pending jobs with per-client fairness: one FIFO per client, served round-robin, so a client
// that pipelines thousands of jobs does not starve another. Bounded: push fails when full.
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace haca::scheduler {

class fair_queue {
public:
  explicit fair_queue(std::size_t max_depth) : max_depth_(max_depth) {}

  bool push(const std::string& client_id, std::int64_t job_id); // false when full
  // A job that lost its provider goes back to the front of its client's FIFO.
  void push_front(const std::string& client_id, std::int64_t job_id);
  // Takes up to n jobs for which eligible(job_id) holds, round-robin over clients, starting
  // after the client served last. Ineligible jobs keep their place.
  std::vector<std::int64_t> take(std::size_t n, const std::function<bool(std::int64_t)>& eligible);
  bool remove(std::int64_t job_id); // cancelled or expired
  std::size_t size() const { return size_; }
  bool full() const { return size_ >= max_depth_; }

private:
  std::size_t max_depth_;
  std::size_t size_ = 0;
  std::map<std::string, std::deque<std::int64_t>> per_client_;
  std::string last_served_;
};

} // namespace haca::scheduler
