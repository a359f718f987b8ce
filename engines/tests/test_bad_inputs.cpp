// Bad bundles, bad DICOM files, bad images and API misuse: every case must come back as an
// xpr_status with a message naming the file and the problem, never a crash. Run under
// AddressSanitizer by `make cpp` (build-asan).
//   test_bad_inputs FIXTURES   (FIXTURES from make_fixture.py: bundle/ and dicom/)
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "check.h"
#include "dicom_io.h"
#include "xpr/xpr.hpp"

namespace fs = std::filesystem;

static std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
static void spit(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

static void replace_once(std::string& s, const std::string& from, const std::string& to) {
  const size_t i = s.find(from);
  if (i != std::string::npos) s.replace(i, from.size(), to);
}

// A fresh copy of the good bundle under `root/name`.
static fs::path copy_bundle(const fs::path& good, const fs::path& root, const std::string& name) {
  const fs::path dst = root / name;
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(good)) fs::copy_file(e.path(), dst / e.path().filename());
  return dst;
}

struct Outcome {
  xpr_status status;
  std::string message;
};

static Outcome open_bundle(const fs::path& dir) {
  xpr_engine* e = nullptr;
  xpr_options o;
  xpr_options_init(&o);
  o.device = XPR_DEVICE_CPU;
  o.intra_op_threads = 1;
  const xpr_status s = xpr_create(dir.c_str(), &o, &e);
  Outcome out{s, xpr_last_error()};
  CHECK((s == XPR_OK) == (e != nullptr));
  xpr_destroy(e);
  return out;
}

