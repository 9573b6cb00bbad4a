#include "train/idx.hpp"

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <memory>

namespace haca::train {
namespace {

struct gz_closer {
  void operator()(gzFile_s* f) const {
    if (f) gzclose(f);
  }
};
using gz_ptr = std::unique_ptr<gzFile_s, gz_closer>;

result<gz_ptr> open_gz(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return make_error(errc::io_error, "no such file: " + path);
  gz_ptr f{gzopen(path.c_str(), "rb")};
  if (!f)
    return make_error(errc::io_error, "cannot open " + path + ": " + std::strerror(errno));
  gzbuffer(f.get(), 1 << 16);
  return f;
}

// Reads exactly n bytes; an error names the file and what was short.
status read_exact(gzFile_s* f, void* out, std::size_t n, const std::string& path, const char* what) {
  auto* p = static_cast<unsigned char*>(out);
  while (n > 0) {
    const unsigned chunk = n > (1u << 30) ? (1u << 30) : static_cast<unsigned>(n);
    const int got = gzread(f, p, chunk);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      return make_error(errc::io_error, path + ": gzip error while reading " + what + ": " + (msg ? msg : "?"));
    }
    if (got == 0)
      return make_error(errc::io_error, path + ": truncated (end of data while reading " + what + ")");
    p += got;
    n -= static_cast<std::size_t>(got);
  }
  return ok_status();
}

std::uint32_t be32(const unsigned char* b) {
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
}

status expect_end(gzFile_s* f, const std::string& path) {
  unsigned char extra = 0;
  const int got = gzread(f, &extra, 1);
  if (got != 0)
    return make_error(errc::io_error, path + ": trailing bytes after the declared data");
  return ok_status();
}

} // namespace

result<idx_images> read_idx_images(const std::string& path) {
  auto f = open_gz(path);
  if (!f) return f.err();
  unsigned char hdr[16];
  if (auto s = read_exact(f->get(), hdr, sizeof hdr, path, "the IDX header"); !s) return s.err();
  const std::uint32_t magic = be32(hdr);
  if (magic != 0x00000803u)
    return make_error(errc::io_error, path + ": bad IDX magic for u8 images (want 0x00000803, got 0x" +
                                          [&] { char b[16]; std::snprintf(b, sizeof b, "%08x", magic); return std::string(b); }() + ")");
  const std::uint32_t count = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12);
  if (count == 0 || count > 10'000'000 || rows == 0 || rows > 4096 || cols == 0 || cols > 4096 ||
      std::uint64_t{count} * rows * cols > (std::uint64_t{1} << 32))
    return make_error(errc::io_error, path + ": implausible IDX dimensions " + std::to_string(count) + "x" +
                                          std::to_string(rows) + "x" + std::to_string(cols));
  idx_images out;
  out.count = static_cast<int>(count);
  out.rows = static_cast<int>(rows);
  out.cols = static_cast<int>(cols);
  out.pixels.resize(std::size_t{count} * rows * cols);
  if (auto s = read_exact(f->get(), out.pixels.data(), out.pixels.size(), path, "pixels"); !s) return s.err();
  if (auto s = expect_end(f->get(), path); !s) return s.err();
  return out;
}

result<std::vector<std::uint8_t>> read_idx_labels(const std::string& path) {
  auto f = open_gz(path);
  if (!f) return f.err();
  unsigned char hdr[8];
  if (auto s = read_exact(f->get(), hdr, sizeof hdr, path, "the IDX header"); !s) return s.err();
  const std::uint32_t magic = be32(hdr);
  if (magic != 0x00000801u)
    return make_error(errc::io_error, path + ": bad IDX magic for u8 labels (want 0x00000801, got 0x" +
                                          [&] { char b[16]; std::snprintf(b, sizeof b, "%08x", magic); return std::string(b); }() + ")");
  const std::uint32_t count = be32(hdr + 4);
  if (count == 0 || count > 10'000'000)
    return make_error(errc::io_error, path + ": implausible label count " + std::to_string(count));
  std::vector<std::uint8_t> labels(count);
  if (auto s = read_exact(f->get(), labels.data(), labels.size(), path, "labels"); !s) return s.err();
  if (auto s = expect_end(f->get(), path); !s) return s.err();
  return labels;
}

result<labelled_images> read_fashion_mnist(const std::string& dir, const std::string& prefix) {
  const std::string images_path = dir + "/" + prefix + "-images-idx3-ubyte.gz";
  const std::string labels_path = dir + "/" + prefix + "-labels-idx1-ubyte.gz";
  auto images = read_idx_images(images_path);
  if (!images) return images.err();
  auto labels = read_idx_labels(labels_path);
  if (!labels) return labels.err();
  if (static_cast<std::size_t>(images->count) != labels->size())
    return make_error(errc::io_error, images_path + " holds " + std::to_string(images->count) + " images but " +
                                          labels_path + " holds " + std::to_string(labels->size()) + " labels");
  if (images->rows != 28 || images->cols != 28)
    return make_error(errc::io_error, images_path + ": expected 28x28 images, got " + std::to_string(images->rows) +
                                          "x" + std::to_string(images->cols));
  for (std::size_t i = 0; i < labels->size(); ++i)
    if ((*labels)[i] >= 10)
      return make_error(errc::io_error, labels_path + ": label " + std::to_string((*labels)[i]) + " at index " +
                                            std::to_string(i) + " is not in 0..9");
  return labelled_images{std::move(images).value(), std::move(labels).value()};
}

} // namespace haca::train
