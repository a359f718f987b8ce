// Transfer syntaxes xpr_infer decodes, round-tripped through DCMTK's own encoders and writers:
// the good uncompressed fixture is written as implicit VR, deflated and big endian, re-encoded as
// JPEG-LS lossless, JPEG lossless (process 14 SV1, and SV6) and RLE, read back with read_dicom and
// compared pixel by pixel with the original; JPEG-LS near-lossless (NEAR 2) stays within 2; a
// syntax outside the supported list (JPEG full progression, which DCMTK could decode) is refused
// with one message naming it. The JPEG 2000 fixture (encoded by OpenJPEG via pydicom) is read too.
// HTJ2K and the lossy syntaxes against Python: tests/test_transfer_syntaxes.py.
//   test_codecs FIXTURES
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrplol.h>
#include <dcmtk/dcmjpeg/djrploss.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <dcmtk/dcmjpls/djrparam.h>

#include <cstdlib>

#include <filesystem>
#include <string>

#include "check.h"
#include "dicom_io.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_codecs FIXTURES\n");
    return 2;
  }
  const fs::path dicom = fs::path(argv[1]) / "dicom";
  const fs::path work = fs::path(argv[1]) / "codecs";
  fs::create_directories(work);

  xpr_example::DicomImage ref;
  std::string err;
  CHECK_MSG(xpr_example::read_dicom((dicom / "good_m2.dcm").string(), ref, err), err);
  if (ref.pixels.empty()) return 1;

  DJEncoderRegistration::registerCodecs();
  DJLSEncoderRegistration::registerCodecs();
  DcmRLEEncoderRegistration::registerCodecs();

  struct Case {
    const char* name;
    E_TransferSyntax xfer;
    const DcmRepresentationParameter* param;
    int max_deviation;  // 0: lossless
  };
  const DJ_RPLossless sv6(6, 0);
  const DJLSRepresentationParameter near2(2, OFFalse);
  const Case cases[] = {{"implicit_vr", EXS_LittleEndianImplicit, nullptr, 0},
                        {"deflated", EXS_DeflatedLittleEndianExplicit, nullptr, 0},
                        {"big_endian", EXS_BigEndianExplicit, nullptr, 0},
                        {"jpegls_lossless", EXS_JPEGLSLossless, nullptr, 0},
                        {"jpeg_lossless_sv1", EXS_JPEGProcess14SV1, nullptr, 0},
                        {"jpeg_lossless_sv6", EXS_JPEGProcess14, &sv6, 0},
                        {"rle_dcmtk", EXS_RLELossless, nullptr, 0},
                        {"jpegls_near2", EXS_JPEGLSLossy, &near2, 2}};
  for (const Case& c : cases) {
    DcmFileFormat ff;
    CHECK(ff.loadFile((dicom / "good_m2.dcm").c_str()).good());
    DcmDataset* ds = ff.getDataset();
    const OFCondition st = ds->chooseRepresentation(c.xfer, c.param);
    CHECK_MSG(st.good() && ds->canWriteXfer(c.xfer), std::string(c.name) + ": encode failed: " + st.text());
    const fs::path out = work / (std::string(c.name) + ".dcm");
    CHECK_MSG(ff.saveFile(out.c_str(), c.xfer).good(), out.string());

    xpr_example::DicomImage im;
    const bool ok = xpr_example::read_dicom(out.string(), im, err);
    CHECK_MSG(ok, err);
    CHECK_MSG(im.transfer_syntax == DcmXfer(c.xfer).getXferID(), c.name);
    CHECK(im.pixels.size() == ref.pixels.size());
    int worst = 0;
    for (size_t i = 0; i < im.pixels.size() && i < ref.pixels.size(); ++i)
      worst = std::max(worst, std::abs(int(im.pixels[i]) - int(ref.pixels[i])));
    CHECK_MSG(worst <= c.max_deviation, std::string(c.name) + ": decoded pixels differ from the original by " +
                                            std::to_string(worst));
    CHECK(im.image.rows == ref.image.rows && im.image.cols == ref.image.cols);
    CHECK(im.image.has_window == ref.image.has_window && im.image.window_center == ref.image.window_center);
    CHECK(im.image.has_padding_value && im.image.padding_value == 60);
    std::fprintf(stderr, "  %-18s %s: %zu pixels, max |diff| %d\n", c.name, im.transfer_syntax.c_str(),
                 im.pixels.size(), worst);
  }

  {  // a syntax outside the list: refused with one line naming it, even though DCMTK has its codec
    DcmFileFormat ff;
    CHECK(ff.loadFile((dicom / "good_m2.dcm").c_str()).good());
    const DJ_RPLossy quality(90);
    CHECK(ff.getDataset()->chooseRepresentation(EXS_JPEGProcess10_12, &quality).good());
    const fs::path out = work / "jpeg_progressive.dcm";
    CHECK(ff.saveFile(out.c_str(), EXS_JPEGProcess10_12).good());
    xpr_example::DicomImage im;
    err.clear();
    CHECK(!xpr_example::read_dicom(out.string(), im, err));
    CHECK_MSG(err.find(out.string() + ": transfer syntax ") == 0 &&
                  err.find("(1.2.840.10008.1.2.4.55) is not supported") != std::string::npos &&
                  err.find('\n') == std::string::npos,
              err);
  }

  // first WindowCenter / WindowWidth of multi-valued attributes
  CHECK(ref.image.has_window && ref.image.window_center == 2000 && ref.image.window_width == 4000);
  // JPEG 2000 (OpenJPEG) and MONOCHROME1 RLE (pydicom's encoder) files from the fixture
  xpr_example::DicomImage j2k, m1;
  CHECK_MSG(xpr_example::read_dicom((dicom / "good_j2k.dcm").string(), j2k, err), err);
  CHECK(j2k.transfer_syntax == "1.2.840.10008.1.2.4.90");
  CHECK(j2k.image.voi_function == XPR_VOI_SIGMOID);
  CHECK_MSG(xpr_example::read_dicom((dicom / "good_m1_rle.dcm").string(), m1, err), err);
  CHECK(m1.image.monochrome1 == 1 && m1.transfer_syntax == "1.2.840.10008.1.2.5");

  DJEncoderRegistration::cleanup();
  DJLSEncoderRegistration::cleanup();
  DcmRLEEncoderRegistration::cleanup();
  std::printf("test_codecs: %d failure(s)\n", g_failures);
  return g_failures ? 1 : 0;
}
