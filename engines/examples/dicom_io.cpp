#include "dicom_io.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>
#include <openjpeg.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace xpr_example {
namespace {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void register_codecs() {
  static std::once_flag once;
  std::call_once(once, [] {
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);  // errors come back as OFCondition text
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  });
}

// ---- transfer syntaxes ---------------------------------------------------------------------------
// Every transfer syntax read here: the same list as the Python toolkit (README, "Transfer syntaxes"),
// named as in PS3.6 (and pydicom), so both sides name a file's syntax alike. Any other is refused
// with one line naming it, even where DCMTK has a codec (the retired JPEG processes): a syntax is
// supported when both sides decode it to the same model input.
enum class Codec { Native, Dcmtk, OpenJpeg };
struct Syntax {
  const char* uid;
  const char* name;
  Codec codec;
};
constexpr Syntax kSyntaxes[] = {
    {"1.2.840.10008.1.2", "Implicit VR Little Endian", Codec::Native},
    {"1.2.840.10008.1.2.1", "Explicit VR Little Endian", Codec::Native},
    {"1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian", Codec::Native},  // DCMTK inflates (zlib)
    {"1.2.840.10008.1.2.2", "Explicit VR Big Endian", Codec::Native},
    {"1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", Codec::Dcmtk},
    {"1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 and 4)", Codec::Dcmtk},
    {"1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)", Codec::Dcmtk},
    {"1.2.840.10008.1.2.4.70",
     "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])", Codec::Dcmtk},
    {"1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression", Codec::Dcmtk},
    {"1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless) Image Compression", Codec::Dcmtk},
    {"1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)", Codec::OpenJpeg},
    {"1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression", Codec::OpenJpeg},
    // HTJ2K: DCMTK 3.6.7 does not know these UIDs (it reads the dataset as explicit VR little endian,
    // the encapsulated fragments intact); OpenJPEG decodes HT code-blocks from 2.5.0 on
    {"1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 Image Compression (Lossless Only)", Codec::OpenJpeg},
    {"1.2.840.10008.1.2.4.202",
     "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)", Codec::OpenJpeg},
    {"1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000 Image Compression", Codec::OpenJpeg},
    {"1.2.840.10008.1.2.5", "RLE Lossless", Codec::Dcmtk},
};

bool is_htj2k(const std::string& uid) { return uid.rfind("1.2.840.10008.1.2.4.20", 0) == 0; }

// The file's transfer syntax UID: the file meta's, else (a dataset without meta) what DCMTK detected.
std::string transfer_syntax_uid(DcmFileFormat& ff, DcmDataset* ds) {
  OFString v;
  DcmMetaInfo* meta = ff.getMetaInfo();
  std::string uid;
  if (meta && meta->findAndGetOFString(DCM_TransferSyntaxUID, v).good()) uid = v.c_str();
  while (!uid.empty() && (uid.back() == ' ' || uid.back() == '\0')) uid.pop_back();
  return uid.empty() ? DcmXfer(ds->getOriginalXfer()).getXferID() : uid;
}

