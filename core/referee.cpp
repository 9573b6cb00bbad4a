#include "core/referee.hpp"

namespace haca::core {

referee::referee(std::shared_ptr<const std::map<std::string, kernels::model>> models) : models_(std::move(models)) {
  const kernels::backend* be = kernels::find_backend("cpu");
  if (!be)
    be = &kernels::reference_backend();
  for (const auto& [hash, m] : *models_)
    prepared_.emplace(hash, kernels::prepare(m, *be));
}

referee_checked referee::run(const referee_task& task) const {
  referee_checked out;
  out.job_id = task.job_id;
  auto pm = prepared_.find(task.model);
  if (pm == prepared_.end()) {
    out.problem = "model " + task.model.substr(0, 12) + " is not loaded by this coordinator";
    return out;
  }
  auto fail = [&](const error& e) {
    out.problem = e.reason;
    return out;
  };
  referee_result r;
  if (task.how == referee_task::mode::whole_job) {
    auto full = kernels::run_model(pm->second, task.entering);
    if (!full)
      return fail(full.err());
    r.trace_root = full->trace_root;
    r.output_hash = full->output_hash;
  } else {
    const auto layer = static_cast<std::size_t>(task.layer);
    kernels::tensor entering = task.entering;
    if (task.how == referee_task::mode::from_input && layer > 0) { // no party sent it: computed here
      auto before = kernels::trace_layer_output(pm->second, task.entering, layer - 1);
      if (!before)
        return fail(before.err());
      entering = std::move(before.value());
    }
    auto check = kernels::run_trace_layer(pm->second, layer, entering);
    if (!check && task.how == referee_task::mode::one_layer && layer > 0 && !task.input.data.empty()) {
      // An activation that hashes right but does not fit the layer: computed here instead.
      auto before = kernels::trace_layer_output(pm->second, task.input, layer - 1);
      if (!before)
        return fail(before.err());
      check = kernels::run_trace_layer(pm->second, layer, before.value());
    }
    if (!check)
      return fail(check.err());
    r.layer_hash = check->layer_hash;
    r.output_hash = check->output_hash;
  }
  out.result = r;
  return out;
}

} // namespace haca::core
