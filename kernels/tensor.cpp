#include "kernels/tensor.hpp"

#include <limits>

namespace haca::kernels {

std::string_view dtype_name(dtype t) { return t == dtype::i8 ? "i8" : "i32"; }

result<dtype> parse_dtype(std::string_view name) {
  if (name == "i8" || name == "I8") return dtype::i8;
  if (name == "i32" || name == "I32") return dtype::i32;
  return make_error(errc::bad_input, "unknown dtype '" + std::string(name) + "' (expected i8 or i32)");
}

std::size_t dtype_size(dtype t) { return t == dtype::i8 ? 1 : 4; }

std::int64_t tensor::elements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// Returns the element count (as the header documents); the byte bound is checked here so a
// caller can reject a peer's descriptor before allocating.
result<std::int64_t> checked_bytes(dtype t, const std::vector<std::int64_t>& shape, std::int64_t max_bytes) {
  const auto size = static_cast<std::int64_t>(dtype_size(t));
  std::int64_t count = 1;
  for (auto d : shape) {
    if (d < 1) return make_error(errc::bad_input, "tensor shape " + shape_string(shape) + " has a dimension < 1");
    if (count > std::numeric_limits<std::int64_t>::max() / d / size || count * d * size > max_bytes)
      return make_error(errc::oversized, "tensor " + std::string(dtype_name(t)) + " [" + shape_string(shape) +
                                             "] exceeds the limit of " + std::to_string(max_bytes) + " bytes");
    count *= d;
  }
  if (count * size > max_bytes)
    return make_error(errc::oversized, "tensor " + std::string(dtype_name(t)) + " [" + shape_string(shape) +
                                           "] exceeds the limit of " + std::to_string(max_bytes) + " bytes");
  return count;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += 'x';
    s += std::to_string(shape[i]);
  }
  return s;
}

} // namespace haca::kernels