// The supported syntax, or a one-line refusal naming it (its DCMTK name when DCMTK knows the UID).
const Syntax& supported_syntax(const std::string& uid) {
  for (const Syntax& s : kSyntaxes)
    if (uid == s.uid) return s;
  std::string shown;
  for (char c : uid.substr(0, 64)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
  const DcmXfer known(uid.c_str());
  if (known.getXfer() == EXS_Unknown)
    throw Error("transfer syntax '" + shown + "' is not supported: unknown UID");
  throw Error(std::string("transfer syntax ") + known.getXferName() + " (" + shown + ") is not supported");
}

// ---- OpenJPEG from memory ----------------------------------------------------------------------
struct MemStream {
  const uint8_t* data;
  size_t size, pos;
};

OPJ_SIZE_T mem_read(void* buf, OPJ_SIZE_T n, void* user) {
  auto* m = static_cast<MemStream*>(user);
  if (m->pos >= m->size) return static_cast<OPJ_SIZE_T>(-1);
  const size_t k = std::min<size_t>(n, m->size - m->pos);
  std::memcpy(buf, m->data + m->pos, k);
  m->pos += k;
  return k;
}
OPJ_OFF_T mem_skip(OPJ_OFF_T n, void* user) {
  auto* m = static_cast<MemStream*>(user);
  if (n < 0) {
    const size_t back = std::min<size_t>(static_cast<size_t>(-n), m->pos);
    m->pos -= back;
    return -static_cast<OPJ_OFF_T>(back);
  }
  const size_t k = std::min<size_t>(static_cast<size_t>(n), m->size - m->pos);
  m->pos += k;
  return static_cast<OPJ_OFF_T>(k);
}
OPJ_BOOL mem_seek(OPJ_OFF_T n, void* user) {
  auto* m = static_cast<MemStream*>(user);
  if (n < 0 || static_cast<size_t>(n) > m->size) return OPJ_FALSE;
  m->pos = static_cast<size_t>(n);
  return OPJ_TRUE;
}
void opj_error(const char* msg, void* user) {
  auto* s = static_cast<std::string*>(user);
  if (s->empty()) *s = msg ? msg : "";
  while (!s->empty() && (s->back() == '\n' || s->back() == '\r')) s->pop_back();
}
void opj_quiet(const char*, void*) {}

void decode_j2k(const std::vector<uint8_t>& bytes, int rows, int cols, bool is_signed, std::vector<uint16_t>& out) {
  if (bytes.size() < 12) throw Error("JPEG 2000 stream is empty or truncated");
  MemStream ms{bytes.data(), bytes.size(), 0};
  const bool jp2 = !(bytes[0] == 0xFF && bytes[1] == 0x4F);  // J2K codestream starts with SOC FF4F
  opj_codec_t* codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
  opj_stream_t* stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE);
  opj_image_t* img = nullptr;
  std::string err;
  struct Cleanup {
    opj_codec_t*& c;
    opj_stream_t*& s;
    opj_image_t*& i;
    ~Cleanup() {
      if (i) opj_image_destroy(i);
      if (s) opj_stream_destroy(s);
      if (c) opj_destroy_codec(c);
    }
  } cleanup{codec, stream, img};
  if (!codec || !stream) throw Error("OpenJPEG: cannot create a decoder");
  opj_stream_set_user_data(stream, &ms, nullptr);
  opj_stream_set_user_data_length(stream, bytes.size());
  opj_stream_set_read_function(stream, mem_read);
  opj_stream_set_skip_function(stream, mem_skip);
  opj_stream_set_seek_function(stream, mem_seek);
  opj_set_error_handler(codec, opj_error, &err);
  opj_set_warning_handler(codec, opj_quiet, nullptr);
  opj_set_info_handler(codec, opj_quiet, nullptr);
  opj_dparameters_t params;
  opj_set_default_decoder_parameters(&params);
  if (!opj_setup_decoder(codec, &params)) throw Error("OpenJPEG: setup failed: " + err);
  if (!opj_read_header(stream, codec, &img) || !img) throw Error("JPEG 2000 header unreadable: " + err);
  // the codestream's own size before anything is decoded (a damaged header must not size buffers)
  if (img->numcomps != 1) throw Error("JPEG 2000 stream has " + std::to_string(img->numcomps) + " components, need 1");
  if (img->comps[0].w != static_cast<OPJ_UINT32>(cols) || img->comps[0].h != static_cast<OPJ_UINT32>(rows))
    throw Error("JPEG 2000 image is " + std::to_string(img->comps[0].w) + "x" + std::to_string(img->comps[0].h) +
                ", the header says " + std::to_string(cols) + "x" + std::to_string(rows));
  if (!opj_decode(codec, stream, img) || !opj_end_decompress(codec, stream))
    throw Error("JPEG 2000 decode failed: " + err);
  if (img->numcomps != 1) throw Error("JPEG 2000 stream has " + std::to_string(img->numcomps) + " components, need 1");
  const opj_image_comp_t& c = img->comps[0];
  if (static_cast<int>(c.w) != cols || static_cast<int>(c.h) != rows || !c.data)
    throw Error("JPEG 2000 image is " + std::to_string(c.w) + "x" + std::to_string(c.h) + ", the header says " +
                std::to_string(cols) + "x" + std::to_string(rows));
  if (c.prec > 16) throw Error("JPEG 2000 precision " + std::to_string(c.prec) + " > 16 bits");
  out.resize(static_cast<size_t>(rows) * cols);
  for (size_t i = 0; i < out.size(); ++i) {
    const int32_t v = c.data[i];
    (void)is_signed;
    out[i] = static_cast<uint16_t>(static_cast<uint32_t>(v) & 0xffffu);  // two's complement when signed
  }
}

