// The C API: engine lifetime, runs, outputs, errors. Nothing escapes as an exception.
#include "xpr/xpr.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "backend.h"
#include "failure.h"
#include "manifest.h"
#include "preprocess.h"

using xpr::detail::Failure;

struct xpr_engine {
  std::string bundle_dir;
  xpr::detail::Manifest manifest;
  std::unique_ptr<xpr::detail::Backend> backend;
  std::string backend_name;
  std::string model_file;  // what the backend runs, relative to the bundle (errors name it)
  // last run
  bool has_result = false;
  float prob = 0.f;
  std::vector<float> logits;
  struct Sel {
    xpr_selection_info info;
    std::vector<int64_t> kept;
  };
  std::vector<Sel> selections;
  // the operating point decisions use (xpr_set_operating_point)
  std::string point_name;
  double point_threshold = 0.5;
};

namespace {

thread_local std::string g_last_error;

xpr_status fail(xpr_status s, const std::string& msg) {
  g_last_error = xpr::detail::one_line(msg);  // Failure messages are one line already; the others too
  return s;
}

template <class F>
xpr_status guarded(F&& f) {
  g_last_error.clear();
  try {
    f();
    return XPR_OK;
  } catch (const Failure& e) {
    return fail(e.status, e.what());
  } catch (const std::bad_alloc&) {
    return fail(XPR_ERR_IMAGE, "out of memory");
  } catch (const std::exception& e) {
    return fail(XPR_ERR_BACKEND, std::string("unexpected error: ") + e.what());
  } catch (...) {
    return fail(XPR_ERR_BACKEND, "unexpected error");
  }
}

void require(bool ok, xpr_status s, const std::string& msg) {
  if (!ok) throw Failure(s, msg);
}

size_t input_count(const xpr_engine* e) {
  return static_cast<size_t>(e->manifest.preprocessing.out_rows) *
         static_cast<size_t>(e->manifest.preprocessing.out_cols);
}

// The run's outputs by the manifest's names: io.logits, io.prob, and each block's selection_output.
void collect(xpr_engine* e, std::vector<xpr::detail::OutputTensor>& outs) {
  const std::string where = e->bundle_dir + "/" + e->model_file;
  const xpr::detail::IoNames& io = e->manifest.io;
  auto output = [&](const std::string& name) -> const xpr::detail::OutputTensor* {
    for (const auto& o : outs)
      if (o.name == name) return &o;
    return nullptr;
  };
  const xpr::detail::OutputTensor* logits = output(io.logits);
  const xpr::detail::OutputTensor* prob = output(io.prob);
  require(logits && prob, XPR_ERR_BACKEND,
          where + ": the run returned no '" + io.logits + "' (io.logits) / '" + io.prob + "' (io.prob)");
  require(!prob->f32.empty() && !logits->f32.empty(), XPR_ERR_BACKEND,
          where + ": '" + io.logits + "' / '" + io.prob + "' are not float tensors");
  e->prob = prob->f32[0];
  const size_t nc = logits->shape.size() == 2 ? static_cast<size_t>(logits->shape[1]) : logits->f32.size();
  e->logits.assign(logits->f32.begin(), logits->f32.begin() + static_cast<ptrdiff_t>(std::min(nc, logits->f32.size())));
  require(std::isfinite(e->prob), XPR_ERR_BACKEND, where + ": the model returned a non-finite probability");

  e->selections.clear();
  for (const auto& b : e->manifest.blocks) {
    if (b.output.empty()) continue;  // dense block, or exported without selection outputs
    const xpr::detail::OutputTensor* t = output(b.output);
    require(t != nullptr, XPR_ERR_BACKEND, where + ": the run returned no selection output '" + b.output + "'");
    require(t->f32.empty(), XPR_ERR_BACKEND, where + ": selection output '" + b.output + "' is not an integer tensor");
    const int32_t n = b.grid_rows * b.grid_cols;
    require(static_cast<int64_t>(t->i64.size()) >= b.k && b.k > 0, XPR_ERR_BACKEND,
            where + ": selection output '" + t->name + "' has " + std::to_string(t->i64.size()) +
                " indices, the manifest says k = " + std::to_string(b.k));
    xpr_engine::Sel s;
    s.kept.assign(t->i64.begin(), t->i64.begin() + b.k);  // batch 0
    for (int64_t v : s.kept)
      require(v >= 0 && v < n, XPR_ERR_BACKEND,
              where + ": selection output '" + t->name + "' holds window " + std::to_string(v) + " outside 0.." +
                  std::to_string(n - 1));
    s.info.view = b.view == "cc" ? "cc" : b.view == "mlo" ? "mlo" : "?";  // the view label, not a tensor name
    s.info.stage = b.stage;
    s.info.block = b.block;
    s.info.grid_rows = b.grid_rows;
    s.info.grid_cols = b.grid_cols;
    s.info.shift_rows = b.shift_rows;
    s.info.shift_cols = b.shift_cols;
    s.info.token_stride = b.token_stride;
    s.info.window = b.window;
    s.info.k = b.k;
    e->selections.push_back(std::move(s));
  }
}

}  // namespace

