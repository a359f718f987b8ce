#include "files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "failure.h"

namespace xpr::detail {

const char* file_kind(unsigned mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "a special file";
}

RegularFile::RegularFile(const std::string& path, bool follow_links, xpr_status special) {
  struct stat st {};
  if ((follow_links ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0) {
    const int err = errno;
    struct stat lst {};
    if (err == ENOENT && ::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode))
      throw Failure(special, path + ": is a dangling symbolic link");
    throw Failure(XPR_ERR_IO, path + ": cannot open: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode))
    throw Failure(special, path + ": is " + file_kind(st.st_mode) + ", not a regular file");
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | (follow_links ? 0 : O_NOFOLLOW));
  if (fd_ < 0) throw Failure(XPR_ERR_IO, path + ": cannot open: " + std::strerror(errno));
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    throw Failure(special, path + ": changed into " + file_kind(st.st_mode) + " while it was opened");
  }
  size_ = static_cast<long long>(st.st_size);
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace xpr::detail