// ---- attribute helpers ---------------------------------------------------------------------------
bool get_int(DcmItem* ds, const DcmTagKey& tag, bool is_signed, int32_t& v) {
  DcmElement* e = nullptr;
  if (ds->findAndGetElement(tag, e).bad() || !e || e->getLength() == 0) return false;
  Uint16 u16;
  Sint16 s16;
  Uint32 u32;
  Sint32 s32;
  if (e->getUint16(u16).good()) v = is_signed ? static_cast<int16_t>(u16) : u16;
  else if (e->getSint16(s16).good()) v = s16;
  else if (e->getUint32(u32).good()) v = static_cast<int32_t>(u32);
  else if (e->getSint32(s32).good()) v = s32;
  else {
    // OB/OW-encoded US/SS (implicit VR "xs"): read the first two bytes
    Uint8* b = nullptr;
    if (e->getUint8Array(b).bad() || !b || e->getLength() < 2) return false;
    uint16_t raw;
    std::memcpy(&raw, b, 2);
    v = is_signed ? static_cast<int16_t>(raw) : raw;
  }
  return true;
}

Uint16 need_u16(DcmItem* ds, const DcmTagKey& tag, const char* name) {
  Uint16 v = 0;
  if (ds->findAndGetUint16(tag, v).bad()) throw Error(std::string("missing or invalid ") + name);
  return v;
}

std::string get_str(DcmItem* ds, const DcmTagKey& tag) {
  OFString s;
  if (ds->findAndGetOFString(tag, s).bad()) return {};
  std::string r = s.c_str();
  while (!r.empty() && r.back() == ' ') r.pop_back();
  return r;
}

// OpenJPEG 2.5.0 or later (HTJ2K decoding came with 2.5.0)
bool openjpeg_has_htj2k() {
  int major = 0, minor = 0;
  return std::sscanf(opj_version(), "%d.%d", &major, &minor) == 2 && (major > 2 || (major == 2 && minor >= 5));
}

// The stored values of the pixel data, decoded: JPEG 2000 / HTJ2K fragments by OpenJPEG, the rest by
// DCMTK (native, deflated and big endian data as read; JPEG, JPEG-LS and RLE by its codecs).
void decode_pixels(DcmDataset* ds, const Syntax& syntax, Uint16 rows, Uint16 cols, Uint16 bits_alloc, bool is_signed,
                   std::vector<uint16_t>& pixels) {
  const size_t n = static_cast<size_t>(rows) * cols;
  DcmElement* pe = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, pe).bad() || !pe) throw Error("no Pixel Data");
  auto* pixel_data = dynamic_cast<DcmPixelData*>(pe);
  if (!pixel_data) throw Error("Pixel Data element is not pixel data");
  const std::string named = std::string(syntax.name) + " (" + syntax.uid + ")";

  if (syntax.codec == Codec::OpenJpeg) {
    if (is_htj2k(syntax.uid) && !openjpeg_has_htj2k())
      throw Error("transfer syntax " + named + " needs OpenJPEG 2.5.0 or later to decode; this build has " +
                  opj_version());
    // the fragments as read (DCMTK keys them by the syntax it parsed with: explicit VR little endian
    // for the HTJ2K UIDs it does not know)
    E_TransferSyntax rep = EXS_Unknown;
    const DcmRepresentationParameter* param = nullptr;
    pixel_data->getCurrentRepresentationKey(rep, param);
    DcmPixelSequence* seq = nullptr;
    if (pixel_data->getEncapsulatedRepresentation(rep, param, seq).bad() || !seq)
      throw Error(named + " transfer syntax but no encapsulated pixel data");
    std::vector<uint8_t> bytes;
    for (unsigned long i = 1; i < seq->card(); ++i) {  // item 0 is the basic offset table
      DcmPixelItem* item = nullptr;
      if (seq->getItem(item, i).bad() || !item) throw Error("unreadable JPEG 2000 fragment");
      Uint8* p = nullptr;
      if (item->getUint8Array(p).bad()) throw Error("unreadable JPEG 2000 fragment");
      if (p) bytes.insert(bytes.end(), p, p + item->getLength());
    }
    decode_j2k(bytes, rows, cols, is_signed, pixels);
    return;
  }
  if (syntax.codec == Codec::Native && pixel_data->getLengthField() == DCM_UndefinedLength)
    throw Error("PixelData (7FE0,0010) is encapsulated, but " + named + " is not compressed");
  const OFCondition st = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
  if (st.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit))
    throw Error("cannot decode " + named + " pixel data: " + st.text());
  if (bits_alloc == 16) {
    const Uint16* p = nullptr;
    unsigned long count = 0;
    if (ds->findAndGetUint16Array(DCM_PixelData, p, &count).bad() || !p)
      throw Error("cannot read decoded 16-bit Pixel Data");
    if (count < n)
      throw Error("Pixel Data has " + std::to_string(count) + " values, Rows x Columns = " + std::to_string(n));
    pixels.assign(p, p + n);  // sized only once the data is known to be there
  } else {
    const Uint8* p = nullptr;
    unsigned long count = 0;
    if (ds->findAndGetUint8Array(DCM_PixelData, p, &count).bad() || !p)
      throw Error("cannot read decoded 8-bit Pixel Data");
    if (count < n)
      throw Error("Pixel Data has " + std::to_string(count) + " bytes, Rows x Columns = " + std::to_string(n));
    pixels.assign(p, p + n);
  }
}

