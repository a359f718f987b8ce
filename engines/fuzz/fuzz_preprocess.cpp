// libFuzzer target: the example viewer's DICOM reading (DCMTK, OpenJPEG; examples/dicom_io.cpp) and the
// bundle's preprocessing (src/preprocess.cpp) on arbitrary bytes, through a temporary file as xpr_infer
// reads its inputs. A refusal (false + one error line naming the file, or a Failure) is the expected answer.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dicom_io.h"
#include "failure.h"
#include "preprocess.h"

namespace {

std::string temp_path() {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/xpr_fuzz_preprocess." + std::to_string(getpid()) + ".dcm";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = temp_path();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  const bool written = std::fwrite(data, 1, size, f) == size;
  if (std::fclose(f) != 0 || !written) return 0;

  xpr_example::DicomImage im;
  std::string err;
  // every input twice would halve the speed: the low bit of the size picks the MG-only check
  if (!xpr_example::read_dicom(path, im, err, (size & 1) != 0)) {
    if (err.rfind(path + ": ", 0) != 0 || err.size() == path.size() + 2) __builtin_trap();  // names the file
    return 0;
  }
  if (im.pixels.size() != static_cast<size_t>(im.image.rows) * static_cast<size_t>(im.image.cols)) __builtin_trap();
  xpr::detail::PreprocSettings s;
  s.out_rows = 64;  // small: the fuzzer's time goes to the decoders and the crop, not the resize
  s.out_cols = 32;
  std::vector<float> out(static_cast<size_t>(s.out_rows) * s.out_cols);
  try {
    xpr::detail::preprocess(im.view(), s, out.data());
  } catch (const xpr::detail::Failure& e) {
    if (std::string(e.what()).find(path) == std::string::npos) __builtin_trap();  // names the image
  }
  return 0;
}
