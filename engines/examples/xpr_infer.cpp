// xpr_infer: the example viewer. Reads the CC and MLO DICOM files of one breast with DCMTK,
// runs the bundle through the xpr C++ API and prints one JSON line:
//   {"prob": ..., "logits": [...], "backend": "...", "selection": [{"view", "stage", "block", "k", "kept"}...]}
// Errors: one JSON line {"error": ..., "status": ...} on stdout, the message on stderr, exit 2.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "dicom_io.h"
#include "xpr/xpr.hpp"

#ifdef XPR_HAVE_PNG
#include <png.h>
#endif

namespace {

const char* kUsage =
    "usage: xpr_infer BUNDLE CC.dcm MLO.dcm [--heatmap OUT.pgm|OUT.png] [--backend auto|onnxruntime|tensorrt]\n"
    "                 [--device auto|cpu|cuda] [--graph fp32|fp16|int8] [--threads N] [--no-verify]\n"
    "                 [--any-modality] [--dump-inputs PREFIX]\n"
    "  --heatmap      selection heatmap (fraction of pruned blocks keeping each region), CC | MLO side by side\n"
    "  --dump-inputs  write the preprocessed model inputs as raw float32: PREFIX.cc.f32, PREFIX.mlo.f32\n";

std::string json_escape(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += static_cast<char>(c);
    else if (c == '\n') o += "\\n";
    else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else o += static_cast<char>(c);
  }
  return o;
}

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

// One line whatever the message holds (a decoder's or ONNX Runtime's text may have line breaks).
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

int fail(const std::string& text, const char* status = "error") {
  const std::string msg = one_line(text);
  std::fprintf(stderr, "xpr_infer: %s\n", msg.c_str());
  std::printf("{\"error\": \"%s\", \"status\": \"%s\"}\n", json_escape(msg).c_str(), status);
  return 2;
}

bool write_raw(const std::string& path, const std::vector<float>& v, std::string& err) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  if (!f) err = path + ": cannot write";
  return static_cast<bool>(f);
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// 8-bit grey image: CC and MLO heatmaps side by side at model-input resolution, 8 px gap.
bool write_heatmap(const xpr::Engine& engine, const std::string& path, std::string& err) {
  const auto [rows, cols] = engine.input_size();
  int32_t gr = 0, gc = 0;
  const std::vector<float> cc = engine.heatmap("cc", &gr, &gc);
  const std::vector<float> mlo = engine.heatmap("mlo", &gr, &gc);
  const int gap = 8, width = 2 * cols + gap;
  std::vector<uint8_t> img(static_cast<size_t>(rows) * width, 0);
  const int sr = rows / gr, sc = cols / gc;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      const size_t g = static_cast<size_t>(std::min(r / sr, gr - 1)) * gc + std::min(c / sc, gc - 1);
      img[static_cast<size_t>(r) * width + c] = static_cast<uint8_t>(std::lround(255.0f * cc[g]));
      img[static_cast<size_t>(r) * width + cols + gap + c] = static_cast<uint8_t>(std::lround(255.0f * mlo[g]));
    }
  if (ends_with(path, ".png")) {
#ifdef XPR_HAVE_PNG
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return err = path + ": cannot write", false;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
      png_destroy_write_struct(&png, &info);
      std::fclose(f);
      return err = path + ": PNG encoding failed", false;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(rows), 8, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int r = 0; r < rows; ++r) png_write_row(png, &img[static_cast<size_t>(r) * width]);
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    return std::fclose(f) == 0 ? true : (err = path + ": write error", false);
#else
    return err = path + ": this build has no PNG support (libpng not found); use .pgm", false;
