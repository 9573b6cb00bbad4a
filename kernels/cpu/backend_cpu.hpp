#pragma once
// The fast CPU backend: packed weights, cache blocking, AVX2 and AVX-512 VNNI kernels chosen at
// run time (scalar fallback), threads over the machine's cores.
#include "kernels/ops.hpp"

namespace haca::kernels {

const backend& cpu_backend();

} // namespace haca::kernels
