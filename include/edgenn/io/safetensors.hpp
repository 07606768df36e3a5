// The safetensors container: read with full validation, write atomically.
//
// Layout (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian
// header length N, N bytes of JSON header, then the tensor bytes. The header maps tensor
// names to {dtype, shape, data_offsets: [begin, end)} relative to the byte buffer, plus an
// optional "__metadata__" object of string values. edgenn pads the header with spaces so
// the byte buffer starts at a 64-byte file offset (docs/weights_format.md).
//
// The reader trusts nothing: a truncated file, an oversized or non-JSON header, unknown
// dtypes, shapes whose size overflows, offsets outside the buffer, overlapping tensors or
// bytes not covered by any tensor are all errors naming the file and the tensor.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgenn/io/file.hpp"
#include "edgenn/io/result.hpp"

namespace edgenn::io {

enum class DType : std::uint8_t { f32, f64, f16, bf16, i64, i32, i16, i8, u64, u32, u16, u8, boolean };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i64: return "I64";
    case DType::i32: return "I32";
    case DType::i16: return "I16";
    case DType::i8: return "I8";
    case DType::u64: return "U64";
    case DType::u32: return "U32";
    case DType::u16: return "U16";
    case DType::u8: return "U8";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::f64: case DType::i64: case DType::u64: return 8;
    case DType::f32: case DType::i32: case DType::u32: return 4;
    case DType::f16: case DType::bf16: case DType::i16: case DType::u16: return 2;
    default: return 1;
  }
}

inline bool parse_dtype(const std::string& s, DType& out) {
  static const DType all[] = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i64, DType::i32, DType::i16,
                              DType::i8,  DType::u64, DType::u32, DType::u16, DType::u8,  DType::boolean};
  for (DType d : all)
    if (s == dtype_name(d)) {
      out = d;
      return true;
    }
  return false;
}

struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::size_t begin = 0, end = 0;  // byte range in the data buffer
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

