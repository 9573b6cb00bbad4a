#pragma once
// The referee of a dispute, run by the coordinator: re-runs one trace layer of a model (or,
// when it must, the layers up to it, or the whole job) and reports the hashes the verification
// core compares with what each side signed. Pure: kernels only, no I/O.
#include <map>
#include <memory>
#include <string>

#include "core/events.hpp"
#include "kernels/model.hpp"

namespace haca::core {

class referee {
public:
  // Packs every model for the fastest CPU backend here (the bytes are the same on every backend).
  explicit referee(std::shared_ptr<const std::map<std::string, kernels::model>> models);
  referee_checked run(const referee_task& task) const;

private:
  std::shared_ptr<const std::map<std::string, kernels::model>> models_;
  std::map<std::string, kernels::prepared_model> prepared_;
};

} // namespace haca::core
