// Bad bundles, bad DICOM files, bad images and API misuse: every case must come back as an
// xpr_status with a message naming the file and the problem, never a crash. Run under
// AddressSanitizer by `make cpp` (build-asan).
//   test_bad_inputs FIXTURES   (FIXTURES from make_fixture.py: bundle/, bundle_renamed/ and dicom/)
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "check.h"
#include "failure.h"
#include "dicom_io.h"
#include "manifest.h"
#include "sha256.h"
#include "xpr/xpr.hpp"

namespace fs = std::filesystem;

static std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
static void spit(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// `from` replaced by `to` once; a test whose pattern is gone fails instead of testing nothing.
static std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const size_t i = s.find(from);
  CHECK_MSG(i != std::string::npos, "pattern '" + from + "' not in the manifest");
  if (i != std::string::npos) s.replace(i, from.size(), to);
  return s;
}

// A fresh copy of the good bundle under `root/name`.
static fs::path copy_bundle(const fs::path& good, const fs::path& root, const std::string& name) {
  const fs::path dst = root / name;
  fs::remove_all(dst);
  fs::create_directories(dst.parent_path());
  fs::copy(good, dst, fs::copy_options::recursive);
  return dst;
}

// A copy whose manifest.json is `text` (sealed again when `seal`: the check under test is then the
// one after the seal, not the seal).
static fs::path with_manifest(const fs::path& good, const fs::path& root, const std::string& name,
                              const std::string& text, bool seal = true) {
  const fs::path b = copy_bundle(good, root, name);
  spit(b / "manifest.json", seal ? xpr::detail::reseal(text) : text);
  return b;
}

struct Outcome {
  xpr_status status;
  std::string message;
};

static Outcome open_bundle(const fs::path& dir, bool verify_hashes = true) {
  xpr_engine* e = nullptr;
  xpr_options o;
  xpr_options_init(&o);
  o.device = XPR_DEVICE_CPU;
  o.intra_op_threads = 1;
  o.verify_hashes = verify_hashes ? 1 : 0;
  const xpr_status s = xpr_create(dir.c_str(), &o, &e);
  Outcome out{s, xpr_last_error()};
  CHECK((s == XPR_OK) == (e != nullptr));
  xpr_destroy(e);
  return out;
}

static void expect_bundle(const fs::path& dir, xpr_status want, const std::vector<std::string>& parts,
                          bool verify_hashes = true) {
  const Outcome o = open_bundle(dir, verify_hashes);
  std::fprintf(stderr, "  %-28s -> %s: %s\n", dir.filename().c_str(), xpr_status_name(o.status), o.message.c_str());
  CHECK_MSG(o.status == want, dir.string() + ": got " + xpr_status_name(o.status) + ", want " + xpr_status_name(want));
  CHECK_MSG(o.message.find('\n') == std::string::npos, "'" + o.message + "' is more than one line");
  for (const auto& p : parts) CHECK_MSG(contains(o.message, p), "'" + o.message + "' lacks '" + p + "'");
}

