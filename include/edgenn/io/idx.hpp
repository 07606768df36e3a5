// IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed (zlib), with the
// fixed validation split shared with the PyTorch reference (docs/data.md): training image
// i belongs to the validation split iff i % 12 == 11.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#if defined(EDGENN_HAVE_ZLIB)
#include <zlib.h>
#endif

#include "edgenn/io/file.hpp"

namespace edgenn::io {

struct ImageSet {
  int count = 0, height = 0, width = 0;
  std::vector<unsigned char> pixels;  // count * height * width, row-major
  std::vector<unsigned char> labels;  // count (empty if not loaded)

  const unsigned char* image(int i) const { return pixels.data() + std::size_t(i) * height * width; }
  std::size_t image_bytes() const { return std::size_t(height) * width; }
};

inline constexpr int kValModulus = 12;
inline constexpr int kValRemainder = 11;

// Bytes of a file, gunzipped if it starts with the gzip magic.
inline Result<std::vector<unsigned char>> read_maybe_gzip(const std::string& path) {
  auto raw = read_file(path);
  if (!raw) return raw.failure();
  if (raw->size() < 2 || (*raw)[0] != 0x1f || (*raw)[1] != 0x8b) return raw;
#if defined(EDGENN_HAVE_ZLIB)
  std::vector<unsigned char> out;
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return fail(Error::io_error, path + ": zlib init failed");
  zs.next_in = raw->data();
  zs.avail_in = uInt(raw->size());
  unsigned char buf[1 << 16];
  int rc;
  do {
    zs.next_out = buf;
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      return fail(Error::corrupt_data, path + ": gzip data is corrupt or truncated");
    }
    out.insert(out.end(), buf, buf + (sizeof buf - zs.avail_out));
    if (out.size() > (std::size_t(1) << 31)) {
      inflateEnd(&zs);
      return fail(Error::corrupt_data, path + ": decompressed size exceeds 2 GiB");
    }
  } while (rc != Z_STREAM_END && (zs.avail_in > 0 || zs.avail_out == 0));
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) return fail(Error::corrupt_data, path + ": gzip stream is truncated");
  return out;
#else
  return fail(Error::unsupported, path + ": gzip-compressed, but this build has no zlib (gunzip the file first)");
#endif
}

inline std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}

// Images (magic 0x00000803) and labels (0x00000801) of one IDX pair.
inline Result<ImageSet> load_idx(const std::string& images_path, const std::string& labels_path) {
  auto img = read_maybe_gzip(images_path);
  if (!img) return img.failure();
  if (img->size() < 16 || be32(img->data()) != 0x803)
    return fail(Error::corrupt_data, images_path + ": not an IDX image file (magic 0x00000803)");
  ImageSet s;
  const std::uint32_t n = be32(img->data() + 4), h = be32(img->data() + 8), w = be32(img->data() + 12);
  if (h == 0 || w == 0 || h > 4096 || w > 4096 || n > (1u << 26))
    return fail(Error::corrupt_data, images_path + ": implausible dimensions");
  if (img->size() - 16 != std::size_t(n) * h * w)
    return fail(Error::corrupt_data, images_path + ": " + std::to_string(img->size() - 16) + " pixel bytes for " +
                                         std::to_string(n) + " images of " + std::to_string(h) + "x" + std::to_string(w));
  s.count = int(n);
  s.height = int(h);
  s.width = int(w);
  s.pixels.assign(img->begin() + 16, img->end());
  if (!labels_path.empty()) {
    auto lab = read_maybe_gzip(labels_path);
    if (!lab) return lab.failure();
    if (lab->size() < 8 || be32(lab->data()) != 0x801)
      return fail(Error::corrupt_data, labels_path + ": not an IDX label file (magic 0x00000801)");
    if (be32(lab->data() + 4) != n || lab->size() - 8 != n)
      return fail(Error::corrupt_data, labels_path + ": label count does not match the " + std::to_string(n) + " images");
    s.labels.assign(lab->begin() + 8, lab->end());
  }
  return s;
}

// The subset of `s` with indices in `keep` (in that order).
inline ImageSet subset(const ImageSet& s, const std::vector<int>& keep) {
  ImageSet r;
  r.count = int(keep.size());
  r.height = s.height;
  r.width = s.width;
  r.pixels.reserve(keep.size() * s.image_bytes());
  for (int i : keep) {
    r.pixels.insert(r.pixels.end(), s.image(i), s.image(i) + s.image_bytes());
    if (!s.labels.empty()) r.labels.push_back(s.labels[std::size_t(i)]);
  }
  return r;
}

enum class Split { train, val, trainval, test };

inline Result<Split> parse_split(const std::string& s) {
  if (s == "train") return Split::train;
  if (s == "val") return Split::val;
  if (s == "trainval") return Split::trainval;
  if (s == "test") return Split::test;
  return fail(Error::invalid_argument, "unknown split '" + s + "' (train, val, trainval or test)");
}

// Fashion-MNIST (or MNIST) split from the directory holding the four IDX(.gz) files.
inline Result<ImageSet> load_fashion_mnist(const std::string& dir, Split split) {
  const bool test = split == Split::test;
  const std::string base = dir + (test ? "/t10k" : "/train");
  auto pick = [](const std::string& stem) {
    const std::string gz = stem + ".gz";
    std::FILE* f = std::fopen(gz.c_str(), "rb");
    if (f) {
      std::fclose(f);
      return gz;
    }
    return stem;
  };
  auto all = load_idx(pick(base + "-images-idx3-ubyte"), pick(base + "-labels-idx1-ubyte"));
  if (!all || test || split == Split::trainval) return all;
  std::vector<int> keep;
  for (int i = 0; i < all->count; ++i)
    if ((i % kValModulus == kValRemainder) == (split == Split::val)) keep.push_back(i);
  return subset(*all, keep);
}

}  // namespace edgenn::io