inline std::string shape_string(const std::vector<std::int64_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

class SafeTensors {
 public:
  static constexpr std::size_t kMaxHeaderBytes = std::size_t(64) << 20;

  static Result<SafeTensors> load(const std::string& path) {
    auto bytes = read_file(path);
    if (!bytes) return bytes.failure();
    return parse(std::move(*bytes), path);
  }

  static Result<SafeTensors> parse(std::vector<unsigned char> bytes, std::string source) {
    SafeTensors st;
    st.source_ = std::move(source);
    const std::string& src = st.source_;
    if (bytes.size() < 8)
      return fail(Error::corrupt_data, src + ": truncated: " + std::to_string(bytes.size()) +
                                           " bytes, shorter than the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[std::size_t(i)];
    if (n > kMaxHeaderBytes)
      return fail(Error::corrupt_data, src + ": header length " + std::to_string(n) + " exceeds the limit of " +
                                           std::to_string(kMaxHeaderBytes) + " bytes");
    if (n > bytes.size() - 8)
      return fail(Error::corrupt_data, src + ": truncated: header length " + std::to_string(n) +
                                           " but only " + std::to_string(bytes.size() - 8) + " bytes follow");
    const char* hdr = reinterpret_cast<const char*>(bytes.data() + 8);
    nlohmann::json j = nlohmann::json::parse(hdr, hdr + n, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return fail(Error::corrupt_data, src + ": header is not valid JSON");
    if (!j.is_object()) return fail(Error::corrupt_data, src + ": header is not a JSON object");
    st.data_start_ = std::size_t(8 + n);
    const std::size_t buffer = bytes.size() - st.data_start_;
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& name = it.key();
      const auto& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) return fail(Error::corrupt_data, src + ": __metadata__ is not an object");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string())
            return fail(Error::corrupt_data, src + ": metadata value '" + m.key() + "' is not a string");
          st.metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string where = src + ": tensor '" + name + "'";
      if (!v.is_object()) return fail(Error::corrupt_data, where + ": entry is not an object");
      TensorInfo t;
      t.name = name;
      if (!v.contains("dtype") || !v["dtype"].is_string() || !parse_dtype(v["dtype"].get<std::string>(), t.dtype))
        return fail(Error::corrupt_data, where + ": missing or unknown dtype");
      if (!v.contains("shape") || !v["shape"].is_array()) return fail(Error::corrupt_data, where + ": missing shape");
      std::int64_t numel = 1;
      for (const auto& d : v["shape"]) {
        if (!d.is_number_integer() || d.get<std::int64_t>() < 0 || d.get<std::int64_t>() > (std::int64_t(1) << 40))
          return fail(Error::corrupt_data, where + ": shape entries must be non-negative integers");
        const std::int64_t e = d.get<std::int64_t>();
        if (e != 0 && numel > (std::int64_t(1) << 50) / e)
          return fail(Error::corrupt_data, where + ": shape size overflows");
        numel *= e;
        t.shape.push_back(e);
      }
      const auto& off = v.contains("data_offsets") ? v["data_offsets"] : nlohmann::json();
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        return fail(Error::corrupt_data, where + ": data_offsets must be two non-negative integers");
      const std::uint64_t b = off[0].get<std::uint64_t>(), e = off[1].get<std::uint64_t>();
      if (b > e || e > buffer)
        return fail(Error::corrupt_data, where + ": data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
                                             ") outside the " + std::to_string(buffer) + "-byte data buffer" +
                                             (e > buffer ? " (file truncated?)" : ""));
      if (e - b != std::uint64_t(numel) * dtype_size(t.dtype))
        return fail(Error::corrupt_data, where + ": " + std::to_string(e - b) + " bytes do not match shape " +
                                             shape_string(t.shape) + " of " + dtype_name(t.dtype));
      t.begin = std::size_t(b);
      t.end = std::size_t(e);
      st.tensors_.push_back(std::move(t));
    }
    // The buffer must be exactly covered: no overlaps, no holes (no hidden payload).
    std::vector<const TensorInfo*> order;
    for (const auto& t : st.tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::size_t pos = 0;
    for (const TensorInfo* t : order) {
      if (t->begin < pos) return fail(Error::corrupt_data, src + ": tensor '" + t->name + "' overlaps another tensor");
      if (t->begin > pos)
        return fail(Error::corrupt_data, src + ": " + std::to_string(t->begin - pos) + " bytes before tensor '" +
                                             t->name + "' belong to no tensor");
      pos = t->end;
    }
    if (pos != buffer)
      return fail(Error::corrupt_data, src + ": " + std::to_string(buffer - pos) +
                                           " trailing bytes belong to no tensor");
    st.bytes_ = std::move(bytes);
    return st;
  }

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  const TensorInfo* find(const std::string& name) const {
    for (const auto& t : tensors_)
      if (t.name == name) return &t;
    return nullptr;
  }
  bool contains(const std::string& name) const { return find(name) != nullptr; }

  // Raw bytes of a tensor.
  const unsigned char* bytes(const TensorInfo& t) const { return bytes_.data() + data_start_ + t.begin; }

  // A float32 tensor of exactly `shape` (empty = any), copied out, all values finite.
  Result<std::vector<float>> f32(const std::string& name, const std::vector<std::int64_t>& shape = {}) const {
    const TensorInfo* t = find(name);
    if (!t) return fail(Error::not_found, source_ + ": tensor '" + name + "' is missing");
    if (t->dtype != DType::f32)
      return fail(Error::shape_mismatch, source_ + ": tensor '" + name + "' has dtype " + dtype_name(t->dtype) +
                                             ", expected F32");
    if (!shape.empty() && shape != t->shape)
      return fail(Error::shape_mismatch, source_ + ": tensor '" + name + "' has shape " + shape_string(t->shape) +
                                             ", expected " + shape_string(shape));
    std::vector<float> out(std::size_t(t->numel()));
    if (!out.empty()) std::memcpy(out.data(), bytes(*t), out.size() * sizeof(float));
    for (std::size_t i = 0; i < out.size(); ++i)
      if (!std::isfinite(out[i]))
        return fail(Error::corrupt_data, source_ + ": tensor '" + name + "' has a non-finite value at index " +
                                             std::to_string(i));
    return out;
  }

  // An integer tensor (any integer dtype) converted to int64.
  Result<std::vector<std::int64_t>> ints(const std::string& name) const {
    const TensorInfo* t = find(name);
    if (!t) return fail(Error::not_found, source_ + ": tensor '" + name + "' is missing");
    std::vector<std::int64_t> out(std::size_t(t->numel()));
    const unsigned char* p = bytes(*t);
    for (std::size_t i = 0; i < out.size(); ++i) {
      switch (t->dtype) {
        case DType::i64: { std::int64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = v; break; }
        case DType::i32: { std::int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = v; break; }
        case DType::i16: { std::int16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = v; break; }
        case DType::u16: { std::uint16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = v; break; }
        case DType::u8: out[i] = p[i]; break;
        case DType::i8: out[i] = static_cast<std::int8_t>(p[i]); break;
        default:
          return fail(Error::shape_mismatch, source_ + ": tensor '" + name + "' has dtype " + dtype_name(t->dtype) +
                                                 ", expected an integer type");
      }
    }
    return out;
  }

 private:
  std::vector<unsigned char> bytes_;
  std::size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  std::string source_;
};

// A tensor to write: the bytes are copied at serialisation.
struct TensorData {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;

  static TensorData from_f32(std::string name, std::vector<std::int64_t> shape, const float* data) {
    TensorData t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.bytes.resize(std::size_t(TensorInfo{t.name, DType::f32, t.shape, 0, 0}.numel()) * 4);
    if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
    return t;
  }
  static TensorData from_i64(std::string name, const std::vector<std::int64_t>& values) {
    TensorData t;
    t.name = std::move(name);
    t.dtype = DType::i64;
    t.shape = {std::int64_t(values.size())};
    t.bytes.resize(values.size() * 8);
    if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    return t;
  }
};

// Serialise tensors (in the given order) and string metadata.
inline std::vector<unsigned char> serialize_safetensors(const std::vector<TensorData>& tensors,
                                                        const std::map<std::string, std::string>& metadata) {
  nlohmann::json hdr = nlohmann::json::object();
  if (!metadata.empty()) hdr["__metadata__"] = metadata;
  std::size_t off = 0;
  for (const auto& t : tensors) {
    hdr[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string h = hdr.dump();
  while ((8 + h.size()) % 64 != 0) h.push_back(' ');
  std::vector<unsigned char> out(8 + h.size() + off);
  std::uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<unsigned char>(n >> (8 * i));
  std::memcpy(out.data() + 8, h.data(), h.size());
  std::size_t pos = 8 + h.size();
  for (const auto& t : tensors) {
    if (!t.bytes.empty()) std::memcpy(out.data() + pos, t.bytes.data(), t.bytes.size());
    pos += t.bytes.size();
  }
  return out;
}

inline Outcome save_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                                const std::map<std::string, std::string>& metadata) {
  const auto bytes = serialize_safetensors(tensors, metadata);
  return write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace edgenn::io