// prob and kept windows of a run on one bundle
static std::pair<float, std::vector<xpr::Selection>> run_bundle(const fs::path& dir, const xpr_example::DicomImage& cc,
                                                                 const xpr_example::DicomImage& mlo) {
  xpr_options o;
  xpr_options_init(&o);
  o.device = XPR_DEVICE_CPU;
  o.intra_op_threads = 1;
  xpr::Engine engine(dir.string(), &o);
  engine.run(cc.view(), mlo.view());
  return {engine.prob(), engine.selections()};
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

  // ---- bad bundles: the rules of xpr_deploy/bundle/reader.py, one error line each -------------
  std::fprintf(stderr, "bad bundles:\n");
  const std::string H64(64, 'a');
  expect_bundle(work / "does-not-exist", XPR_ERR_IO, {"manifest.json"});
  {
    fs::path b = copy_bundle(good, work, "no-manifest");
    fs::remove(b / "manifest.json");
    expect_bundle(b, XPR_ERR_IO, {"manifest.json", "cannot open"});
  }
  // rule 1: manifest.json itself
  expect_bundle(with_manifest(good, work, "not-json", manifest.substr(0, manifest.size() / 2), false),
                XPR_ERR_MANIFEST, {"manifest.json", "not valid JSON"});
  expect_bundle(with_manifest(good, work, "json-array", "[1, 2, 3]", false), XPR_ERR_MANIFEST, {"manifest.json"});
  expect_bundle(with_manifest(good, work, "not-a-bundle", replaced(manifest, "\"xpr-bundle\"", "\"something-else\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "xpr-bundle"});
  // format 1 (or anything but 2): re-export; checked before the seal, so no re-sealing here
  for (const char* v : {"1", "3", "\"2\""}) {
    const fs::path b = with_manifest(good, work, std::string("format-version-") + (v[0] == '"' ? "str" : v),
                                     replaced(manifest, "\"format_version\": 2", std::string("\"format_version\": ") + v),
                                     false);
    expect_bundle(b, XPR_ERR_VERSION, {"manifest.json", "format version", "re-export"});
  }
  {
    fs::path b = copy_bundle(good, work, "manifest-symlink");
    fs::rename(b / "manifest.json", work / "manifest-symlink.json");
    fs::create_symlink(work / "manifest-symlink.json", b / "manifest.json");
    expect_bundle(b, XPR_ERR_BUNDLE, {"manifest.json", "symbolic link"});
  }
  {
    fs::path b = copy_bundle(good, work, "manifest-dir");
    fs::remove(b / "manifest.json");
    fs::create_directory(b / "manifest.json");
    expect_bundle(b, XPR_ERR_BUNDLE, {"manifest.json", "not a regular file"});
  }
  expect_bundle(with_manifest(good, work, "manifest-too-large",
                              manifest + std::string(xpr::detail::kMaxManifestBytes, ' '), false),
                XPR_ERR_MANIFEST, {"manifest.json", "larger than any manifest"});

  // rule 2: the seal
  {
    const std::string edited = replaced(manifest, "\"threshold\": 0.5", "\"threshold\": 0.05");
    const fs::path b = with_manifest(good, work, "edited-threshold", edited, false);
    expect_bundle(b, XPR_ERR_HASH, {"manifest.json", "differs from its seal", "edited"});
    expect_bundle(b, XPR_ERR_HASH, {"manifest.json", "differs from its seal"}, /*verify_hashes=*/false);
    // the same edit, sealed again: accepted (the test's own re-sealing is the rule)
    expect_bundle(with_manifest(good, work, "edited-threshold-resealed", edited), XPR_OK, {});
  }
  // operating points: the named default must be one of them and carry the top-level threshold
  expect_bundle(with_manifest(good, work, "op-default-youden",
                              replaced(manifest, "\"operating_point\": null", "\"operating_point\": \"youden\"")),
                XPR_OK, {});
  expect_bundle(with_manifest(good, work, "op-default-unknown",
                              replaced(manifest, "\"operating_point\": null", "\"operating_point\": \"sens=0.80\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "'sens=0.80' is not among operating_points"});
  expect_bundle(with_manifest(good, work, "op-default-other-threshold",
                              replaced(manifest, "\"operating_point\": null", "\"operating_point\": \"sens=0.90\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "is not the threshold of its operating point 'sens=0.90'"});
  expect_bundle(with_manifest(good, work, "op-threshold-out-of-range",
                              replaced(manifest, "\"threshold\": 0.75", "\"threshold\": 7.5")),
                XPR_ERR_MANIFEST, {"manifest.json", "operating_points.spec=0.90.threshold"});
  // values the preprocessing uses: refused at load, naming the manifest (not every image as "empty breast")
  expect_bundle(with_manifest(good, work, "pre-mask-threshold-huge",
                              replaced(manifest, "\"mask_threshold\": 0.05", "\"mask_threshold\": 1e308")),
                XPR_ERR_MANIFEST, {"manifest.json", "preprocessing.mask_threshold", "not in [0, 1)"});
  expect_bundle(with_manifest(good, work, "pre-profile-threshold-negative",
                              replaced(manifest, "\"profile_threshold\": 0.02", "\"profile_threshold\": -1")),
                XPR_ERR_MANIFEST, {"manifest.json", "preprocessing.profile_threshold"});
  expect_bundle(with_manifest(good, work, "pre-std-negative", replaced(manifest, "\"std\": 0.226", "\"std\": -1")),
                XPR_ERR_MANIFEST, {"manifest.json", "preprocessing.std", "must be > 0"});
  // sizes past any real bundle, refused before anything is computed from them (int overflow before)
  expect_bundle(with_manifest(good, work, "batch-uint64", replaced(manifest, "\"batch\": 1", "\"batch\": 18446744073709551615")),
                XPR_ERR_MANIFEST, {"manifest.json", "batch out of range"});
  // a dynamic batch axis (--max-batch): max_batch within batch..kMaxBatch, and -1 first in every shape
  expect_bundle(with_manifest(good, work, "max-batch-huge", replaced(manifest, "\"batch\": 1", "\"batch\": 1, \"max_batch\": 65")),
                XPR_ERR_MANIFEST, {"manifest.json", "max_batch 65 not in 1..64"});
  expect_bundle(with_manifest(good, work, "max-batch-static-shapes",
                              replaced(manifest, "\"batch\": 1", "\"batch\": 1, \"max_batch\": 4")),
                XPR_ERR_MANIFEST, {"manifest.json", "must start with -1 (the manifest has max_batch)"});
  expect_bundle(with_manifest(good, work, "window-grid-overflow",
                              replaced(manifest, "\"window_grid\": [\n        16,\n        8\n      ]",
                                       "\"window_grid\": [1073741824, 1073741824]")),
                XPR_ERR_MANIFEST, {"manifest.json", "window grid larger than the model input"});
  expect_bundle(with_manifest(good, work, "patch-size-huge",
                              replaced(manifest, "\"patch_size\": 4", "\"patch_size\": 1073741824")),
                XPR_ERR_MANIFEST, {"manifest.json", "do not fit model_config.img_size"});
  expect_bundle(with_manifest(good, work, "edited-io", replaced(manifest, "\"prob\": \"prob\"", "\"prob\": \"logits\""),
                              false),
                XPR_ERR_HASH, {"manifest.json", "differs from its seal"});
  {
    std::string m = manifest;
    const size_t at = m.find("\"manifest_sha256\": \"");
    CHECK(at != std::string::npos);
    m[at + 1] = 'M';  // "Manifest_sha256": no seal field left
    expect_bundle(with_manifest(good, work, "no-seal", m, false), XPR_ERR_MANIFEST,
                  {"manifest.json", "no manifest_sha256 seal"});
    std::string two = replaced(manifest, "\"source_checkpoint\": {",
                               "\"source_checkpoint\": {\"manifest_sha256\": \"" + H64 + "\", ");
    expect_bundle(with_manifest(good, work, "two-seals", two, false), XPR_ERR_MANIFEST,
                  {"manifest.json", "2 manifest_sha256 fields"});
  }
  {
    std::string m = manifest;
    const size_t at = m.find("\"manifest_sha256\": \"");
    m.replace(at + 20, 64, std::string(64, 'A'));  // upper case: not the seal's form
    expect_bundle(with_manifest(good, work, "seal-upper-case", m, false), XPR_ERR_MANIFEST, {"manifest_sha256"});
  }

  // rule 3: every path a plain relative path; those outside `files` among the hashed files
  const std::vector<std::pair<std::string, std::string>> bad_paths = {
      {"dotdot", "../x"}, {"dotdot-inner", "a/../model.onnx"}, {"absolute", "/etc/passwd"}, {"dot", "./model.onnx"},
      {"empty-part", "a//model.onnx"}, {"trailing-slash", "model.onnx/"}, {"backslash", "a\\\\model.onnx"},
      {"colon", "c:model.onnx"}, {"nul", "model\\u0000.onnx"}, {"empty", ""}};
  for (const auto& [name, path] : bad_paths) {
    const std::string shown = name == "backslash" ? "a\\model.onnx" : name == "nul" ? "model" : path;
    expect_bundle(with_manifest(good, work, "graphs-" + name,
                                replaced(manifest, "\"fp32\": \"model.onnx\"", "\"fp32\": \"" + path + "\"")),
                  XPR_ERR_MANIFEST, {"manifest.json", "graphs.fp32", "'" + shown, "not a plain relative path"});
    expect_bundle(with_manifest(good, work, "files-" + name,
                                replaced(manifest, "\"files\": {", "\"files\": {\"" + path + "\": \"" + H64 + "\", ")),
                  XPR_ERR_MANIFEST, {"manifest.json", "files", "'" + shown, "not a plain relative path"});
  }
  expect_bundle(with_manifest(good, work, "model-absolute",
                              replaced(manifest, "\"model\": \"model.onnx\"", "\"model\": \"/tmp/model.onnx\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "model", "/tmp/model.onnx"});
  expect_bundle(with_manifest(good, work, "parity-dotdot",
                              replaced(manifest, "\"parity\": \"parity.json\"", "\"parity\": \"../parity.json\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "parity", "../parity.json"});
  expect_bundle(with_manifest(good, work, "graph-unlisted",
                              replaced(manifest, "\"fp32\": \"model.onnx\"", "\"fp32\": \"other.onnx\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "graphs.fp32 'other.onnx'", "not among the hashed files"});
  {
    const std::string engine = "{\"backend\": \"tensorrt-rtx\", \"version\": \"1.2.0\", \"compute_capability\": \"8.6\", "
                               "\"compute_capabilities\": [\"8.6\"], \"hw_compat\": \"same\", \"flags\": [], "
                               "\"strongly_typed\": true, \"timing_cache_sha256\": null, \"plugins_required\": [], "
                               "\"sha256\": \"" + H64 + "\", ";
    expect_bundle(with_manifest(good, work, "engine-path-dotdot",
                                replaced(manifest, "\"engines\": []", "\"engines\": [" + engine +
                                         "\"path\": \"../model.engine\", \"onnx\": \"model.onnx\"}]")),
                  XPR_ERR_MANIFEST, {"manifest.json", "engines[0].path", "../model.engine"});
    expect_bundle(with_manifest(good, work, "engine-onnx-unlisted",
                                replaced(manifest, "\"engines\": []", "\"engines\": [" + engine +
                                         "\"path\": \"model.onnx\", \"onnx\": \"model.fp16.onnx\"}]")),
                  XPR_ERR_MANIFEST, {"manifest.json", "engines[0].onnx 'model.fp16.onnx'", "not among the hashed"});
    expect_bundle(with_manifest(good, work, "engine-timing-cache-absolute",
                                replaced(manifest, "\"engines\": []", "\"engines\": [" + engine +
                                         "\"path\": \"model.onnx\", \"onnx\": \"model.onnx\", "
                                         "\"timing_cache\": \"/tmp/timing.cache\"}]")),
                  XPR_ERR_MANIFEST, {"manifest.json", "engines[0].timing_cache", "/tmp/timing.cache"});
  }

  // rule 4: exactly the listed files, no links, each with its SHA-256
  {
    fs::path b = copy_bundle(good, work, "missing-model");
    fs::remove(b / "model.onnx");
    expect_bundle(b, XPR_ERR_IO, {"model.onnx", "missing", "manifest.json"});
    b = copy_bundle(good, work, "missing-parity");
    fs::remove(b / "parity.json");
    expect_bundle(b, XPR_ERR_IO, {"parity.json", "missing"});
  }
  {
    fs::path b = copy_bundle(good, work, "extra-file");
    spit(b / "notes.txt", "not listed\n");
    expect_bundle(b, XPR_ERR_BUNDLE, {"notes.txt", "not listed in", "manifest.json"});
    expect_bundle(b, XPR_ERR_BUNDLE, {"notes.txt", "not listed in"}, /*verify_hashes=*/false);
    b = copy_bundle(good, work, "extra-file-in-folder");
    fs::create_directories(b / "engines");
    spit(b / "engines" / "model.sm86.engine", "not listed\n");
    expect_bundle(b, XPR_ERR_BUNDLE, {"engines/model.sm86.engine", "not listed in"});
    b = copy_bundle(good, work, "extra-file-newline");
    spit(b / "evil\nname", "x");
    expect_bundle(b, XPR_ERR_BUNDLE, {"evil\\x0aname", "not listed in"});
    b = copy_bundle(good, work, "empty-folder");  // a folder holds no file: nothing to refuse
    fs::create_directories(b / "engines");
    expect_bundle(b, XPR_OK, {});
  }
  {
    fs::path b = copy_bundle(good, work, "symlink-extra");
    fs::create_symlink("model.onnx", b / "link.onnx");
    expect_bundle(b, XPR_ERR_BUNDLE, {"link.onnx", "symbolic link"});
    b = copy_bundle(good, work, "symlink-listed");  // the listed file itself a link (to identical bytes)
    fs::rename(b / "model.onnx", work / "symlink-listed.onnx");
    fs::create_symlink(work / "symlink-listed.onnx", b / "model.onnx");
    expect_bundle(b, XPR_ERR_BUNDLE, {"model.onnx", "symbolic link"});
    expect_bundle(b, XPR_ERR_BUNDLE, {"model.onnx", "symbolic link"}, /*verify_hashes=*/false);
    b = copy_bundle(good, work, "symlink-dangling");
    fs::create_symlink("/nonexistent/x", b / "dangling");
    expect_bundle(b, XPR_ERR_BUNDLE, {"dangling", "symbolic link"});
    b = copy_bundle(good, work, "symlink-folder");
    // a link to an empty folder beside the bundle, never to an ancestor: tools that walk the build tree
    // following links (setuptools' package finder in `pip install -e`) would loop through it
    fs::create_directories(work / "symlink-folder-target");
    fs::create_directory_symlink(work / "symlink-folder-target", b / "engines");
    expect_bundle(b, XPR_ERR_BUNDLE, {"engines", "symbolic link"});
    b = copy_bundle(good, work, "special-file");
    CHECK(mkfifo((b / "fifo").c_str(), 0600) == 0);
    expect_bundle(b, XPR_ERR_BUNDLE, {"fifo", "special file"});
  }
  {
    fs::path b = copy_bundle(good, work, "hash-mismatch");
    std::string m = slurp(b / "model.onnx");
    m[m.size() / 2] = static_cast<char>(m[m.size() / 2] ^ 0x5a);
    spit(b / "model.onnx", m);
    expect_bundle(b, XPR_ERR_HASH, {"model.onnx", "SHA-256 mismatch"});
    b = copy_bundle(good, work, "hash-mismatch-parity");  // every file is checked, not just the model
    spit(b / "parity.json", "{\"ok\": true}\n");
    expect_bundle(b, XPR_ERR_HASH, {"parity.json", "SHA-256 mismatch"});
    b = copy_bundle(good, work, "truncated-model");
    spit(b / "model.onnx", slurp(good / "model.onnx").substr(0, m.size() / 2));
    expect_bundle(b, XPR_ERR_HASH, {"model.onnx"});
  }
  {  // a garbage model whose hash was updated and the manifest sealed again: the backend must refuse it
    const std::string junk(4096, '\x07');
    const std::string want = xpr::detail::sha256_hex(junk.data(), junk.size());
    const size_t h = manifest.find("\"model.onnx\": \"", manifest.find("\"files\""));
    CHECK(h != std::string::npos);
    std::string m = manifest;
    m.replace(h + 15, 64, want);
    fs::path b = with_manifest(good, work, "garbage-model", m);
    spit(b / "model.onnx", junk);  // the reader parses every graph (external data): refused there
    expect_bundle(b, XPR_ERR_BUNDLE, {"model.onnx", "not a readable ONNX graph"});
  }
  // ---- a manifest nested deeper than any (issue 21): refused before nlohmann builds it, as in Python
  {
    auto nested = [](int depth) {  // depth levels, the top-level object counting 1
      return "{\"lint\": " + std::string(depth - 1, '[') + std::string(depth - 1, ']') + "}";
    };
    for (int depth : {100000, xpr::detail::kMaxJsonDepth + 1}) {
      std::string why;
      try {
        xpr::detail::parse_manifest(nested(depth), "deep/manifest.json");
      } catch (const xpr::detail::Failure& f) {
        why = f.what();
      }
      CHECK_MSG(why == "deep/manifest.json: values nested deeper than 64 levels; no manifest is", why);
    }
    std::string why;  // at the bound: refused later, for what it lacks, not for its depth
    try {
      xpr::detail::parse_manifest(nested(xpr::detail::kMaxJsonDepth), "deep/manifest.json");
    } catch (const xpr::detail::Failure& f) {
      why = f.what();
    }
    CHECK_MSG(!why.empty() && !contains(why, "nested"), why);
    // through the C API: one line naming manifest.json
    const fs::path b = with_manifest(good, work, "deep-manifest",
                                     replaced(manifest, "\"io\": {", "\"deep\": " + std::string(100000, '[') +
                                                                          std::string(100000, ']') + ", \"io\": {"));
    expect_bundle(b, XPR_ERR_MANIFEST, {"manifest.json", "nested deeper than 64 levels"});
  }

  // rule 5: the I/O roles name real tensors; selection outputs are outputs
  expect_bundle(with_manifest(good, work, "io-not-an-input", replaced(manifest, "\"cc\": \"cc\"", "\"cc\": \"left\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "io.cc 'left'", "not an input"});
  expect_bundle(with_manifest(good, work, "io-output-as-input",
                              replaced(manifest, "\"mlo\": \"mlo\"", "\"mlo\": \"prob\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "io.mlo 'prob'", "not an input"});
  expect_bundle(with_manifest(good, work, "io-not-an-output",
                              replaced(manifest, "\"logits\": \"logits\"", "\"logits\": \"scores\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "io.logits 'scores'", "not an output"});
  {
    const size_t at = manifest.find("\"io\": {");
    const size_t close = manifest.find('}', at);
    std::string m = manifest;
    m.replace(at, close + 1 - at, "\"io\": {\"cc\": \"cc\", \"mlo\": \"mlo\", \"logits\": \"logits\"}");
    expect_bundle(with_manifest(good, work, "io-no-prob", m), XPR_ERR_MANIFEST, {"manifest.json", "io", "prob"});
    m = manifest;
    m.replace(at, close + 1 - at, "\"iox\": {}");
    expect_bundle(with_manifest(good, work, "no-io", m), XPR_ERR_MANIFEST, {"manifest.json", "'io'"});
  }
  expect_bundle(with_manifest(good, work, "selection-not-an-output",
                              replaced(manifest, "\"selection_output\": \"sel_cc_s1_b0\"",
                                       "\"selection_output\": \"sel_cc_s1_b9\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "selection_output 'sel_cc_s1_b9'", "not an output"});
  {  // the graph's I/O names must be the manifest's: the renamed model under the default names
    const std::string onnx = slurp(fix / "bundle_renamed" / "model.onnx");
    const size_t h = manifest.find("\"model.onnx\": \"", manifest.find("\"files\""));
    std::string m = manifest;
    m.replace(h + 15, 64, xpr::detail::sha256_hex(onnx.data(), onnx.size()));
    fs::path b = with_manifest(good, work, "io-not-the-graphs", m);
    spit(b / "model.onnx", onnx);
    expect_bundle(b, XPR_ERR_BACKEND, {"model.onnx", "view_a"});
  }

  // other fields, each edit sealed again
  expect_bundle(with_manifest(good, work, "wrong-toolkit-version",
                              replaced(manifest, "\"toolkit_version\": \"", "\"toolkit_version\": \"9.")),
                XPR_ERR_VERSION, {"manifest.json", "xpr 9."});
  expect_bundle(with_manifest(good, work, "wrong-preproc-version", replaced(manifest, "xpr-preproc-1", "xpr-preproc-2")),
                XPR_ERR_VERSION, {"manifest.json", "xpr-preproc-2"});
  expect_bundle(with_manifest(good, work, "no-inputs", replaced(manifest, "\"inputs\"", "\"inputz\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "inputs"});
  expect_bundle(with_manifest(good, work, "bad-digest",
                              replaced(manifest, "\"files\": {", "\"files\": {\"extra.bin\": \"xyz\", ")),
                XPR_ERR_MANIFEST, {"extra.bin", "SHA-256"});
  expect_bundle(with_manifest(good, work, "wrong-types", replaced(manifest, "\"k\": 64", "\"k\": \"many\"")),
                XPR_ERR_MANIFEST, {"manifest.json", "k"});
  expect_bundle(with_manifest(good, work, "threshold-out-of-range",
                              replaced(manifest, "\"threshold\": 0.5", "\"threshold\": 1.5")),
                XPR_ERR_MANIFEST, {"manifest.json", "threshold"});

  // ---- renamed I/O: every tensor name from the manifest's io -----------------------------------
  {
    const auto [p_default, sel_default] = run_bundle(good, cc, mlo);
    const auto [p_renamed, sel_renamed] = run_bundle(fix / "bundle_renamed", cc, mlo);
    CHECK(p_renamed == p_default);
    CHECK(sel_renamed.size() == 2 && sel_default.size() == 2);
    for (size_t i = 0; i < std::min(sel_renamed.size(), sel_default.size()); ++i)
      CHECK(sel_renamed[i].kept == sel_default[i].kept);
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

  // ---- ONNX external data (issue 21): read from listed files of the bundle only ---------------------
  {
    const fs::path ext = fix / "bundle_external";
    const auto [p_inline, sel_inline] = run_bundle(good, cc, mlo);
    const auto [p_ext, sel_ext] = run_bundle(ext, cc, mlo);  // ONNX Runtime resolves model.onnx.data
    CHECK(p_ext == p_inline && sel_ext.size() == sel_inline.size());
    const std::string graph = slurp(ext / "model.onnx"), ext_manifest = slurp(ext / "manifest.json");
    CHECK(contains(graph, "model.onnx.data"));
    // every location rewritten to one of the same length (so the protobuf stays well-formed), the
    // graph's hash updated and the manifest sealed again: what is refused is the location itself
    const char* const locations[] = {"../../../x.data", "/tmp/xpr-x.data", "/dev/./././zero", "unlisted.x.data",
                                     "*/_ORT_MEM_/*.x", "parity.json/../"};
    for (size_t k = 0; k < std::size(locations); ++k) {
      const std::string loc = locations[k];
      CHECK(loc.size() == std::string("model.onnx.data").size());
      std::string g = graph;
      for (size_t i = g.find("model.onnx.data"); i != std::string::npos; i = g.find("model.onnx.data", i + 1))
        g.replace(i, loc.size(), loc);
      const std::string digest = xpr::detail::sha256_hex(g.data(), g.size());
      std::string m = ext_manifest;
      const size_t h = m.find("\"model.onnx\": \"", m.find("\"files\""));
      CHECK(h != std::string::npos);
      m.replace(h + 15, 64, digest);
      const fs::path b = with_manifest(ext, work, "external-" + std::to_string(k), m);
      spit(b / "model.onnx", g);
      expect_bundle(b, XPR_ERR_BUNDLE, {(b / "model.onnx").string(), "keeps its data in '" + loc + "'"});
    }
    // the listed data file edited after export: its hash
    const fs::path b = copy_bundle(ext, work, "external-data-edited");
    std::string d = slurp(b / "model.onnx.data");
    d[d.size() / 2] = static_cast<char>(d[d.size() / 2] ^ 0x01);
    spit(b / "model.onnx.data", d);
    expect_bundle(b, XPR_ERR_HASH, {"model.onnx.data", "SHA-256 mismatch"});
  }

  // ---- special files (issue 21): named and refused without being read, never a hang ----------------
  {
    const fs::path dir = work / "special";
    fs::remove_all(dir);
    fs::create_directories(dir);
    CHECK(::mkfifo((dir / "fifo.dcm").c_str(), 0600) == 0);
    fs::create_symlink(dir / "nowhere.dcm", dir / "dangling.dcm");
    fs::create_symlink("/dev/zero", dir / "zero.dcm");
    fs::create_symlink(fs::absolute(dicom / "good_m2.dcm"), dir / "link.dcm");  // a link to a file is fine
    const std::pair<const char*, const char*> cases[] = {
        {"fifo.dcm", "is a FIFO, not a regular file"},
        {"dangling.dcm", "is a dangling symbolic link"},
        {"zero.dcm", "is a character device, not a regular file"},
        {"", "is a folder, not a regular file"},
    };
    for (const auto& [name, says] : cases) {
      xpr_example::DicomImage im;
      std::string msg;
      const std::string path = (dir / name).string();
      CHECK_MSG(!xpr_example::read_dicom(path, im, msg), path);
      CHECK_MSG(msg == path + ": " + says, msg);
    }
    xpr_example::DicomImage im;
    std::string msg;
    CHECK_MSG(xpr_example::read_dicom((dir / "link.dcm").string(), im, msg), msg);
    // a bundle file turned into a FIFO: named by the listing, never opened
    const fs::path b = copy_bundle(good, work, "fifo-parity");
    fs::remove(b / "parity.json");
    CHECK(::mkfifo((b / "parity.json").c_str(), 0600) == 0);
    expect_bundle(b, XPR_ERR_BUNDLE, {"parity.json", "special file"});
    // the file reader itself, as used for manifest.json, hashing and graphs: no open of a FIFO
    std::string why;
    try {
      xpr::detail::sha256_file((b / "parity.json").string());
    } catch (const xpr::detail::Failure& f) {
      why = f.what();
    }
    CHECK_MSG(why == (b / "parity.json").string() + ": is a FIFO, not a regular file", why);
  }

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
