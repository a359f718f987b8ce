// TensorRT / TensorRT-RTX backend: deserializeCudaEngine, setTensorAddress, enqueueV3.
// Compiled only when CMake finds the SDK (XPR_WITH_TENSORRT). NOT built or tested on the
// project's CI machines (no package there ships TensorRT headers); see engines/README.md.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <fstream>
#include <iterator>

#include "backend.h"
#include "failure.h"
#include "files.h"
#include "sha256.h"

#ifndef XPR_TRT_IS_RTX
#define XPR_TRT_IS_RTX 0
#endif

namespace xpr::detail {
namespace {

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) last_error = msg ? msg : "";
    if (severity <= Severity::kWARNING) std::fprintf(stderr, "[xpr tensorrt] %s\n", msg ? msg : "");
  }
  std::string last_error;
};

void cuda_check(cudaError_t e, const std::string& where) {
  if (e != cudaSuccess) throw Failure(XPR_ERR_BACKEND, where + ": CUDA error " + cudaGetErrorString(e));
}

std::string runtime_version() {
  const int v = getInferLibVersion();  // MAJOR * 10000 + MINOR * 100 + PATCH
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

bool same_major_minor(const std::string& a, const std::string& b) {
  int a1 = -1, a2 = -1, b1 = -2, b2 = -2;
  std::sscanf(a.c_str(), "%d.%d", &a1, &a2);
  std::sscanf(b.c_str(), "%d.%d", &b1, &b2);
  return a1 == b1 && a2 == b2;
}

size_t element_size(nvinfer1::DataType t) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return 4;
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kINT64: return 8;
    case nvinfer1::DataType::kHALF: return 2;
    default: return 0;
  }
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) bits = sign;
    else {  // subnormal
      int e = -1;
      uint32_t m = man;
      do { ++e; m <<= 1; } while (!(m & 0x400));
      bits = sign | ((127 - 15 - e) << 23) | ((m & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

struct CudaFree {
  void operator()(void* p) const noexcept { cudaFree(p); }
};
struct StreamDestroy {
  void operator()(cudaStream_t s) const noexcept { cudaStreamDestroy(s); }
};

class TrtBackend final : public Backend {
 public:
  TrtBackend(const std::string& engine_path, const std::string& plugin_path, const std::string& label,
             const Manifest& m)
      : path_(engine_path), name_(label), io_names_(m.io) {
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw Failure(XPR_ERR_BACKEND, path_ + ": createInferRuntime failed");
    if (!plugin_path.empty()) {
      RegularFile(plugin_path, /*follow_links=*/true, XPR_ERR_ARGUMENT);  // dlopen of a FIFO would hang
      if (!runtime_->getPluginRegistry().loadLibrary(plugin_path.c_str()))
        throw Failure(XPR_ERR_BACKEND, plugin_path + ": TensorRT cannot load the plugin library: " + logger_.last_error);
    }
    std::vector<char> blob;
    {  // the hashed engine file, opened only as a regular file (files.h)
      const RegularFile f(path_, /*follow_links=*/false, XPR_ERR_BUNDLE);
      blob.resize(static_cast<size_t>(f.size()));
      size_t got = 0;
      while (got < blob.size()) {
        const ssize_t n = ::read(f.fd(), blob.data() + got, blob.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw Failure(XPR_ERR_IO, path_ + ": cannot read the engine file");
        got += static_cast<size_t>(n);
      }
    }
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_)
      throw Failure(XPR_ERR_BACKEND, path_ + ": deserializeCudaEngine failed (" + logger_.last_error +
                                         "); built for another TensorRT version or GPU?");
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw Failure(XPR_ERR_BACKEND, path_ + ": createExecutionContext failed: " + logger_.last_error);
    cudaStream_t stream = nullptr;
    cuda_check(cudaStreamCreate(&stream), path_);
    stream_.reset(stream);
    const int n = engine_->getNbIOTensors();
    // a dynamic batch axis (--max-batch, optimisation profile 1..N): one breast per run, so every
    // input is fixed at batch 1 first; the outputs' shapes then follow from the context
    for (int i = 0; i < n; ++i) {
      const char* name = engine_->getIOTensorName(i);
      if (engine_->getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT) continue;
      nvinfer1::Dims d = engine_->getTensorShape(name);
      if (d.nbDims < 1 || d.d[0] >= 0) continue;
      d.d[0] = 1;
      if (!context_->setInputShape(name, d))
        throw Failure(XPR_ERR_BACKEND, path_ + ": the engine does not take batch 1 for input '" + name + "' (" +
                                           logger_.last_error + ")");
    }
    for (int i = 0; i < n; ++i) {
      Io io;
      io.name = engine_->getIOTensorName(i);
      io.input = engine_->getTensorIOMode(io.name.c_str()) == nvinfer1::TensorIOMode::kINPUT;
      io.type = engine_->getTensorDataType(io.name.c_str());
      const nvinfer1::Dims d = context_->getTensorShape(io.name.c_str());
      io.count = 1;
      for (int k = 0; k < d.nbDims; ++k) {
        if (d.d[k] < 0) throw Failure(XPR_ERR_BACKEND, path_ + ": tensor '" + io.name + "' has a dynamic shape");
        io.shape.push_back(d.d[k]);
        io.count *= static_cast<size_t>(d.d[k]);
      }
      if (element_size(io.type) == 0)
        throw Failure(XPR_ERR_BACKEND, path_ + ": tensor '" + io.name + "' has an unsupported data type");
      if (io.input && io.type != nvinfer1::DataType::kFLOAT)
        throw Failure(XPR_ERR_BACKEND, path_ + ": input '" + io.name + "' is not float32");
      void* dev = nullptr;
      cuda_check(cudaMalloc(&dev, io.count * element_size(io.type)), path_ + ": cudaMalloc " + io.name);
      io.device.reset(dev);  // owned from here on, also when a later step throws
      if (!context_->setTensorAddress(io.name.c_str(), io.device.get()))
        throw Failure(XPR_ERR_BACKEND, path_ + ": setTensorAddress failed for '" + io.name + "'");
      io_.push_back(std::move(io));
    }
    // the engine's I/O must be what the manifest says: inputs exactly io.cc and io.mlo, every output listed
    auto has = [&](const std::string& name, bool input) {
      for (const auto& io : io_)
        if (io.name == name && io.input == input) return true;
      return false;
    };
    for (const auto& io : io_)
      if (io.input && io.name != io_names_.cc && io.name != io_names_.mlo)
        throw Failure(XPR_ERR_BACKEND, path_ + ": engine input '" + io.name + "' is neither io.cc '" + io_names_.cc +
                                           "' nor io.mlo '" + io_names_.mlo + "' of the manifest");
    for (const std::string* want : {&io_names_.cc, &io_names_.mlo})
      if (!has(*want, true))
        throw Failure(XPR_ERR_BACKEND, path_ + ": engine has no input '" + *want + "' (the manifest's io)");
    for (const auto& t : m.outputs)
      if (!has(t.name, false))
        throw Failure(XPR_ERR_BACKEND, path_ + ": engine has no output '" + t.name + "' (listed in the manifest)");
  }

  std::string name() const override { return name_; }

  std::vector<OutputTensor> run(const float* cc, const float* mlo, size_t count) override {
    for (auto& io : io_) {
      if (!io.input) continue;
      const float* src = io.name == io_names_.cc ? cc : io.name == io_names_.mlo ? mlo : nullptr;
      if (!src) throw Failure(XPR_ERR_BACKEND, path_ + ": unexpected engine input '" + io.name + "'");
      if (count == 0 || io.count % count != 0)
        throw Failure(XPR_ERR_ARGUMENT, path_ + ": input has " + std::to_string(count) + " values, the engine takes " +
                                            std::to_string(io.count));
      // static batch B > 1: the breast fills every slot, slot 0 is read
      for (size_t off = 0; off < io.count; off += count)
        cuda_check(cudaMemcpyAsync(static_cast<float*>(io.device.get()) + off, src, count * sizeof(float),
                                   cudaMemcpyHostToDevice, stream_.get()),
                   path_);
    }
    if (!context_->enqueueV3(stream_.get())) throw Failure(XPR_ERR_BACKEND, path_ + ": enqueueV3 failed: " + logger_.last_error);
    std::vector<OutputTensor> out;
    std::vector<std::vector<uint8_t>> host;
    for (auto& io : io_) {
      if (io.input) continue;
      host.emplace_back(io.count * element_size(io.type));
      cuda_check(cudaMemcpyAsync(host.back().data(), io.device.get(), host.back().size(), cudaMemcpyDeviceToHost,
                                 stream_.get()),
                 path_);
    }
    cuda_check(cudaStreamSynchronize(stream_.get()), path_);
    size_t h = 0;
    for (auto& io : io_) {
      if (io.input) continue;
      OutputTensor t;
      t.name = io.name;
      t.shape = io.shape;
      const uint8_t* p = host[h++].data();
      for (size_t i = 0; i < io.count; ++i) {
        switch (io.type) {
          case nvinfer1::DataType::kFLOAT: { float v; std::memcpy(&v, p + 4 * i, 4); t.f32.push_back(v); break; }
          case nvinfer1::DataType::kHALF: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); t.f32.push_back(half_to_float(v)); break; }
          case nvinfer1::DataType::kINT32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); t.i64.push_back(v); break; }
          case nvinfer1::DataType::kINT64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); t.i64.push_back(v); break; }
          default: break;
        }
      }
      out.push_back(std::move(t));
    }
    return out;
  }

 private:
  struct Io {
    std::string name;
    bool input = false;
    nvinfer1::DataType type = nvinfer1::DataType::kFLOAT;
    std::vector<int64_t> shape;
    size_t count = 0;
    std::unique_ptr<void, CudaFree> device;
  };
  std::string path_, name_;
  IoNames io_names_;
  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::unique_ptr<CUstream_st, StreamDestroy> stream_;  // destroyed before context_, engine_, runtime_
  std::vector<Io> io_;                                   // device buffers: freed first
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const std::string& bundle_dir, const Manifest& m,
                                               const xpr_options& opts, std::string& why) {
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
    why = "no CUDA GPU: TensorRT engines need an NVIDIA GPU";
    return nullptr;
  }
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  const std::string sm = std::to_string(prop.major) + "." + std::to_string(prop.minor);
  const std::string rt = runtime_version();
  std::string reasons;
  for (const auto& e : m.engines) {
    const std::string path = bundle_dir + "/" + e.file;
    const bool cc_ok = e.compute_capability == sm || (e.hw_compat == "ampere+" && prop.major >= 8);
    if (!cc_ok) {
      reasons += "; " + e.file + " is for compute capability " + e.compute_capability + " (" + e.hw_compat +
                 "), this GPU is " + sm;
      continue;
    }
    if (e.backend == "tensorrt-rtx" && !XPR_TRT_IS_RTX) {
      reasons += "; " + e.file + " is a TensorRT-RTX engine, this build links TensorRT";
      continue;
    }
    if (e.backend == "tensorrt" && XPR_TRT_IS_RTX) {
      reasons += "; " + e.file + " is a TensorRT engine, this build links TensorRT-RTX";
      continue;
    }
    if (!e.version.empty() && !same_major_minor(e.version, rt))
      throw Failure(XPR_ERR_VERSION, path + ": engine built with " + e.backend + " " + e.version +
                                         ", this runtime links " + rt);
    if (opts.verify_hashes) {
      const std::string got = sha256_file(path);
      if (got != e.sha256)
        throw Failure(XPR_ERR_HASH, path + ": SHA-256 mismatch (manifest " + e.sha256 + ", file " + got + ")");
    }
    std::string plugin;
    if (opts.plugin_library) plugin = opts.plugin_library;
    else if (const char* env = std::getenv("XPR_TRT_PLUGIN_LIBRARY")) plugin = env;
    if (!e.plugins_required.empty() && plugin.empty())
      throw Failure(XPR_ERR_BACKEND, path + ": the engine needs the plugin(s) " + e.plugins_required.front() +
                                         (e.plugins_required.size() > 1 ? ",..." : "") +
                                         ": pass xpr_options.plugin_library or set XPR_TRT_PLUGIN_LIBRARY");
    auto backend = std::make_unique<TrtBackend>(path, plugin, e.backend + "-sm" + sm, m);
    backend->file = e.file;
    return backend;
  }
  why = m.engines.empty() ? "the bundle lists no TensorRT engine" : "no engine for this GPU" + reasons;
  return nullptr;
}

}  // namespace xpr::detail
