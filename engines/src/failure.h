// Internal error type: every failure carries an xpr_status and a message naming what failed.
#pragma once

#include <stdexcept>
#include <string>

#include "xpr/xpr.h"

namespace xpr::detail {

class Failure : public std::runtime_error {
 public:
  Failure(xpr_status status, const std::string& message) : std::runtime_error(message), status(status) {}
  xpr_status status;
};

}  // namespace xpr::detail
