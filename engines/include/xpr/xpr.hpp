// Thin C++17 RAII wrapper over the xpr C API (header only). Errors become xpr::Error.
#ifndef XPR_XPR_HPP
#define XPR_XPR_HPP

#include <xpr/xpr.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace xpr {

class Error : public std::runtime_error {
 public:
  Error(xpr_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  xpr_status status() const noexcept { return status_; }

 private:
  xpr_status status_;
};

inline void check(xpr_status s) {
  if (s != XPR_OK) throw Error(s, std::string(xpr_status_name(s)) + ": " + xpr_last_error());
}

struct Selection {
  xpr_selection_info info;
  std::vector<int64_t> kept;  // window indices, sorted by score (highest first)
};

class Engine {
 public:
  explicit Engine(const std::string& bundle_dir, const xpr_options* options = nullptr) {
    check(xpr_create(bundle_dir.c_str(), options, &engine_));
  }
  ~Engine() { xpr_destroy(engine_); }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  Engine(Engine&& o) noexcept : engine_(std::exchange(o.engine_, nullptr)) {}
  Engine& operator=(Engine&& o) noexcept {
    if (this != &o) {
      xpr_destroy(engine_);
      engine_ = std::exchange(o.engine_, nullptr);
    }
    return *this;
  }

  xpr_engine* get() const noexcept { return engine_; }
  std::string backend() const { return xpr_backend_name(engine_); }
  std::string model_file() const { return xpr_model_file(engine_); }

  std::pair<int32_t, int32_t> input_size() const {
    int32_t r = 0, c = 0;
    check(xpr_input_size(engine_, &r, &c));
    return {r, c};
  }

  std::vector<float> preprocess(const xpr_image& image) const {
    auto [r, c] = input_size();
    std::vector<float> out(static_cast<size_t>(r) * static_cast<size_t>(c));
    check(xpr_preprocess(engine_, &image, out.data(), out.size()));
    return out;
  }

  void run(const xpr_image& cc, const xpr_image& mlo) { check(xpr_run(engine_, &cc, &mlo)); }
  void run(const std::vector<float>& cc, const std::vector<float>& mlo) {
    if (cc.size() != mlo.size()) throw Error(XPR_ERR_ARGUMENT, "cc and mlo inputs differ in size");
    check(xpr_run_preprocessed(engine_, cc.data(), mlo.data(), cc.size()));
  }

  float prob() const {
    float p = 0.f;
    check(xpr_get_prob(engine_, &p));
    return p;
  }

  std::vector<float> logits() const {
    std::vector<float> l(static_cast<size_t>(xpr_num_classes(engine_)));
    check(xpr_get_logits(engine_, l.data(), l.size()));
    return l;
  }

  std::vector<Selection> selections() const {
    std::vector<Selection> out;
    const int32_t n = xpr_num_selections(engine_);
    for (int32_t i = 0; i < n; ++i) {
      Selection s{};
      const int64_t* idx = nullptr;
      check(xpr_get_selection(engine_, i, &s.info, &idx));
      s.kept.assign(idx, idx + s.info.k);
      out.push_back(std::move(s));
    }
    return out;
  }

  // Stage-1 token grid heatmap of a view: {values, rows, cols}.
  std::vector<float> heatmap(const std::string& view, int32_t* rows, int32_t* cols) const {
    auto [r, c] = input_size();
    std::vector<float> out(static_cast<size_t>(r / 4) * static_cast<size_t>(c / 4));
    check(xpr_selection_heatmap(engine_, view.c_str(), out.data(), out.size(), rows, cols));
    return out;
  }

 private:
  xpr_engine* engine_ = nullptr;
};

}  // namespace xpr

#endif  // XPR_XPR_HPP
