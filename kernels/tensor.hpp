#pragma once
// A dense little-endian tensor as raw bytes. Only the dtypes the integer engine uses.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proto/error.hpp"

namespace haca::kernels {

enum class dtype { i8, i32 };

std::string_view dtype_name(dtype t);           // "i8", "i32"
result<dtype> parse_dtype(std::string_view name);
std::size_t dtype_size(dtype t);

struct tensor {
  dtype type = dtype::i8;
  std::vector<std::int64_t> shape;
  std::string data; // element count x dtype_size bytes, little-endian

  std::int64_t elements() const;
  const std::int8_t* i8() const { return reinterpret_cast<const std::int8_t*>(data.data()); }
  const std::int32_t* i32() const { return reinterpret_cast<const std::int32_t*>(data.data()); }
};

// Element count of a shape, or an error if a dimension is < 1 or the bytes would exceed
// max_bytes. Call before allocating anything for a tensor described by a peer.
result<std::int64_t> checked_bytes(dtype t, const std::vector<std::int64_t>& shape, std::int64_t max_bytes);
std::string shape_string(const std::vector<std::int64_t>& shape); // "1x784"

} // namespace haca::kernels
