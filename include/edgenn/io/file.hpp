// Whole-file reads and atomic writes (write to a temporary, flush to disk, rename), so a
// crash or a killed process never leaves a half-written weights file or checkpoint.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "edgenn/io/result.hpp"

namespace edgenn::io {

inline Result<std::vector<unsigned char>> read_file(const std::string& path, std::size_t max_bytes = std::size_t(1) << 31) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return fail(Error::io_error, path + ": cannot open: " + std::strerror(errno));
  std::vector<unsigned char> data;
  unsigned char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    if (data.size() + n > max_bytes) {
      std::fclose(f);
      return fail(Error::corrupt_data, path + ": larger than the limit of " + std::to_string(max_bytes) + " bytes");
    }
    data.insert(data.end(), buf, buf + n);
  }
  const bool err = std::ferror(f);
  std::fclose(f);
  if (err) return fail(Error::io_error, path + ": read error");
  return data;
}

inline Outcome write_file_atomic(const std::string& path, const void* data, std::size_t bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return fail(Error::io_error, tmp + ": cannot create: " + std::strerror(errno));
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t left = bytes;
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return fail(Error::io_error, tmp + ": write failed: " + why);
    }
    p += w;
    left -= std::size_t(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return fail(Error::io_error, tmp + ": flush failed: " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return fail(Error::io_error, path + ": rename failed: " + why);
  }
  // Make the rename itself durable.
  std::string dir = path.substr(0, path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/'));
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return success();
}

}  // namespace edgenn::io
