// ONNX Runtime backend: CPU provider, CUDA provider when requested / available.
#include <onnxruntime_cxx_api.h>

#include <algorithm>

#include "backend.h"
#include "failure.h"

namespace xpr::detail {
namespace {

Ort::Env& ort_env() {
  static Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "xpr");
  return env;
}

class OrtBackend final : public Backend {
 public:
  OrtBackend(const std::string& model_path, const Manifest& m, const xpr_options& opts)
      : path_(model_path), io_(m.io) {
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    // as the Python runner: the memory-pattern planner nearly doubles the peak at paper size; the
    // planner's same-size buffer reuse (off in Python, 2.5 -> 1 GB) has no switch in the C API
    so.DisableMemPattern();
    if (opts.intra_op_threads > 0) so.SetIntraOpNumThreads(opts.intra_op_threads);
    name_ = "onnxruntime-cpu";
    if (opts.device == XPR_DEVICE_CUDA || opts.device == XPR_DEVICE_AUTO) {
      try {
        OrtCUDAProviderOptionsV2* cuda = nullptr;
        Ort::ThrowOnError(Ort::GetApi().CreateCUDAProviderOptions(&cuda));
        std::unique_ptr<OrtCUDAProviderOptionsV2, void (*)(OrtCUDAProviderOptionsV2*)> guard(
            cuda, Ort::GetApi().ReleaseCUDAProviderOptions);
        so.AppendExecutionProvider_CUDA_V2(*cuda);
        name_ = "onnxruntime-cuda";
      } catch (const Ort::Exception& e) {
        if (opts.device == XPR_DEVICE_CUDA)
          throw Failure(XPR_ERR_BACKEND, path_ + ": ONNX Runtime CUDA provider unavailable: " + e.what());
      }
    }
    try {
      session_ = std::make_unique<Ort::Session>(ort_env(), model_path.c_str(), so);
    } catch (const Ort::Exception& e) {
      throw Failure(XPR_ERR_BACKEND, path_ + ": ONNX Runtime cannot load the model: " + e.what());
    }
    Ort::AllocatorWithDefaultOptions alloc;
    for (size_t i = 0; i < session_->GetInputCount(); ++i)
      in_names_.push_back(session_->GetInputNameAllocated(i, alloc).get());
    for (size_t i = 0; i < session_->GetOutputCount(); ++i)
      out_names_.push_back(session_->GetOutputNameAllocated(i, alloc).get());
    // the graph's I/O must be what the manifest says: inputs exactly io.cc and io.mlo, every output listed
    for (const auto& n : in_names_)
      if (n != io_.cc && n != io_.mlo)
        throw Failure(XPR_ERR_BACKEND, path_ + ": model input '" + n + "' is neither io.cc '" + io_.cc +
                                           "' nor io.mlo '" + io_.mlo + "' of the manifest");
    for (const std::string* want : {&io_.cc, &io_.mlo})
      if (std::find(in_names_.begin(), in_names_.end(), *want) == in_names_.end())
        throw Failure(XPR_ERR_BACKEND, path_ + ": model has no input '" + *want + "' (the manifest's io)");
    for (const auto& t : m.outputs)
      if (std::find(out_names_.begin(), out_names_.end(), t.name) == out_names_.end())
        throw Failure(XPR_ERR_BACKEND, path_ + ": model has no output '" + t.name + "' (listed in the manifest)");
    for (const auto& t : m.inputs)
      if (t.name == io_.cc) shape_ = t.shape;
    if (shape_[0] < 0) shape_[0] = 1;  // dynamic batch axis (--max-batch): one breast per run
    batch_ = static_cast<size_t>(shape_[0]);
  }

  std::string name() const override { return name_; }

  std::vector<OutputTensor> run(const float* cc, const float* mlo, size_t count) override {
    size_t per_view = 1;
    for (size_t i = 1; i < shape_.size(); ++i) per_view *= static_cast<size_t>(shape_[i]);
    if (count != per_view)
      throw Failure(XPR_ERR_ARGUMENT, path_ + ": input has " + std::to_string(count) + " values, the model takes " +
                                          std::to_string(per_view) + " per view");
    // a bundle exported with a static batch B > 1: the breast fills every slot, slot 0 is read
    if (batch_ > 1) {
      rep_cc_.resize(batch_ * count);
      rep_mlo_.resize(batch_ * count);
      for (size_t b = 0; b < batch_; ++b) {
        std::copy_n(cc, count, rep_cc_.data() + b * count);
        std::copy_n(mlo, count, rep_mlo_.data() + b * count);
      }
      cc = rep_cc_.data();
      mlo = rep_mlo_.data();
    }
    const size_t total = batch_ * count;
    auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<Ort::Value> inputs;
    std::vector<const char*> in_names;
    for (const auto& n : in_names_) {
      const float* src = n == io_.cc ? cc : n == io_.mlo ? mlo : nullptr;
      if (!src) throw Failure(XPR_ERR_BACKEND, path_ + ": unexpected model input '" + n + "'");
      inputs.push_back(Ort::Value::CreateTensor<float>(mem, const_cast<float*>(src), total, shape_.data(),
                                                       shape_.size()));
      in_names.push_back(n.c_str());
    }
    std::vector<const char*> out_names;
    for (const auto& n : out_names_) out_names.push_back(n.c_str());
    std::vector<Ort::Value> outs;
    try {
      outs = session_->Run(Ort::RunOptions{nullptr}, in_names.data(), inputs.data(), inputs.size(),
                           out_names.data(), out_names.size());
    } catch (const Ort::Exception& e) {
      throw Failure(XPR_ERR_BACKEND, path_ + ": ONNX Runtime run failed: " + e.what());
    }
    std::vector<OutputTensor> result;
    for (size_t i = 0; i < outs.size(); ++i) {
      OutputTensor t;
      t.name = out_names_[i];
      auto info = outs[i].GetTensorTypeAndShapeInfo();
      t.shape = info.GetShape();
      const size_t n = info.GetElementCount();
      switch (info.GetElementType()) {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: {
          const float* p = outs[i].GetTensorData<float>();
          t.f32.assign(p, p + n);
          break;
        }
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: {
          const int64_t* p = outs[i].GetTensorData<int64_t>();
          t.i64.assign(p, p + n);
          break;
        }
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: {
          const int32_t* p = outs[i].GetTensorData<int32_t>();
          t.i64.assign(p, p + n);
          break;
        }
        default:
          throw Failure(XPR_ERR_BACKEND, path_ + ": output '" + t.name + "' has an unsupported element type");
      }
      result.push_back(std::move(t));
    }
    return result;
  }

 private:
  std::string path_, name_;
  IoNames io_;
  std::unique_ptr<Ort::Session> session_;
  std::vector<std::string> in_names_, out_names_;
  std::vector<int64_t> shape_;
  size_t batch_ = 1;
  std::vector<float> rep_cc_, rep_mlo_;
};

}  // namespace

std::unique_ptr<Backend> make_onnxruntime_backend(const std::string& bundle_dir, const Manifest& m,
                                                  const std::string& graph, const xpr_options& opts) {
  const std::string path = bundle_dir + "/" + graph;
  try {
    auto backend = std::make_unique<OrtBackend>(path, m, opts);
    backend->file = graph;
    return backend;
  } catch (const Ort::Exception& e) {
    throw Failure(XPR_ERR_BACKEND, path + ": ONNX Runtime: " + e.what());
  }
}

}  // namespace xpr::detail