void read_impl(const std::string& path, DicomImage& out, bool require_mg) {
  register_codecs();
  DcmFileFormat ff;
  OFCondition st = ff.loadFile(path.c_str());
  if (st.bad()) throw Error(std::string("cannot read DICOM: ") + st.text());
  DcmDataset* ds = ff.getDataset();
  if (!ds) throw Error("no dataset");

  if (require_mg) {  // as `xpr predict`: MG, FOR PRESENTATION
    const std::string modality = get_str(ds, DCM_Modality);
    if (modality != "MG") throw Error("modality " + (modality.empty() ? std::string("missing") : modality) +
                                      ", not MG (mammography)");
    const std::string sop = get_str(ds, DCM_SOPClassUID);
    const std::string intent = get_str(ds, DCM_PresentationIntentType);
    if (sop == "1.2.840.10008.5.1.4.1.1.1.2.1" || sop == "1.2.840.10008.5.1.4.1.1.1.1.1" ||
        sop == "1.2.840.10008.5.1.4.1.1.1.3.1" || intent == "FOR PROCESSING")
      throw Error("FOR PROCESSING image; use the FOR PRESENTATION image");
  }
  const Uint16 rows = need_u16(ds, DCM_Rows, "Rows"), cols = need_u16(ds, DCM_Columns, "Columns");
  const Uint16 bits_alloc = need_u16(ds, DCM_BitsAllocated, "BitsAllocated");
  const Uint16 bits_stored = need_u16(ds, DCM_BitsStored, "BitsStored");
  Uint16 spp = 1, pixrep = 0;
  ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
  ds->findAndGetUint16(DCM_PixelRepresentation, pixrep);
  const std::string photometric = get_str(ds, DCM_PhotometricInterpretation);
  if (rows == 0 || cols == 0) throw Error("Rows/Columns is 0");
  if (static_cast<uint64_t>(rows) * cols > (uint64_t(1) << 28))
    throw Error("image of " + std::to_string(rows) + "x" + std::to_string(cols) + " pixels is too large");
  if (spp != 1) throw Error("SamplesPerPixel " + std::to_string(spp) + ": need a monochrome image");
  if (photometric != "MONOCHROME1" && photometric != "MONOCHROME2")
    throw Error("PhotometricInterpretation '" + photometric + "': need MONOCHROME1 or MONOCHROME2");
  if (bits_alloc != 16 && bits_alloc != 8) throw Error("BitsAllocated " + std::to_string(bits_alloc) + " not supported");
  if (bits_stored == 0 || bits_stored > bits_alloc) throw Error("BitsStored " + std::to_string(bits_stored) + " invalid");
  OFString frames;
  if (ds->findAndGetOFString(DCM_NumberOfFrames, frames).good() && !frames.empty() && std::strtol(frames.c_str(), nullptr, 10) > 1)
    throw Error("multi-frame image (" + std::string(frames.c_str()) + " frames): need one 2-D mammogram");

  const bool is_signed = pixrep == 1;
  out.transfer_syntax = transfer_syntax_uid(ff, ds);
  decode_pixels(ds, supported_syntax(out.transfer_syntax), rows, cols, bits_alloc, is_signed, out.pixels);

  xpr_image& im = out.image;
  xpr_image_init(&im);
  im.rows = rows;
  im.cols = cols;
  im.bits_stored = bits_stored;
  im.is_signed = is_signed;
  im.monochrome1 = photometric == "MONOCHROME1";
  Float64 f;
  if (ds->findAndGetFloat64(DCM_RescaleSlope, f).good()) im.rescale_slope = f;
  if (ds->findAndGetFloat64(DCM_RescaleIntercept, f).good()) im.rescale_intercept = f;
  Float64 c, w;
  if (ds->findAndGetFloat64(DCM_WindowCenter, c, 0).good() && ds->findAndGetFloat64(DCM_WindowWidth, w, 0).good()) {
    im.has_window = 1;
    im.window_center = c;
    im.window_width = w;
  }
  const std::string fn = get_str(ds, DCM_VOILUTFunction);
  if (fn.empty() || fn == "LINEAR") im.voi_function = XPR_VOI_LINEAR;
  else if (fn == "LINEAR_EXACT") im.voi_function = XPR_VOI_LINEAR_EXACT;
  else if (fn == "SIGMOID") im.voi_function = XPR_VOI_SIGMOID;
  else throw Error("VOILUTFunction '" + fn + "' not supported");
  int32_t pv = 0;
  if (get_int(ds, DCM_PixelPaddingValue, is_signed, pv)) {
    im.has_padding_value = 1;
    im.padding_value = pv;
    if (get_int(ds, DCM_PixelPaddingRangeLimit, is_signed, pv)) {
      im.has_padding_range_limit = 1;
      im.padding_range_limit = pv;
    }
  }
  DcmSequenceOfItems* mlut = nullptr;
  if (ds->findAndGetSequence(DCM_ModalityLUTSequence, mlut).good() && mlut && mlut->card() > 0)
    im.has_modality_lut_sequence = 1;
}