#endif
  }
  std::ofstream f(path, std::ios::binary);
  f << "P5\n" << width << " " << rows << "\n255\n";
  f.write(reinterpret_cast<const char*>(img.data()), static_cast<std::streamsize>(img.size()));
  if (!f) return err = path + ": cannot write", false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string heatmap, dump, backend = "auto", device = "auto", graph;
  int threads = 0;
  bool verify = true, require_mg = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(std::string(name) + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "-h" || a == "--help") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (a == "--heatmap") heatmap = value("--heatmap");
      else if (a == "--dump-inputs") dump = value("--dump-inputs");
      else if (a == "--backend") backend = value("--backend");
      else if (a == "--device") device = value("--device");
      else if (a == "--graph") graph = value("--graph");
      else if (a == "--threads") threads = std::stoi(value("--threads"));
      else if (a == "--no-verify") verify = false;
      else if (a == "--any-modality") require_mg = false;
      else if (a.size() > 1 && a[0] == '-') throw std::invalid_argument("unknown option " + a);
      else pos.push_back(a);
    } catch (const std::exception& e) {
      std::fputs(kUsage, stderr);
      return fail(e.what(), "usage");
    }
  }
  if (pos.size() != 3) {
    std::fputs(kUsage, stderr);
    return fail("expected BUNDLE CC.dcm MLO.dcm", "usage");
  }

  xpr_options opts;
  xpr_options_init(&opts);
  opts.verify_hashes = verify ? 1 : 0;
  opts.intra_op_threads = threads;
  if (backend == "onnxruntime") opts.backend = XPR_BACKEND_ONNXRUNTIME;
  else if (backend == "tensorrt") opts.backend = XPR_BACKEND_TENSORRT;
  else if (backend != "auto") return fail("--backend must be auto, onnxruntime or tensorrt", "usage");
  if (device == "cpu") opts.device = XPR_DEVICE_CPU;
  else if (device == "cuda") opts.device = XPR_DEVICE_CUDA;
  else if (device != "auto") return fail("--device must be auto, cpu or cuda", "usage");
  if (!graph.empty() && graph != "fp32" && graph != "fp16" && graph != "int8")
    return fail("--graph must be fp32, fp16 or int8", "usage");
  opts.graph = graph.empty() ? nullptr : graph.c_str();

  xpr_example::DicomImage cc, mlo;
  std::string err;
  if (!xpr_example::read_dicom(pos[1], cc, err, require_mg)) return fail(err, "bad DICOM");
  if (!xpr_example::read_dicom(pos[2], mlo, err, require_mg)) return fail(err, "bad DICOM");

  try {
    xpr::Engine engine(pos[0], &opts);
    const xpr_image cc_im = cc.view(), mlo_im = mlo.view();
    if (!dump.empty()) {
      const std::vector<float> a = engine.preprocess(cc_im), b = engine.preprocess(mlo_im);
      if (!write_raw(dump + ".cc.f32", a, err) || !write_raw(dump + ".mlo.f32", b, err)) return fail(err, "io");
      engine.run(a, b);
    } else {
      engine.run(cc_im, mlo_im);
    }
    std::string out = "{\"prob\": " + num(engine.prob()) + ", \"logits\": [";
    const std::vector<float> logits = engine.logits();
    for (size_t i = 0; i < logits.size(); ++i) out += (i ? ", " : "") + num(logits[i]);
    out += "], \"backend\": \"" + json_escape(engine.backend()) + "\"";
    out += ", \"model_file\": \"" + json_escape(engine.model_file()) + "\"";
    out += ", \"cc\": \"" + json_escape(cc.path) + "\", \"mlo\": \"" + json_escape(mlo.path) + "\"";
    out += ", \"transfer_syntax\": [\"" + cc.transfer_syntax + "\", \"" + mlo.transfer_syntax + "\"]";
    out += ", \"selection\": [";
    const auto sel = engine.selections();
    for (size_t i = 0; i < sel.size(); ++i) {
      const auto& s = sel[i];
      out += std::string(i ? ", " : "") + "{\"view\": \"" + s.info.view + "\", \"stage\": " +
             std::to_string(s.info.stage) + ", \"block\": " + std::to_string(s.info.block) +
             ", \"k\": " + std::to_string(s.info.k) + ", \"kept\": [";
      for (size_t j = 0; j < s.kept.size(); ++j) out += (j ? "," : "") + std::to_string(s.kept[j]);
      out += "]}";
    }
    out += "]";
    if (!heatmap.empty()) {
      if (!write_heatmap(engine, heatmap, err)) return fail(err, "io");
      out += ", \"heatmap\": \"" + json_escape(heatmap) + "\"";
    }
    out += "}";
    std::printf("%s\n", out.c_str());
  } catch (const xpr::Error& e) {
    return fail(e.what(), xpr_status_name(e.status()));
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