extern "C" {

const char* xpr_version(void) { return XPR_VERSION_STRING; }
const char* xpr_last_error(void) { return g_last_error.c_str(); }

const char* xpr_status_name(xpr_status s) {
  switch (s) {
    case XPR_OK: return "ok";
    case XPR_ERR_ARGUMENT: return "invalid argument";
    case XPR_ERR_IO: return "file error";
    case XPR_ERR_MANIFEST: return "bad manifest";
    case XPR_ERR_HASH: return "hash mismatch";
    case XPR_ERR_VERSION: return "unsupported version";
    case XPR_ERR_IMAGE: return "bad image";
    case XPR_ERR_BACKEND: return "backend error";
    case XPR_ERR_UNSUPPORTED: return "unsupported";
    case XPR_ERR_STATE: return "invalid state";
    case XPR_ERR_BUNDLE: return "bad bundle layout";
  }
  return "unknown status";
}

void xpr_image_init(xpr_image* im) {
  if (!im) return;
  std::memset(im, 0, sizeof *im);
  im->bits_stored = 16;
  im->rescale_slope = 1.0;
  im->rescale_intercept = 0.0;
  im->voi_function = XPR_VOI_LINEAR;
}

void xpr_options_init(xpr_options* o) {
  if (!o) return;
  std::memset(o, 0, sizeof *o);
  o->backend = XPR_BACKEND_AUTO;
  o->device = XPR_DEVICE_AUTO;
  o->verify_hashes = 1;
}

xpr_status xpr_create(const char* bundle_dir, const xpr_options* options, xpr_engine** engine) {
  if (engine) *engine = nullptr;
  return guarded([&] {
    require(bundle_dir && *bundle_dir, XPR_ERR_ARGUMENT, "xpr_create: bundle_dir is empty");
    require(engine != nullptr, XPR_ERR_ARGUMENT, "xpr_create: engine is NULL");
    xpr_options opts;
    xpr_options_init(&opts);
    if (options) opts = *options;
    require(opts.backend >= XPR_BACKEND_AUTO && opts.backend <= XPR_BACKEND_TENSORRT, XPR_ERR_ARGUMENT,
            "xpr_create: unknown backend " + std::to_string(opts.backend));
    require(opts.device >= XPR_DEVICE_AUTO && opts.device <= XPR_DEVICE_CUDA, XPR_ERR_ARGUMENT,
            "xpr_create: unknown device " + std::to_string(opts.device));
    auto e = std::make_unique<xpr_engine>();
    e->bundle_dir = bundle_dir;
    while (e->bundle_dir.size() > 1 && e->bundle_dir.back() == '/') e->bundle_dir.pop_back();
    e->manifest = xpr::detail::read_manifest(e->bundle_dir);
    e->point_name = e->manifest.operating_point;
    e->point_threshold = e->manifest.threshold;
    xpr::detail::verify_files(e->bundle_dir, e->manifest, opts.verify_hashes != 0);
    xpr::detail::verify_graphs(e->bundle_dir, e->manifest);  // external data: listed files only

    const std::string graph = opts.graph ? opts.graph : "";
    require(graph.empty() || opts.backend != XPR_BACKEND_TENSORRT, XPR_ERR_ARGUMENT,
            "xpr_create: a graph ('" + graph + "') is run by ONNX Runtime, not by the TensorRT backend");
    e->model_file = e->manifest.model_file;
    if (!graph.empty()) {
      const auto it = e->manifest.graphs.find(graph);
      require(it != e->manifest.graphs.end(), XPR_ERR_UNSUPPORTED,
              e->bundle_dir + ": the bundle has no '" + graph + "' graph (manifest 'graphs')");
      e->model_file = it->second;
    }
    std::string why;
    if (graph.empty() && (opts.backend == XPR_BACKEND_TENSORRT || opts.backend == XPR_BACKEND_AUTO)) {
      e->backend = xpr::detail::make_tensorrt_backend(e->bundle_dir, e->manifest, opts, why);
      if (!e->backend && opts.backend == XPR_BACKEND_TENSORRT)
        throw Failure(XPR_ERR_UNSUPPORTED, e->bundle_dir + ": TensorRT backend unavailable: " + why);
      if (e->backend) e->model_file = e->backend->file;
    }
    if (!e->backend) {
      e->backend = xpr::detail::make_onnxruntime_backend(e->bundle_dir, e->manifest, e->model_file, opts);
    }
    e->backend_name = e->backend->name();
    *engine = e.release();
  });
}

void xpr_destroy(xpr_engine* engine) { delete engine; }

xpr_status xpr_input_size(const xpr_engine* e, int32_t* rows, int32_t* cols) {
  return guarded([&] {
    require(e && rows && cols, XPR_ERR_ARGUMENT, "xpr_input_size: NULL argument");
    *rows = e->manifest.preprocessing.out_rows;
    *cols = e->manifest.preprocessing.out_cols;
  });
}

const char* xpr_backend_name(const xpr_engine* e) { return e ? e->backend_name.c_str() : ""; }

const char* xpr_model_file(const xpr_engine* e) { return e ? e->model_file.c_str() : ""; }

xpr_status xpr_preprocess(const xpr_engine* e, const xpr_image* image, float* out, size_t out_count) {
  return guarded([&] {
    require(e && image && out, XPR_ERR_ARGUMENT, "xpr_preprocess: NULL argument");
    require(out_count == input_count(e), XPR_ERR_ARGUMENT,
            "xpr_preprocess: output has " + std::to_string(out_count) + " floats, the model input has " +
                std::to_string(input_count(e)));
    xpr::detail::preprocess(*image, e->manifest.preprocessing, out);
  });
}

xpr_status xpr_run_preprocessed(xpr_engine* e, const float* cc, const float* mlo, size_t count) {
  return guarded([&] {
    require(e && cc && mlo, XPR_ERR_ARGUMENT, "xpr_run_preprocessed: NULL argument");
    e->has_result = false;
    require(count == input_count(e), XPR_ERR_ARGUMENT,
            "xpr_run_preprocessed: inputs have " + std::to_string(count) + " floats, the model takes " +
                std::to_string(input_count(e)));
    auto outs = e->backend->run(cc, mlo, count);
    collect(e, outs);
    e->has_result = true;
  });
}

xpr_status xpr_run(xpr_engine* e, const xpr_image* cc, const xpr_image* mlo) {
  std::vector<float> a, b;
  xpr_status s = guarded([&] {
    require(e && cc && mlo, XPR_ERR_ARGUMENT, "xpr_run: NULL argument");
    e->has_result = false;
    a.resize(input_count(e));
    b.resize(input_count(e));
    xpr::detail::preprocess(*cc, e->manifest.preprocessing, a.data());
    xpr::detail::preprocess(*mlo, e->manifest.preprocessing, b.data());
  });
  if (s != XPR_OK) return s;
  return xpr_run_preprocessed(e, a.data(), b.data(), a.size());
}

xpr_status xpr_get_prob(const xpr_engine* e, float* prob) {
  return guarded([&] {
    require(e && prob, XPR_ERR_ARGUMENT, "xpr_get_prob: NULL argument");
    require(e->has_result, XPR_ERR_STATE, "xpr_get_prob: no successful run yet");
    *prob = e->prob;
  });
}

xpr_status xpr_get_logits(const xpr_engine* e, float* logits, size_t count) {
  return guarded([&] {
    require(e && logits, XPR_ERR_ARGUMENT, "xpr_get_logits: NULL argument");
    require(e->has_result, XPR_ERR_STATE, "xpr_get_logits: no successful run yet");
    require(count >= e->logits.size(), XPR_ERR_ARGUMENT,
            "xpr_get_logits: room for " + std::to_string(count) + " values, need " + std::to_string(e->logits.size()));
    std::copy(e->logits.begin(), e->logits.end(), logits);
  });
}

int32_t xpr_num_classes(const xpr_engine* e) {
  if (!e) return 0;
  if (e->has_result) return static_cast<int32_t>(e->logits.size());
  return static_cast<int32_t>(e->manifest.class_names.size());
}

int32_t xpr_num_selections(const xpr_engine* e) {
  return e && e->has_result ? static_cast<int32_t>(e->selections.size()) : 0;
}

xpr_status xpr_get_selection(const xpr_engine* e, int32_t i, xpr_selection_info* info, const int64_t** indices) {
  return guarded([&] {
    require(e && info && indices, XPR_ERR_ARGUMENT, "xpr_get_selection: NULL argument");
    require(e->has_result, XPR_ERR_STATE, "xpr_get_selection: no successful run yet");
    require(i >= 0 && i < static_cast<int32_t>(e->selections.size()), XPR_ERR_ARGUMENT,
            "xpr_get_selection: index " + std::to_string(i) + " out of range");
    *info = e->selections[static_cast<size_t>(i)].info;
    *indices = e->selections[static_cast<size_t>(i)].kept.data();
  });
}

xpr_status xpr_selection_heatmap(const xpr_engine* e, const char* view, float* out, size_t out_count,
                                 int32_t* grid_rows, int32_t* grid_cols) {
  return guarded([&] {
    require(e && view && out && grid_rows && grid_cols, XPR_ERR_ARGUMENT, "xpr_selection_heatmap: NULL argument");
    require(e->has_result, XPR_ERR_STATE, "xpr_selection_heatmap: no successful run yet");
    const std::string v = view;
    require(v == "cc" || v == "mlo", XPR_ERR_ARGUMENT, "xpr_selection_heatmap: view must be 'cc' or 'mlo'");
    const int32_t gr = e->manifest.preprocessing.out_rows / 4, gc = e->manifest.preprocessing.out_cols / 4;
    require(out_count >= static_cast<size_t>(gr) * gc, XPR_ERR_ARGUMENT,
            "xpr_selection_heatmap: room for " + std::to_string(out_count) + " values, need " +
                std::to_string(static_cast<size_t>(gr) * gc));
    *grid_rows = gr;
    *grid_cols = gc;
    std::fill(out, out + static_cast<size_t>(gr) * gc, 0.f);
    int32_t nblocks = 0;
    std::vector<uint8_t> kept_tok;
    for (const auto& s : e->selections) {
      if (v != s.info.view) continue;
      const xpr_selection_info& b = s.info;
      const int32_t f = b.token_stride / 4;  // stage-1 tokens per token of this stage
      const int32_t th = b.grid_rows * b.window, tw = b.grid_cols * b.window;  // token grid of the stage
      if (f <= 0 || th * f > gr || tw * f > gc) continue;
      kept_tok.assign(static_cast<size_t>(th) * tw, 0);
      for (int64_t w : s.kept) {
        const int32_t wr = static_cast<int32_t>(w / b.grid_cols), wc = static_cast<int32_t>(w % b.grid_cols);
        for (int32_t r = 0; r < b.window; ++r)
          for (int32_t c = 0; c < b.window; ++c) {
            // window tokens are numbered after the cyclic shift by -shift: undo it
            const int32_t tr = (wr * b.window + r + b.shift_rows) % th;
            const int32_t tc = (wc * b.window + c + b.shift_cols) % tw;
            kept_tok[static_cast<size_t>(tr) * tw + tc] = 1;
          }
      }
      for (int32_t r = 0; r < th * f; ++r)
        for (int32_t c = 0; c < tw * f; ++c)
          out[static_cast<size_t>(r) * gc + c] += kept_tok[static_cast<size_t>(r / f) * tw + c / f];
      ++nblocks;
    }
    if (nblocks > 0)
      for (size_t i = 0; i < static_cast<size_t>(gr) * gc; ++i) out[i] /= static_cast<float>(nblocks);
  });
}

}  // extern "C"

