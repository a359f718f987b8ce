#include "preprocess.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "failure.h"

namespace xpr::detail {
namespace {

std::string image_name(const xpr_image& im) { return im.name && *im.name ? im.name : "image"; }

[[noreturn]] void bad_image(const xpr_image& im, const std::string& what) {
  throw Failure(XPR_ERR_IMAGE, image_name(im) + ": " + what);
}

// Stored value of pixel i: masked to BitsStored, sign-extended when PixelRepresentation is 1.
inline int32_t stored_value(uint16_t raw, int32_t bits, bool is_signed) {
  const uint32_t mask = bits >= 16 ? 0xffffu : ((1u << bits) - 1u);
  uint32_t v = raw & mask;
  if (is_signed && (v & (1u << (bits - 1)))) return static_cast<int32_t>(v) - static_cast<int32_t>(1u << bits);
  return static_cast<int32_t>(v);
}

void check_image(const xpr_image& im) {
  if (!im.pixels) bad_image(im, "no pixel data");
  if (im.rows <= 0 || im.cols <= 0)
    bad_image(im, "invalid size " + std::to_string(im.rows) + "x" + std::to_string(im.cols));
  if (static_cast<int64_t>(im.rows) * im.cols > (int64_t(1) << 28)) bad_image(im, "image too large");
  if (im.bits_stored < 1 || im.bits_stored > 16)
    bad_image(im, "BitsStored " + std::to_string(im.bits_stored) + " not in 1..16");
  if (im.has_modality_lut_sequence) bad_image(im, "Modality LUT Sequence is not supported");
  if (!std::isfinite(im.rescale_slope) || !std::isfinite(im.rescale_intercept) || im.rescale_slope == 0.0)
    bad_image(im, "invalid RescaleSlope/RescaleIntercept");
  if (im.has_window) {
    if (!std::isfinite(im.window_center) || !std::isfinite(im.window_width)) bad_image(im, "invalid window");
    if (im.voi_function == XPR_VOI_LINEAR && im.window_width < 1.0)
      bad_image(im, "WindowWidth " + std::to_string(im.window_width) + " < 1 with VOI LUT function LINEAR");
    if (im.voi_function != XPR_VOI_LINEAR && im.window_width <= 0.0)
      bad_image(im, "WindowWidth " + std::to_string(im.window_width) + " <= 0");
  }
  if (im.voi_function != XPR_VOI_LINEAR && im.voi_function != XPR_VOI_LINEAR_EXACT &&
      im.voi_function != XPR_VOI_SIGMOID)
    bad_image(im, "unknown VOI LUT function");
}

}  // namespace

bool preprocessing_version_supported(const std::string& version) { return version == "xpr-preproc-1"; }

Cropped window_orient_crop(const xpr_image& im, const PreprocSettings& s) {
  check_image(im);
  const int32_t rows = im.rows, cols = im.cols;
  const size_t n = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  const bool sgn = im.is_signed != 0;

  // 1. padding mask on stored values; 2. modality LUT
  std::vector<uint8_t> pad(n, 0);
  std::vector<double> x(n);
  int32_t plo = 0, phi = 0;
  if (im.has_padding_value) {
    plo = phi = im.padding_value;
    if (im.has_padding_range_limit) {
      plo = std::min(im.padding_value, im.padding_range_limit);
      phi = std::max(im.padding_value, im.padding_range_limit);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const int32_t v = stored_value(im.pixels[i], im.bits_stored, sgn);
    if (im.has_padding_value) pad[i] = (v >= plo && v <= phi) ? 1 : 0;
    x[i] = static_cast<double>(v) * im.rescale_slope + im.rescale_intercept;
  }

  // 3. VOI
  if (im.has_window) {
    const double c = im.window_center, w = im.window_width;
    switch (im.voi_function) {
      case XPR_VOI_LINEAR: {
        const double lo = c - 0.5 - (w - 1.0) / 2.0, hi = c - 0.5 + (w - 1.0) / 2.0;
        for (double& v : x) {
          if (v <= lo) v = 0.0;
          else if (v > hi) v = 1.0;
          else v = (v - (c - 0.5)) / (w - 1.0) + 0.5;
        }
        break;
      }
      case XPR_VOI_LINEAR_EXACT:
        for (double& v : x) v = std::clamp((v - c) / w + 0.5, 0.0, 1.0);
        break;
      case XPR_VOI_SIGMOID:
        for (double& v : x) v = 1.0 / (1.0 + std::exp(-4.0 * (v - c) / w));
        break;
    }
  } else {
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (size_t i = 0; i < n; ++i)
      if (!pad[i]) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
      }
    // max == min, or every pixel is padding: all 0, which step 7 then refuses (empty breast mask)
    if (hi > lo) {
      const double range = hi - lo;
      for (double& v : x) v = (v - lo) / range;
    } else {
      std::fill(x.begin(), x.end(), 0.0);
    }
  }

  // 4. MONOCHROME1; 5. padding
  for (size_t i = 0; i < n; ++i) {
    if (im.monochrome1) x[i] = 1.0 - x[i];
    if (pad[i]) x[i] = 0.0;
  }

  // 6. orientation: chest wall (brighter half) on the left
  const int32_t half = cols / 2;
  const int32_t right_start = cols - half;  // odd width: middle column belongs to neither
  double left = 0.0, right = 0.0;
  for (int32_t r = 0; r < rows; ++r) {
    const double* row = &x[static_cast<size_t>(r) * cols];
    for (int32_t c = 0; c < half; ++c) left += row[c];
    for (int32_t c = right_start; c < cols; ++c) right += row[c];
  }
  Cropped out;
  out.flipped = right > left;
  if (out.flipped)
    for (int32_t r = 0; r < rows; ++r) std::reverse(x.begin() + static_cast<ptrdiff_t>(r) * cols,
                                                    x.begin() + static_cast<ptrdiff_t>(r + 1) * cols);

  // 7. crop to the breast
  std::vector<int64_t> col_count(cols, 0), row_count(rows, 0);
  for (int32_t r = 0; r < rows; ++r) {
    const double* row = &x[static_cast<size_t>(r) * cols];
    for (int32_t c = 0; c < cols; ++c)
      if (row[c] > s.mask_threshold) {
        ++col_count[c];
        ++row_count[r];
      }
  }
  auto first_last = [&](const std::vector<int64_t>& count, int32_t denom, int32_t& a, int32_t& b) {
    a = -1;
    b = -1;
    for (int32_t i = 0; i < static_cast<int32_t>(count.size()); ++i)
      if (static_cast<double>(count[i]) / static_cast<double>(denom) >= s.profile_fraction) {
        if (a < 0) a = i;
        b = i;
      }
    return a >= 0;
  };
  if (!first_last(col_count, rows, out.c0, out.c1) || !first_last(row_count, cols, out.r0, out.r1))
    bad_image(im, "empty breast mask (no column/row with more than " + std::to_string(s.profile_fraction * 100) +
                      "% of pixels above " + std::to_string(s.mask_threshold) + ")");
  out.rows = out.r1 - out.r0 + 1;
  out.cols = out.c1 - out.c0 + 1;
  out.x.resize(static_cast<size_t>(out.rows) * out.cols);
  for (int32_t r = 0; r < out.rows; ++r)
    std::copy_n(&x[static_cast<size_t>(r + out.r0) * cols + out.c0], out.cols,
                &out.x[static_cast<size_t>(r) * out.cols]);
  return out;
}

namespace {

// Sparse weights of a 1-D antialiased triangle resize from n_in to n_out samples.
struct Taps {
  std::vector<int32_t> start, count;
  std::vector<double> w;  // count[i] weights per output, concatenated
  std::vector<size_t> offset;
};

Taps triangle_taps(int32_t n_in, int32_t n_out) {
  Taps t;
  const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
  const double support = std::max(scale, 1.0);
  t.start.resize(n_out);
  t.count.resize(n_out);
  t.offset.resize(n_out);
  for (int32_t i = 0; i < n_out; ++i) {
    const double centre = (i + 0.5) * scale;
    int32_t lo = static_cast<int32_t>(std::floor(centre - support + 0.5));
    int32_t hi = static_cast<int32_t>(std::floor(centre + support + 0.5));
    lo = std::max(lo, 0);
    hi = std::min(hi, n_in);
    t.offset[i] = t.w.size();
    double sum = 0.0;
    for (int32_t j = lo; j < hi; ++j) {
      const double wj = std::max(0.0, 1.0 - std::abs((j + 0.5 - centre) / support));
      t.w.push_back(wj);
      sum += wj;
    }
    if (sum > 0.0)
      for (size_t k = t.offset[i]; k < t.w.size(); ++k) t.w[k] /= sum;
    t.start[i] = lo;
    t.count[i] = hi - lo;
  }
  return t;
}

}  // namespace

std::vector<double> resize_triangle(const std::vector<double>& in, int32_t rows, int32_t cols, int32_t out_rows,
                                    int32_t out_cols) {
  // columns first
  const Taps tc = triangle_taps(cols, out_cols);
  std::vector<double> tmp(static_cast<size_t>(rows) * out_cols);
  for (int32_t r = 0; r < rows; ++r) {
    const double* src = &in[static_cast<size_t>(r) * cols];
    double* dst = &tmp[static_cast<size_t>(r) * out_cols];
    for (int32_t i = 0; i < out_cols; ++i) {
      const double* w = &tc.w[tc.offset[i]];
      double acc = 0.0;
      for (int32_t k = 0; k < tc.count[i]; ++k) acc += w[k] * src[tc.start[i] + k];
      dst[i] = acc;
    }
  }
  // then rows
  const Taps tr = triangle_taps(rows, out_rows);
  std::vector<double> out(static_cast<size_t>(out_rows) * out_cols, 0.0);
  for (int32_t i = 0; i < out_rows; ++i) {
    double* dst = &out[static_cast<size_t>(i) * out_cols];
    const double* w = &tr.w[tr.offset[i]];
    for (int32_t k = 0; k < tr.count[i]; ++k) {
      const double* src = &tmp[static_cast<size_t>(tr.start[i] + k) * out_cols];
      for (int32_t c = 0; c < out_cols; ++c) dst[c] += w[k] * src[c];
    }
  }
  return out;
}

void preprocess(const xpr_image& image, const PreprocSettings& s, float* out) {
  if (!preprocessing_version_supported(s.version))
    throw Failure(XPR_ERR_VERSION, "preprocessing version '" + s.version + "' is not implemented by this build");
  if (s.out_rows <= 0 || s.out_cols <= 0) throw Failure(XPR_ERR_ARGUMENT, "invalid model input size");
  if (!(s.std > 0.0)) throw Failure(XPR_ERR_ARGUMENT, "normalisation std must be > 0");
  const Cropped c = window_orient_crop(image, s);
  const std::vector<double> y = resize_triangle(c.x, c.rows, c.cols, s.out_rows, s.out_cols);
  for (size_t i = 0; i < y.size(); ++i) out[i] = static_cast<float>((y[i] - s.mean) / s.std);
}

}  // namespace xpr::detail
