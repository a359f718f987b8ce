// Built without the TensorRT SDK: the TensorRT backend is reported as not available.
#include "backend.h"

namespace xpr::detail {

std::unique_ptr<Backend> make_tensorrt_backend(const std::string&, const Manifest&, const xpr_options&,
                                               std::string& why) {
  why = "this build of xpr has no TensorRT backend (CMake did not find the TensorRT SDK)";
  return nullptr;
}

}  // namespace xpr::detail
