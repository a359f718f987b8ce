// Inference backends behind one interface: ONNX Runtime (always built) and TensorRT (optional).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "manifest.h"
#include "xpr/xpr.h"

namespace xpr::detail {

struct OutputTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> f32;    // float outputs
  std::vector<int64_t> i64;  // integer outputs (kept window indices), widened to int64
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // cc and mlo: [1, 1, H, W] float32. Returns every model output.
  virtual std::vector<OutputTensor> run(const float* cc, const float* mlo, size_t count) = 0;

  std::string file;  // what it runs, relative to the bundle (a graph or an engine plan)
};

// `graph`: the bundle file to run (the manifest's `model`, or one of its `graphs`), relative to it.
std::unique_ptr<Backend> make_onnxruntime_backend(const std::string& bundle_dir, const Manifest& m,
                                                  const std::string& graph, const xpr_options& opts);

// Returns nullptr (with `why` set) when this build has no TensorRT or the bundle has no usable
// engine; throws Failure when an engine is there but cannot be loaded.
std::unique_ptr<Backend> make_tensorrt_backend(const std::string& bundle_dir, const Manifest& m,
                                               const xpr_options& opts, std::string& why);

}  // namespace xpr::detail
