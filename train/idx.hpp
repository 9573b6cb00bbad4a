#pragma once
// Gzip'd IDX files (the MNIST / Fashion-MNIST format), read with zlib.
//   images: magic 0x00000803, u32 count, u32 rows, u32 cols (big-endian), then count*rows*cols u8
//   labels: magic 0x00000801, u32 count, then count u8
#include <cstdint>
#include <string>
#include <vector>

#include "proto/error.hpp"

namespace haca::train {

struct idx_images {
  int count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels; // count x rows x cols, row-major
};

result<idx_images> read_idx_images(const std::string& path);
result<std::vector<std::uint8_t>> read_idx_labels(const std::string& path);

// A labelled image set: images and labels of the same count, labels in [0, classes).
struct labelled_images {
  idx_images images;
  std::vector<std::uint8_t> labels;
};

// Reads <dir>/<prefix>-images-idx3-ubyte.gz and <dir>/<prefix>-labels-idx1-ubyte.gz
// (prefix "train" or "t10k") and checks that they match: same count, labels < 10.
result<labelled_images> read_fashion_mnist(const std::string& dir, const std::string& prefix);

} // namespace haca::train
