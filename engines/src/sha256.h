// SHA-256 (FIPS 180-4) of a buffer or a file, as lowercase hex. Small and dependency-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace xpr::detail {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  std::string hex_digest();  // finalises; the object is spent afterwards

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const void* data, size_t size);
// Throws Failure(XPR_ERR_IO) naming the file when it cannot be read, XPR_ERR_BUNDLE when it is a
// symbolic link or not a regular file (a FIFO or a device is never opened for reading: files.h).
std::string sha256_file(const std::string& path);

}  // namespace xpr::detail