int32_t xpr_num_operating_points(const xpr_engine* e) {
  return e ? static_cast<int32_t>(e->manifest.operating_points.size()) : 0;
}

xpr_status xpr_get_operating_point(const xpr_engine* e, int32_t i, const char** name, double* threshold) {
  return guarded([&] {
    require(e && name && threshold, XPR_ERR_ARGUMENT, "xpr_get_operating_point: NULL argument");
    const auto& ops = e->manifest.operating_points;
    require(i >= 0 && i < static_cast<int32_t>(ops.size()), XPR_ERR_ARGUMENT,
            "xpr_get_operating_point: index " + std::to_string(i) + " not in 0.." + std::to_string(ops.size()) +
                " (exclusive)");
    *name = ops[static_cast<size_t>(i)].first.c_str();
    *threshold = ops[static_cast<size_t>(i)].second;
  });
}

xpr_status xpr_set_operating_point(xpr_engine* e, const char* name) {
  return guarded([&] {
    require(e, XPR_ERR_ARGUMENT, "xpr_set_operating_point: NULL engine");
    const auto& m = e->manifest;
    if (!name) {
      e->point_name = m.operating_point;
      e->point_threshold = m.threshold;
      return;
    }
    std::string have;
    for (const auto& [n, t] : m.operating_points) {
      if (n == name) {
        e->point_name = n;
        e->point_threshold = t;
        return;
      }
      have += (have.empty() ? "" : ", ") + n;
    }
    throw Failure(XPR_ERR_ARGUMENT, e->bundle_dir + ": no operating point '" + std::string(name) + "' (has " +
                                        (have.empty() ? std::string("none: only threshold ") +
                                                            std::to_string(m.threshold)
                                                      : have) +
                                        ")");
  });
}

xpr_status xpr_operating_point(const xpr_engine* e, const char** name, double* threshold) {
  return guarded([&] {
    require(e, XPR_ERR_ARGUMENT, "xpr_operating_point: NULL engine");
    if (name) *name = e->point_name.c_str();
    if (threshold) *threshold = e->point_threshold;
  });
}

xpr_status xpr_get_decision(const xpr_engine* e, int32_t* malignant) {
  return guarded([&] {
    require(e && malignant, XPR_ERR_ARGUMENT, "xpr_get_decision: NULL argument");
    require(e->has_result, XPR_ERR_STATE, "xpr_get_decision: no successful run yet");
    *malignant = static_cast<double>(e->prob) >= e->point_threshold ? 1 : 0;
  });
}
