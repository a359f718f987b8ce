// Opening a file the runtime reads (manifest.json, every listed file while it is hashed, an ONNX
// graph while its external data references are read): only a regular file is opened for reading.
// A FIFO would block the open or the read forever, a device (/dev/zero) never ends: both are
// named and refused before any byte is read. The type is checked twice: on the path (stat, or
// lstat when links are refused), and on the descriptor opened with O_NONBLOCK (so a FIFO swapped
// in between cannot block the open; fstat then refuses it).
#pragma once

#include <string>

#include "xpr/xpr.h"

namespace xpr::detail {

// An open file descriptor of a regular file, closed on destruction.
class RegularFile {
 public:
  // Throws Failure: XPR_ERR_IO when missing/unreadable, `special` when it is not a regular file
  // (or, with follow_links false, a symbolic link).
  RegularFile(const std::string& path, bool follow_links, xpr_status special);
  ~RegularFile();
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  int fd() const { return fd_; }
  long long size() const { return size_; }

 private:
  int fd_ = -1;
  long long size_ = 0;
};

// "a FIFO", "a socket", "a character device", ... for a st_mode that is not a regular file.
const char* file_kind(unsigned mode);

}  // namespace xpr::detail
