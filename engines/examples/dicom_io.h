// Reads one single-frame MG image with DCMTK (+ OpenJPEG for JPEG 2000) into an xpr_image.
// Part of the example viewer: the xpr library itself takes already decoded pixels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "xpr/xpr.h"

namespace xpr_example {

struct DicomImage {
  std::string path;
  std::string transfer_syntax;  // UID
  std::vector<uint16_t> pixels;
  xpr_image image;  // attributes; pixels/name are set by view()

  // The image with pixels and name pointing into this object (valid while it lives unchanged).
  xpr_image view() const {
    xpr_image im = image;
    im.pixels = pixels.data();
    im.name = path.c_str();
    return im;
  }
};

// Returns false and sets `error` (naming the file and the problem) on failure. With
// require_mg, only MG FOR PRESENTATION images are accepted (as `xpr predict` does).
bool read_dicom(const std::string& path, DicomImage& out, std::string& error, bool require_mg = true);

}  // namespace xpr_example