static void expect_bundle(const fs::path& dir, xpr_status want, const std::vector<std::string>& parts) {
  const Outcome o = open_bundle(dir);
  std::fprintf(stderr, "  %-28s -> %s: %s\n", dir.filename().c_str(), xpr_status_name(o.status), o.message.c_str());
  CHECK_MSG(o.status == want, dir.string() + ": got " + xpr_status_name(o.status) + ", want " + xpr_status_name(want));
  for (const auto& p : parts) CHECK_MSG(contains(o.message, p), "'" + o.message + "' lacks '" + p + "'");
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_bad_inputs FIXTURES\n");
    return 2;
  }
  const fs::path fix = argv[1], good = fix / "bundle", dicom = fix / "dicom";
  const fs::path work = fix / "bad-bundles";
  fs::create_directories(work);
  const std::string manifest = slurp(good / "manifest.json");

  // ---- the good path first -------------------------------------------------------------------
  xpr_example::DicomImage cc, mlo, j2k;
  std::string err;
  CHECK_MSG(xpr_example::read_dicom((dicom / "good_m2.dcm").string(), cc, err), err);
  CHECK_MSG(xpr_example::read_dicom((dicom / "good_m1_rle.dcm").string(), mlo, err), err);
  CHECK_MSG(xpr_example::read_dicom((dicom / "good_j2k.dcm").string(), j2k, err), err);
  {
    xpr_options o;
    xpr_options_init(&o);
    o.device = XPR_DEVICE_CPU;
    o.intra_op_threads = 1;
    xpr::Engine engine(good.string(), &o);
    engine.run(cc.view(), mlo.view());
    const float p = engine.prob();
    CHECK(p >= 0.f && p <= 1.f);
    CHECK(engine.logits().size() == 2);
    const auto sel = engine.selections();
    CHECK(sel.size() == 2);
    for (const auto& s : sel) CHECK(s.kept.size() == 64 && s.info.k == 64);
    engine.run(j2k.view(), j2k.view());
    int32_t gr = 0, gc = 0;
    const auto hm = engine.heatmap("cc", &gr, &gc);
    CHECK(gr == 112 && gc == 56);
    double kept = 0;
    for (float v : hm) kept += v;
    CHECK(std::abs(kept - 64 * 49) < 1e-3);  // one block, 64 windows of 7x7 tokens
  }

  // ---- bad bundles ---------------------------------------------------------------------------
  std::fprintf(stderr, "bad bundles:\n");
  expect_bundle(work / "does-not-exist", XPR_ERR_IO, {"manifest.json"});
  {
    fs::path b = copy_bundle(good, work, "no-manifest");
    fs::remove(b / "manifest.json");
    expect_bundle(b, XPR_ERR_IO, {"manifest.json", "cannot open"});
  }
  {
    fs::path b = copy_bundle(good, work, "missing-model");
    fs::remove(b / "model.onnx");
    expect_bundle(b, XPR_ERR_IO, {"model.onnx", "missing"});
  }
  {
    fs::path b = copy_bundle(good, work, "hash-mismatch");
    std::string m = slurp(b / "model.onnx");
    m[m.size() / 2] = static_cast<char>(m[m.size() / 2] ^ 0x5a);
    spit(b / "model.onnx", m);
    expect_bundle(b, XPR_ERR_HASH, {"model.onnx", "SHA-256 mismatch"});
  }
  {
    fs::path b = copy_bundle(good, work, "truncated-model");
    std::string m = slurp(b / "model.onnx");
    spit(b / "model.onnx", m.substr(0, m.size() / 2));
    expect_bundle(b, XPR_ERR_HASH, {"model.onnx"});
  }
  {  // a garbage model whose hash was updated: the backend must refuse it, not crash
    fs::path b = copy_bundle(good, work, "garbage-model");
    std::string junk(4096, '\x07');
    spit(b / "model.onnx", junk);
    // recompute its SHA-256 via the library's own check: read the message's "file <hex>"
    const Outcome o = open_bundle(b);
    const size_t at = o.message.find("file ");
    CHECK(at != std::string::npos);
    if (at != std::string::npos) {
      std::string m = manifest;
      const size_t h = m.find("\"model.onnx\": \"", m.find("\"files\""));
      if (h != std::string::npos) m.replace(h + 15, 64, o.message.substr(at + 5, 64));
      spit(b / "manifest.json", m);
      expect_bundle(b, XPR_ERR_BACKEND, {"model.onnx", "ONNX Runtime"});
    }
  }
  {
    fs::path b = copy_bundle(good, work, "wrong-toolkit-version");
    std::string m = manifest;
    replace_once(m, "\"toolkit_version\": \"", "\"toolkit_version\": \"9.");
    spit(b / "manifest.json", m);
    expect_bundle(b, XPR_ERR_VERSION, {"manifest.json", "xpr 9."});
  }
  {
    fs::path b = copy_bundle(good, work, "wrong-preproc-version");
    std::string m = manifest;
    replace_once(m, "xpr-preproc-1", "xpr-preproc-2");
    spit(b / "manifest.json", m);
    expect_bundle(b, XPR_ERR_VERSION, {"manifest.json", "xpr-preproc-2"});
  }
  {
    fs::path b = copy_bundle(good, work, "wrong-format-version");
    std::string m = manifest;
    replace_once(m, "\"format_version\": 1", "\"format_version\": 2");
    spit(b / "manifest.json", m);
    expect_bundle(b, XPR_ERR_VERSION, {"manifest.json", "format version"});
  }
  {
    fs::path b = copy_bundle(good, work, "not-json");
    spit(b / "manifest.json", manifest.substr(0, manifest.size() / 2));
    expect_bundle(b, XPR_ERR_MANIFEST, {"manifest.json", "not valid JSON"});
  }
  {
    fs::path b = copy_bundle(good, work, "not-a-bundle");
    std::string m = manifest;
    replace_once(m, "\"xpr-bundle\"", "\"something-else\"");
    spit(b / "manifest.json", m);
    expect_bundle(b, XPR_ERR_MANIFEST, {"manifest.json", "xpr-bundle"});
  }
  {
    fs::path b = copy_bundle(good, work, "json-array");
    spit(b / "manifest.json", "[1, 2, 3]");
    expect_bundle(b, XPR_ERR_MANIFEST, {"manifest.json"});
  }
  {
    fs::path b = copy_bundle(good, work, "no-inputs");
    std::string m = manifest;
    replace_once(m, "\"inputs\"", "\"inputz\"");
    spit(b / "manifest.json", m);
    expect_bundle(b, XPR_ERR_MANIFEST, {"manifest.json", "inputs"});
  }
  {
    fs::path b = copy_bundle(good, work, "path-escape");
    std::string m = manifest;
    replace_once(m, "\"files\": {", "\"files\": {\"../../etc/passwd\": \"" + std::string(64, 'a') + "\", ");
    spit(b / "manifest.json", m);
    expect_bundle(b, XPR_ERR_MANIFEST, {"../../etc/passwd"});
  }
  {
    fs::path b = copy_bundle(good, work, "bad-digest");
    std::string m = manifest;
    replace_once(m, "\"files\": {", "\"files\": {\"extra.bin\": \"xyz\", ");
    spit(b / "manifest.json", m);
    expect_bundle(b, XPR_ERR_MANIFEST, {"extra.bin", "SHA-256"});
  }
  {
    fs::path b = copy_bundle(good, work, "wrong-types");
    std::string m = manifest;
    replace_once(m, "\"k\": 64", "\"k\": \"many\"");
    spit(b / "manifest.json", m);
    expect_bundle(b, XPR_ERR_MANIFEST, {"manifest.json", "k"});
  }

  // ---- bad DICOM files -----------------------------------------------------------------------
  std::fprintf(stderr, "bad DICOM:\n");
  xpr_options o;
  xpr_options_init(&o);
  o.device = XPR_DEVICE_CPU;
  o.intra_op_threads = 1;
  xpr::Engine engine(good.string(), &o);
  int bad_files = 0;
  for (const auto& e : fs::directory_iterator(dicom)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("bad_", 0) != 0) continue;
    ++bad_files;
    xpr_example::DicomImage im;
    std::string msg;
    xpr_status s = XPR_OK;
    if (xpr_example::read_dicom(e.path().string(), im, msg)) {
      const xpr_image v = im.view();
      s = xpr_run(engine.get(), &v, &v);
      msg = xpr_last_error();
    } else {
      s = XPR_ERR_IMAGE;
    }
    std::fprintf(stderr, "  %-28s -> %s\n", name.c_str(), msg.c_str());
    CHECK_MSG(s != XPR_OK, name + " was accepted");
    CHECK_MSG(contains(msg, name), "'" + msg + "' does not name the file");
    CHECK(xpr_num_selections(engine.get()) == 0);
  }
  CHECK(bad_files >= 8);

  // ---- API misuse ------------------------------------------------------------------------------
  {
    float p = 0.f;
    CHECK(xpr_get_prob(engine.get(), &p) == XPR_ERR_STATE);  // last run failed
    CHECK(xpr_get_prob(nullptr, &p) == XPR_ERR_ARGUMENT);
    CHECK(xpr_run(engine.get(), nullptr, nullptr) == XPR_ERR_ARGUMENT);
    CHECK(xpr_create(nullptr, nullptr, nullptr) == XPR_ERR_ARGUMENT);
    std::vector<float> small(10);
    const xpr_image v = cc.view();
    CHECK(xpr_preprocess(engine.get(), &v, small.data(), small.size()) == XPR_ERR_ARGUMENT);
    CHECK(xpr_run_preprocessed(engine.get(), small.data(), small.data(), small.size()) == XPR_ERR_ARGUMENT);
    xpr_image im;
    xpr_image_init(&im);
    CHECK(xpr_run(engine.get(), &im, &im) == XPR_ERR_IMAGE);
    CHECK(contains(xpr_last_error(), "image: no pixel data"));
    engine.run(cc.view(), mlo.view());
    xpr_selection_info info;
    const int64_t* idx = nullptr;
    CHECK(xpr_get_selection(engine.get(), 2, &info, &idx) == XPR_ERR_ARGUMENT);
    CHECK(xpr_get_selection(engine.get(), -1, &info, &idx) == XPR_ERR_ARGUMENT);
    float logits[1];
    CHECK(xpr_get_logits(engine.get(), logits, 1) == XPR_ERR_ARGUMENT);
    int32_t gr, gc;
    CHECK(xpr_selection_heatmap(engine.get(), "lcc", small.data(), small.size(), &gr, &gc) == XPR_ERR_ARGUMENT);
    CHECK(xpr_selection_heatmap(engine.get(), "cc", small.data(), small.size(), &gr, &gc) == XPR_ERR_ARGUMENT);
    xpr_destroy(nullptr);
  }
  std::printf("test_bad_inputs: %d failure(s)\n", g_failures);
  return g_failures ? 1 : 0;
}
