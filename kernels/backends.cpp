// The backend registry: every backend compiled into this binary, fastest first, and which of
// them can run on this machine.
#include <string_view>
#include <vector>

#include "kernels/cpu/backend_cpu.hpp"
#include "kernels/ops.hpp"
#ifdef HACA_WITH_CUDA
#include "kernels/cuda/backend_cuda.hpp"
#endif

namespace haca::kernels {

std::vector<const backend*> compiled_backends() {
  std::vector<const backend*> all;
#ifdef HACA_WITH_CUDA
  all.push_back(&cuda_backend());
  all.push_back(&cublaslt_backend());
#endif
  all.push_back(&cpu_backend());
  all.push_back(&reference_backend()); // the oracle: always present, always usable, slowest
  return all;
}

std::vector<const backend*> usable_backends() {
  std::vector<const backend*> usable;
  for (const backend* be : compiled_backends())
    if (be->unavailable_reason().empty()) usable.push_back(be);
  return usable;
}

const backend* find_backend(std::string_view name) {
  for (const backend* be : usable_backends())
    if (name == be->name) return be;
  return nullptr;
}

} // namespace haca::kernels
