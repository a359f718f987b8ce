// Internal error type: every failure carries an xpr_status and a message naming what failed.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>

#include "xpr/xpr.h"

namespace xpr::detail {

// One line, whatever the message quotes (a file name or a manifest path may hold a newline or a
// NUL): control bytes as \xNN.
inline std::string one_line(const std::string& msg) {
  std::string out;
  out.reserve(msg.size());
  for (unsigned char c : msg) {
    if (c < 0x20 || c == 0x7f) {
      char b[5];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

class Failure : public std::runtime_error {
 public:
  Failure(xpr_status status, const std::string& message) : std::runtime_error(one_line(message)), status(status) {}
  xpr_status status;
};

}  // namespace xpr::detail
