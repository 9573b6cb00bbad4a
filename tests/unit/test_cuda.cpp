// The CUDA backends: on a GPU, every op against the reference; anywhere, the kernels' own index
// and integer arithmetic emulated on the host. Without CUDA in the build, this says so.
#include <doctest/doctest.h>

#include <string>

#if defined(HACA_WITH_CUDA)
#include "kernels/cuda/backend_cuda.hpp"
#include "kernels/cuda/self_test.hpp"
#endif

TEST_CASE("the CUDA kernels' index and integer arithmetic, emulated on the host, equal the reference") {
#if defined(HACA_WITH_CUDA)
  CHECK(haca::kernels::cuda_host_emulation_check() == "");
#else
  MESSAGE("CUDA backends not built (no nvcc, or HACA_CUDA=OFF): nothing to check");
#endif
}

TEST_CASE("the CUDA backends equal the reference on a device") {
#if defined(HACA_WITH_CUDA)
  auto why = haca::kernels::cuda_backend().unavailable_reason();
  if (!why.empty()) {
    MESSAGE("skipped, no GPU here: ", why);
    return;
  }
  CHECK(haca::kernels::cuda_self_test() == "");
#else
  MESSAGE("CUDA backends not built (no nvcc, or HACA_CUDA=OFF): nothing to check");
#endif
}