// The file, opened only when it is a regular file (links followed): a FIFO would block the open or
// the read forever and a device (/dev/zero) never ends, so those, sockets, folders and dangling
// links are named and refused before anything is read. The type is checked on the path, then on
// the descriptor opened with O_NONBLOCK (a FIFO swapped in between cannot block); DCMTK then reads
// that descriptor's file through /proc/self/fd when there is one (it reopens by name to load
// pixel data later). Returns the descriptor, or -1 with `why` set.
int open_regular(const std::string& path, std::string& why) {
  const auto kind = [](mode_t m) {
    return S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISDIR(m) ? "a folder" : "a special file";
  };
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    struct stat lst {};
    why = err == ENOENT && ::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)
              ? "is a dangling symbolic link" : std::string("cannot open: ") + std::strerror(err);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) return why = std::string("is ") + kind(st.st_mode) + ", not a regular file", -1;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return why = std::string("cannot open: ") + std::strerror(errno), -1;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return why = std::string("is ") + kind(st.st_mode) + ", not a regular file", -1;
  }
  return fd;
}

}  // namespace

bool read_dicom(const std::string& path, DicomImage& out, std::string& error, bool require_mg) {
  out = DicomImage{};
  out.path = path;
  std::string why;
  const int fd = open_regular(path, why);
  if (fd < 0) {
    error = path + ": " + why;
    return false;
  }
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_it{fd};
  const std::string by_fd = "/proc/self/fd/" + std::to_string(fd);
  const std::string load = ::access(by_fd.c_str(), R_OK) == 0 ? by_fd : path;
  try {
    read_impl(load, out, require_mg);
  } catch (const std::exception& e) {
    error = path + ": " + e.what();
    return false;
  }
  return true;
}

}  // namespace xpr_example
