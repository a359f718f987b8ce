// The bundle's preprocessing ("xpr-preproc-1", export/README.md) on decoded 16-bit stored pixels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xpr/xpr.h"

namespace xpr::detail {

struct PreprocSettings {
  std::string version = "xpr-preproc-1";
  int32_t out_rows = 0, out_cols = 0;
  double mean = 0.449, std = 0.226;
  double mask_threshold = 0.05;    // step 7: breast mask m = x > threshold
  double profile_fraction = 0.02;  // step 7: keep columns/rows with profile >= fraction
};

// Versions of the preprocessing this build implements.
bool preprocessing_version_supported(const std::string& version);

// Steps 1-7: the float64 cropped image in [0, 1] with chest wall on the left.
struct Cropped {
  std::vector<double> x;
  int32_t rows = 0, cols = 0;
  int32_t r0 = 0, r1 = 0, c0 = 0, c1 = 0;  // crop in the oriented image, inclusive
  bool flipped = false;
};
Cropped window_orient_crop(const xpr_image& image, const PreprocSettings& s);

// Step 8: antialiased bilinear (triangle) resize, columns first then rows (PIL BILINEAR).
std::vector<double> resize_triangle(const std::vector<double>& in, int32_t rows, int32_t cols, int32_t out_rows,
                                    int32_t out_cols);

// All steps; out has s.out_rows * s.out_cols floats. Throws Failure(XPR_ERR_IMAGE/ARGUMENT).
void preprocess(const xpr_image& image, const PreprocSettings& s, float* out);

}  // namespace xpr::detail
