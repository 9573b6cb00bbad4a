#include "scheduler/match.hpp"

#include <algorithm>

namespace haca::scheduler {

namespace {

std::string short_hash(const std::string& h) { return h.size() > 8 ? h.substr(0, 8) + ".." : h; }

std::string providers_word(std::size_t n) { return std::to_string(n) + (n == 1 ? " provider has" : " providers have"); }

// Better = cheaper, then higher reputation, then more credit, then the smaller key.
bool better(const provider_view& a, const provider_view& b) {
  if (a.price != b.price) return a.price < b.price;
  if (a.reputation != b.reputation) return a.reputation > b.reputation;
  if (a.credit != b.credit) return a.credit > b.credit;
  return a.key < b.key;
}

} // namespace

match_result match(const job_needs& job, const std::vector<provider_view>& providers) {
  match_result r;
  const std::string model = short_hash(job.model_hash);
  if (providers.empty()) {
    r.reason = "no providers online";
    return r;
  }

  std::vector<const provider_view*> with_model;
  for (const auto& p : providers)
    if (p.models.count(job.model_hash)) with_model.push_back(&p);
  if (with_model.empty()) {
    r.reason = "no provider has model " + model + " (" + std::to_string(providers.size()) + " online)";
    return r;
  }

  std::vector<const provider_view*> capable;
  for (auto* p : with_model)
    if (job.device.empty() || p->device == job.device) capable.push_back(p);
  if (capable.empty()) {
    r.reason = providers_word(with_model.size()) + " model " + model + " but none is a '" + job.device + "' device";
    return r;
  }

  std::vector<const provider_view*> with_credit;
  for (auto* p : capable)
    if (p->credit > 0) with_credit.push_back(p);
  if (with_credit.empty()) {
    r.reason = providers_word(capable.size()) + " model " + model + " but none has credit";
    return r;
  }

  std::vector<const provider_view*> reputable;
  int best_rep = with_credit.front()->reputation;
  for (auto* p : with_credit) {
    best_rep = std::max(best_rep, p->reputation);
    if (p->reputation >= job.min_reputation) reputable.push_back(p);
  }
  if (reputable.empty()) {
    r.reason = providers_word(with_credit.size()) + " model " + model + " and credit but none has reputation >= " +
               std::to_string(job.min_reputation) + " (best " + std::to_string(best_rep) + ")";
    return r;
  }

  const provider_view* best = nullptr;
  for (auto* p : reputable)
    if (!best || better(*p, *best)) best = p;
  if (best->price > job.max_price) {
    r.reason = "cheapest capable provider asks " + std::to_string(best->price) + " > max_price " +
               std::to_string(job.max_price);
    return r;
  }
  r.provider_key = best->key;
  return r;
}

} // namespace haca::scheduler
