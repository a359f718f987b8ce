// The verified reader of an export bundle: the rules of xpr_deploy/bundle/reader.py (see manifest.h).
#include "manifest.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include <sys/stat.h>
#include <unistd.h>

#include "failure.h"
#include "files.h"
#include "onnx_refs.h"
#include "sha256.h"

namespace xpr::detail {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* const kManifestName = "manifest.json";
const std::string kSealField = "\"manifest_sha256\": \"";  // exactly as the writer emits it

std::string join_path(const std::string& dir, const std::string& rel) {
  if (dir.empty()) return rel;
  return dir.back() == '/' ? dir + rel : dir + "/" + rel;
}

bool lower_hex(const std::string& s, size_t at, size_t n) {
  if (at + n > s.size()) return false;
  for (size_t i = at; i < at + n; ++i)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

// Offsets of the 64 hex digits of every `"manifest_sha256": "<64 lowercase hex>"` (non-overlapping,
// left to right: what Python's re.findall sees).
std::vector<size_t> seal_fields(const std::string& raw) {
  std::vector<size_t> at;
  size_t pos = 0;
  while ((pos = raw.find(kSealField, pos)) != std::string::npos) {
    const size_t h = pos + kSealField.size();
    if (lower_hex(raw, h, 64) && h + 64 < raw.size() && raw[h + 64] == '"') {
      at.push_back(h);
      pos = h + 65;
    } else {
      ++pos;
    }
  }
  return at;
}

std::string digest_with_zeros(const std::string& raw, size_t at) {
  static const std::string zeros(64, '0');
  Sha256 s;
  s.update(raw.data(), at);
  s.update(zeros.data(), zeros.size());
  s.update(raw.data() + at + 64, raw.size() - at - 64);
  return s.hex_digest();
}

// A JSON value in a message, short.
std::string shown(const json& v) {
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

struct Reader {
  const std::string& path;

  [[noreturn]] void fail(const std::string& what) const { throw Failure(XPR_ERR_MANIFEST, path + ": " + what); }

  // The value of a key when present and not null, else nullptr.
  const json* find(const json& obj, const char* key) const {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    return it != obj.end() && !it->is_null() ? &*it : nullptr;
  }

  const json& need(const json& obj, const char* key, const std::string& where) const {
    const json* v = find(obj, key);
    if (!v) fail(where + "missing '" + key + "'");
    return *v;
  }

  std::string str(const json& v, const std::string& what) const {
    if (!v.is_string()) fail(what + " must be a string");
    return v.get<std::string>();
  }

  double num(const json& v, const std::string& what) const {
    if (!v.is_number()) fail(what + " must be a number");
    return v.get<double>();
  }

  int32_t integer(const json& v, const std::string& what) const {
    if (!v.is_number_integer()) fail(what + " must be an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT32_MAX)) fail(what + " out of range");
    const int64_t x = v.get<int64_t>();
    if (x < INT32_MIN || x > INT32_MAX) fail(what + " out of range");
    return static_cast<int32_t>(x);
  }

  // A path the manifest names (rule 3).
  std::string relpath(const json& v, const std::string& what) const {
    const std::string rel = str(v, what);
    if (!plain_relpath(rel)) fail(what + ": path '" + rel + "' is not a plain relative path inside the bundle");
    return rel;
  }

  // `dynamic_batch`: the first dimension of every shape is -1 (a bundle exported with --max-batch)
  std::vector<TensorSpec> tensors(const json& root, const char* key, bool dynamic_batch) const {
    const json& raw = need(root, key, "");
    if (!raw.is_array()) fail(std::string("'") + key + "' must be a list of {name, dtype, shape}");
    std::vector<TensorSpec> out;
    for (const json& e : raw) {
      TensorSpec t;
      t.name = str(need(e, "name", std::string(key) + "[]: "), std::string(key) + "[].name");
      const std::string where = std::string(key) + " '" + t.name + "'";
      t.dtype = str(need(e, "dtype", where + ": "), where + " dtype");
      const json& s = need(e, "shape", where + ": ");
      if (!s.is_array() || s.empty()) fail(where + ": shape must be a non-empty list");
      for (const json& d : s) {
        const int32_t n = integer(d, where + " shape[]");
        if (dynamic_batch && t.shape.empty()) {
          if (n != -1) fail(where + ": shape " + shown(s) + " must start with -1 (the manifest has max_batch)");
        } else if (n < 1) {
          fail(where + ": shape " + shown(s) + " has a dimension < 1 (only the batch axis, with max_batch, is -1)");
        }
        t.shape.push_back(n);
      }
      out.push_back(std::move(t));
    }
    return out;
  }
};

// (major, minor) of "X.Y[.Z...]"; {-1,-1} when unparsable.
std::pair<int, int> major_minor(const std::string& v) {
  int a = -1, b = -1;
  if (std::sscanf(v.c_str(), "%d.%d", &a, &b) != 2) return {-1, -1};
  return {a, b};
}

const TensorSpec* by_name(const std::vector<TensorSpec>& ts, const std::string& name) {
  for (const auto& t : ts)
    if (t.name == name) return &t;
  return nullptr;
}

// Top-level keys format 2 requires (export/manifest.schema.json "required").
const char* const kRequired[] = {
    "format", "format_version", "name", "toolkit_version", "created_utc", "model", "graphs", "precision",
    "opset", "ir_version", "batch", "inputs", "outputs", "model_config", "preprocessing", "label_rule",
    "class_names", "threshold", "blocks", "source_checkpoint", "engines", "files", "io", "manifest_sha256"};

// manifest.json's bytes (rule 1: a regular file, no link, at most kMaxManifestBytes).
std::string read_manifest_bytes(const std::string& path, const std::string& bundle_dir) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(path, ec);
  if (st.type() == fs::file_type::not_found)
    throw Failure(XPR_ERR_IO, path + ": cannot open (is '" + bundle_dir + "' an export bundle?)");
  if (ec) throw Failure(XPR_ERR_IO, path + ": cannot open: " + ec.message());
  if (fs::is_symlink(st))
    throw Failure(XPR_ERR_BUNDLE, path + ": is a symbolic link; a bundle holds plain files only");
  if (!fs::is_regular_file(st)) throw Failure(XPR_ERR_BUNDLE, path + ": not a regular file");
  const RegularFile f(path, /*follow_links=*/false, XPR_ERR_BUNDLE);  // a FIFO swapped in: refused, not read
  std::string raw;
  char buf[1 << 16];
  while (raw.size() <= kMaxManifestBytes) {
    const ssize_t n = ::read(f.fd(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Failure(XPR_ERR_IO, path + ": read error: " + std::strerror(errno));
    if (n == 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  if (raw.size() > kMaxManifestBytes)
    throw Failure(XPR_ERR_MANIFEST, path + ": more than " + std::to_string(kMaxManifestBytes) +
                                        " bytes, larger than any manifest");
  return raw;
}

// How deeply arrays/objects nest in JSON text (brackets outside strings), stopping past `limit`:
// nlohmann's parser takes any depth, and a value 100,000 levels deep is no manifest.
int json_depth(const std::string& raw, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) break;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

// Why an external data location is not a plain relative path of safe parts ("" when it is).
std::string why_not_plain(const std::string& loc) {
  if (loc.empty()) return "an empty location";
  if (loc[0] == '/' || loc[0] == '\\' || (loc.size() > 1 && std::isalpha(static_cast<unsigned char>(loc[0])) && loc[1] == ':'))
    return "an absolute path";
  bool dotdot = false, plain = true;
  size_t start = 0;
  for (;;) {
    const size_t end = loc.find('/', start);
    const std::string part = loc.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (part == "..") dotdot = true;
    const auto safe = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'; };
    if (part.empty() || part[0] == '.' || part[0] == '-' || !std::all_of(part.begin(), part.end(), safe)) plain = false;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (dotdot) return "a path with '..'";
  if (!plain) return "not a plain relative path (letters, digits, '.', '_', '-' between '/')";
  return "";
}

bool decimal(const std::string& s, unsigned long long& v) {
  if (s.empty() || s.size() > 19 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  v = std::stoull(s);
  return true;
}

}  // namespace

bool plain_relpath(const std::string& rel) {
  if (rel.empty() || rel[0] == '/') return false;
  if (rel.find_first_of(std::string("\\:\0", 3)) != std::string::npos) return false;
  size_t start = 0;
  for (;;) {
    const size_t end = rel.find('/', start);
    const std::string part = rel.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (end == std::string::npos) return true;
    start = end + 1;
  }
}

bool seal_digests(const std::string& raw, std::string& recorded, std::string& computed, std::string& why) {
  const std::vector<size_t> at = seal_fields(raw);
  if (at.size() != 1) {
    why = at.empty() ? "has no manifest_sha256 seal"
                     : "has " + std::to_string(at.size()) + " manifest_sha256 fields, not one";
    return false;
  }
  recorded = raw.substr(at[0], 64);
  computed = digest_with_zeros(raw, at[0]);
  return true;
}

std::string reseal(const std::string& raw) {
  const std::vector<size_t> at = seal_fields(raw);
  if (at.size() != 1) throw Failure(XPR_ERR_MANIFEST, "reseal: not exactly one manifest_sha256 field");
  std::string out = raw;
  out.replace(at[0], 64, digest_with_zeros(raw, at[0]));
  return out;
}

Manifest read_manifest(const std::string& bundle_dir) {
  const std::string path = join_path(bundle_dir, kManifestName);
  return parse_manifest(read_manifest_bytes(path, bundle_dir), path);
}

namespace {

// ---- parse_manifest, one reader per section, in the order the checks run ----------------------

// The JSON value of manifest.json: bounded in size and depth before nlohmann parses it.
json parse_json(const std::string& raw, const std::string& path) {
  if (raw.size() > kMaxManifestBytes)
    throw Failure(XPR_ERR_MANIFEST, path + ": more than " + std::to_string(kMaxManifestBytes) +
                                        " bytes, larger than any manifest");
  if (json_depth(raw, kMaxJsonDepth) > kMaxJsonDepth)
    throw Failure(XPR_ERR_MANIFEST, path + ": values nested deeper than " + std::to_string(kMaxJsonDepth) +
                                        " levels; no manifest is");
  try {
    return json::parse(raw);
  } catch (const json::exception& e) {
    throw Failure(XPR_ERR_MANIFEST, path + ": not valid JSON: " + e.what());
  }
}

// Rule 1 (format and version), then rule 2 (the seal), then the required keys: before any field is believed.
void read_header(const Reader& r, const std::string& raw, const json& root, Manifest& m) {
  const json* fmt = r.find(root, "format");
  if (!fmt || !fmt->is_string() || fmt->get<std::string>() != "xpr-bundle")
    r.fail("not an xpr bundle manifest ('format' is not \"xpr-bundle\")");
  const json* fv = r.find(root, "format_version");
  if (!fv || !fv->is_number() || fv->get<double>() != kManifestFormat)
    throw Failure(XPR_ERR_VERSION, r.path + ": bundle format version " + (fv ? shown(*fv) : "(none)") +
                                       ", this runtime reads format version " + std::to_string(kManifestFormat) +
                                       ": re-export the bundle with this version of xpr (`xpr export`)");
  m.format_version = kManifestFormat;
  std::string recorded, computed, why;
  if (!seal_digests(raw, recorded, computed, why)) r.fail(why);
  const json* top = r.find(root, "manifest_sha256");
  if (!top || !top->is_string() || top->get<std::string>() != recorded)
    r.fail("its manifest_sha256 seal is not the top-level 'manifest_sha256' field");
  if (recorded != computed)
    throw Failure(XPR_ERR_HASH, r.path + ": content differs from its seal (manifest_sha256 " +
                                    recorded.substr(0, 12) + "..., content " + computed.substr(0, 12) +
                                    "...): a field was edited after export");
  m.digest = recorded;
  for (const char* k : kRequired)
    if (!root.contains(k)) r.fail(std::string("missing '") + k + "' (required by bundle format 2)");
}

// The toolkit that wrote the bundle: 0.x toolkits need this runtime's minor line; later ones its major.
void read_toolkit_version(const Reader& r, const json& root, Manifest& m) {
  m.toolkit_version = r.str(root["toolkit_version"], "toolkit_version");
  const auto [maj, min] = major_minor(m.toolkit_version);
  const auto [rmaj, rmin] = major_minor(XPR_VERSION_STRING);
  const bool ok = maj >= 0 && maj == rmaj && (maj > 0 || min == rmin);
  if (!ok)
    throw Failure(XPR_ERR_VERSION, r.path + ": bundle written by xpr " + m.toolkit_version +
                                       ", this runtime (xpr " XPR_VERSION_STRING ") reads bundles of xpr " +
                                       std::to_string(rmaj) + "." + std::to_string(rmin) + ".x");
}

// A path the manifest names that must also be one of the hashed files (rule 3).
std::string listed(const Reader& r, const Manifest& m, const json& v, const std::string& what) {
  const std::string rel = r.relpath(v, what);
  if (!m.sha256.count(rel)) r.fail(what + " '" + rel + "' is not among the hashed files");
  return rel;
}

// Rule 3: `files` {path: sha256}, then the graphs and the optional parity report among them.
void read_files(const Reader& r, const json& root, Manifest& m) {
  const json& files = root["files"];
  if (!files.is_object() || files.empty()) r.fail("'files' must be an object {path: sha256}, not empty");
  for (auto it = files.begin(); it != files.end(); ++it) {
    const std::string& rel = it.key();
    if (!plain_relpath(rel)) r.fail("files: path '" + rel + "' is not a plain relative path inside the bundle");
    const json& v = it.value();
    if (!v.is_string() || v.get<std::string>().size() != 64 || !lower_hex(v.get<std::string>(), 0, 64))
      r.fail("files entry '" + rel + "': " + shown(v) + " is not a SHA-256 hex digest (64 lowercase hex)");
    m.sha256[rel] = v.get<std::string>();
  }
  m.model_file = listed(r, m, root["model"], "model");
  const json& graphs = root["graphs"];
  if (!graphs.is_object() || graphs.empty()) r.fail("'graphs' must be an object {precision: file}, not empty");
  for (auto it = graphs.begin(); it != graphs.end(); ++it) {
    if (it.key() != "fp32" && it.key() != "fp16" && it.key() != "int8") r.fail("graphs: unknown precision '" + it.key() + "'");
    m.graphs[it.key()] = listed(r, m, it.value(), "graphs." + it.key());
  }
  if (const json* p = r.find(root, "parity")) listed(r, m, *p, "parity");
}

// `engines`: each TensorRT plan, the graph it was built from and what it needs to load (rule 3 for its paths).
void read_engines(const Reader& r, const json& root, Manifest& m) {
  const json& engines = root["engines"];
  if (!engines.is_array()) r.fail("'engines' must be a list");
  for (size_t i = 0; i < engines.size(); ++i) {
    const json& e = engines[i];
    const std::string w = "engines[" + std::to_string(i) + "]";
    if (!e.is_object()) r.fail(w + " must be an object");
    EngineEntry en;
    en.file = listed(r, m, r.need(e, "path", w + ": "), w + ".path");
    en.onnx = listed(r, m, r.need(e, "onnx", w + ": "), w + ".onnx");
    if (const json* tc = r.find(e, "timing_cache")) listed(r, m, *tc, w + ".timing_cache");
    en.backend = r.str(r.need(e, "backend", w + ": "), w + ".backend");
    en.version = r.str(r.need(e, "version", w + ": "), w + ".version");
    en.compute_capability = r.str(r.need(e, "compute_capability", w + ": "), w + ".compute_capability");
    en.hw_compat = r.str(r.need(e, "hw_compat", w + ": "), w + ".hw_compat");
    en.sha256 = r.str(r.need(e, "sha256", w + ": "), w + ".sha256");
    if (en.sha256.size() != 64 || !lower_hex(en.sha256, 0, 64)) r.fail(w + ".sha256 is not a SHA-256 hex digest");
    const json& pr = r.need(e, "plugins_required", w + ": ");
    if (!pr.is_array()) r.fail(w + ".plugins_required must be a list");
    for (const json& p : pr) en.plugins_required.push_back(r.str(p, w + ".plugins_required[]"));
    m.engines.push_back(std::move(en));
  }
}

// The model's geometry, which the tensors, preprocessing and blocks are checked against.
struct Geometry {
  int32_t img_rows = 0, img_cols = 0;
  int32_t window = 7, patch = 4;
};

// `model_config`: image size, window size and patch size, bounded so the grids below cannot overflow.
Geometry read_model_config(const Reader& r, const json& root) {
  const json& mc = root["model_config"];
  if (!mc.is_object()) r.fail("'model_config' must be an object");
  const json& isz = r.need(mc, "img_size", "model_config: ");
  if (!isz.is_array() || isz.size() != 2) r.fail("model_config.img_size must be [rows, cols]");
  Geometry g;
  g.img_rows = r.integer(isz[0], "model_config.img_size[0]");
  g.img_cols = r.integer(isz[1], "model_config.img_size[1]");
  if (g.img_rows < 1 || g.img_cols < 1) r.fail("model_config.img_size must be positive");
  if (int64_t(g.img_rows) * g.img_cols > kMaxInputPixels)
    r.fail("model_config.img_size " + shown(isz) + " is larger than any model input (" +
           std::to_string(kMaxInputPixels) + " pixels)");
  if (const json* v = r.find(mc, "window_size")) g.window = r.integer(*v, "model_config.window_size");
  if (const json* v = r.find(mc, "patch_size")) g.patch = r.integer(*v, "model_config.patch_size");
  if (g.window < 1 || g.patch < 1) r.fail("model_config.window_size/patch_size must be >= 1");
  // bounds the token strides (patch << 3 at stage 4) and the grids below
  if (g.window > std::max(g.img_rows, g.img_cols) || g.patch > std::max(g.img_rows, g.img_cols))
    r.fail("model_config.window_size " + std::to_string(g.window) + " / patch_size " + std::to_string(g.patch) +
           " do not fit model_config.img_size");
  return g;
}

// Rule 5, first half: `batch`, the optional `max_batch`, and the input/output tensors they shape.
void read_batch_and_tensors(const Reader& r, const json& root, Manifest& m) {
  m.batch = r.integer(root["batch"], "batch");
  if (m.batch < 1 || m.batch > kMaxBatch)
    r.fail("batch " + std::to_string(m.batch) + " not in 1.." + std::to_string(kMaxBatch));
  if (const json* v = r.find(root, "max_batch")) {
    m.max_batch = r.integer(*v, "max_batch");
    if (m.max_batch < m.batch || m.max_batch > kMaxBatch)
      r.fail("max_batch " + std::to_string(m.max_batch) + " not in " + std::to_string(m.batch) + ".." +
             std::to_string(kMaxBatch) + " (batch.." + std::to_string(kMaxBatch) + ")");
  }
  const bool dynamic = m.max_batch > 0;
  m.inputs = r.tensors(root, "inputs", dynamic);
  m.outputs = r.tensors(root, "outputs", dynamic);
  if (m.inputs.size() != 2) r.fail("'inputs' must list exactly 2 tensors (the CC and MLO views)");
  if (m.outputs.size() < 2) r.fail("'outputs' must list at least 2 tensors (logits, prob)");
}

// Rule 5, second half: `io` names the cc/mlo inputs and logits/prob outputs; the views are [B, 1, H, W] float32.
void read_io(const Reader& r, const json& root, const Geometry& g, Manifest& m) {
  const json& io = root["io"];
  if (!io.is_object()) r.fail("'io' must be an object {cc, mlo, logits, prob}");
  for (auto it = io.begin(); it != io.end(); ++it)
    if (it.key() != "cc" && it.key() != "mlo" && it.key() != "logits" && it.key() != "prob")
      r.fail("io: unknown role '" + it.key() + "'");
  auto role = [&](const char* k, const std::vector<TensorSpec>& where, const char* kind) {
    const std::string name = r.str(r.need(io, k, "io: "), std::string("io.") + k);
    if (name.empty()) r.fail(std::string("io.") + k + " is empty");
    if (!by_name(where, name)) r.fail(std::string("io.") + k + " '" + name + "' is not " + kind);
    return name;
  };
  m.io.cc = role("cc", m.inputs, "an input");
  m.io.mlo = role("mlo", m.inputs, "an input");
  m.io.logits = role("logits", m.outputs, "an output");
  m.io.prob = role("prob", m.outputs, "an output");
  if (m.io.cc == m.io.mlo) r.fail("io.cc and io.mlo name the same input '" + m.io.cc + "'");
  if (m.io.logits == m.io.prob) r.fail("io.logits and io.prob name the same output '" + m.io.prob + "'");
  const bool dynamic = m.max_batch > 0;
  for (const TensorSpec* t : {by_name(m.inputs, m.io.cc), by_name(m.inputs, m.io.mlo)}) {
    const std::string w = "input '" + t->name + "'";
    if (t->shape.size() != 4 || t->shape[0] != (dynamic ? -1 : m.batch) || t->shape[2] != g.img_rows ||
        t->shape[3] != g.img_cols)
      r.fail(w + " shape " + shown(json(t->shape)) + " disagrees with batch " +
             (dynamic ? std::string("-1 (max_batch)") : std::to_string(m.batch)) +
             " and model_config.img_size [" + std::to_string(g.img_rows) + ", " + std::to_string(g.img_cols) + "]");
    if (t->shape[1] != 1) r.fail(w + " must have one channel [B, 1, H, W]");
    if (t->dtype != "float32") r.fail(w + " must be float32");
  }
}

// `preprocessing`: a version this runtime implements, and values it can divide by or compare with.
void read_preprocessing(const Reader& r, const json& root, const Geometry& g, Manifest& m) {
  const json& pre = root["preprocessing"];
  if (!pre.is_object()) r.fail("'preprocessing' must be an object");
  m.preprocessing.version = r.str(r.need(pre, "version", "preprocessing: "), "preprocessing.version");
  if (!preprocessing_version_supported(m.preprocessing.version))
    throw Failure(XPR_ERR_VERSION, r.path + ": preprocessing version '" + m.preprocessing.version +
                                       "' is not implemented by this runtime (it implements xpr-preproc-1)");
  if (const json* v = r.find(pre, "mean")) m.preprocessing.mean = r.num(*v, "preprocessing.mean");
  if (const json* v = r.find(pre, "std")) m.preprocessing.std = r.num(*v, "preprocessing.std");
  if (const json* v = r.find(pre, "mask_threshold"))
    m.preprocessing.mask_threshold = r.num(*v, "preprocessing.mask_threshold");
  if (const json* v = r.find(pre, "profile_threshold"))
    m.preprocessing.profile_fraction = r.num(*v, "preprocessing.profile_threshold");
  // values the preprocessing divides by or compares with: out of range, every image would be
  // refused (or normalised to nonsense) under the image's name, not the bundle's
  const PreprocSettings& p = m.preprocessing;
  if (!std::isfinite(p.mean)) r.fail("preprocessing.mean " + shown(json(p.mean)) + " is not finite");
  if (!(std::isfinite(p.std) && p.std > 0.0)) r.fail("preprocessing.std " + shown(json(p.std)) + " must be > 0");
  if (!(p.mask_threshold >= 0.0 && p.mask_threshold < 1.0))
    r.fail("preprocessing.mask_threshold " + shown(json(p.mask_threshold)) + " not in [0, 1)");
  if (!(p.profile_fraction >= 0.0 && p.profile_fraction <= 1.0))
    r.fail("preprocessing.profile_threshold " + shown(json(p.profile_fraction)) + " not in [0, 1]");
  if (const json* sz = r.find(pre, "img_size")) {
    if (!sz->is_array() || sz->size() != 2 || r.integer((*sz)[0], "preprocessing.img_size[0]") != g.img_rows ||
        r.integer((*sz)[1], "preprocessing.img_size[1]") != g.img_cols)
      r.fail("preprocessing.img_size " + shown(*sz) + " differs from model_config.img_size");
  }
  m.preprocessing.out_rows = g.img_rows;
  m.preprocessing.out_cols = g.img_cols;
}

// `class_names`, `threshold`, the optional `operating_points` (name -> {threshold, ...}) and the
// `operating_point` naming the default, whose threshold must be `threshold`.
void read_classes_and_thresholds(const Reader& r, const json& root, Manifest& m) {
  const json& cn = root["class_names"];
  if (!cn.is_array() || cn.size() < 2) r.fail("class_names must be a list of at least 2 names");
  for (const json& c : cn) m.class_names.push_back(r.str(c, "class_names[]"));
  const double threshold = r.num(root["threshold"], "threshold");
  if (!(threshold >= 0.0 && threshold <= 1.0)) r.fail("threshold " + shown(root["threshold"]) + " not in [0, 1]");
  m.threshold = threshold;
  if (const json* ops = r.find(root, "operating_points")) {
    if (!ops->is_object()) r.fail("operating_points must be an object");
    for (auto it = ops->begin(); it != ops->end(); ++it) {
      const std::string what = "operating_points." + it.key();
      if (!it.value().is_object()) r.fail(what + " must be an object");
      const double t = r.num(r.need(it.value(), "threshold", what + ": "), what + ".threshold");
      if (!(t >= 0.0 && t <= 1.0)) r.fail(what + ".threshold " + shown(it.value()["threshold"]) + " not in [0, 1]");
      m.operating_points.emplace_back(it.key(), t);
    }
  }
  const json* op = r.find(root, "operating_point");
  if (op && !op->is_null()) {
    m.operating_point = r.str(*op, "operating_point");
    bool found = false;
    for (const auto& [name, t] : m.operating_points) {
      if (name != m.operating_point) continue;
      found = true;
      if (t != threshold)
        r.fail("threshold " + shown(root["threshold"]) + " is not the threshold of its operating point '" + name + "'");
    }
    if (!found) r.fail("operating_point '" + m.operating_point + "' is not among operating_points");
  } else {
    const json* method = r.find(root, "threshold_method");
    m.operating_point = method && method->is_string() ? method->get<std::string>() : "threshold";
  }
}

// One `blocks[]` entry: where its windows are selected, and a grid, k and shift that fit the model input.
BlockSpec read_block(const Reader& r, const json& b, const Geometry& g, const Manifest& m) {
  BlockSpec s;
  s.view = r.str(r.need(b, "view", "blocks[]: "), "blocks[].view");
  if (s.view != "cc" && s.view != "mlo") r.fail("blocks[].view '" + s.view + "' is not cc or mlo");
  s.stage = r.integer(r.need(b, "stage", "blocks[]: "), "blocks[].stage");
  if (s.stage < 1 || s.stage > 4) r.fail("blocks[].stage " + std::to_string(s.stage) + " not in 1..4");
  s.block = r.integer(r.need(b, "block", "blocks[]: "), "blocks[].block");
  s.k = r.integer(r.need(b, "k", "blocks[]: "), "blocks[].k");
  const json& grid = r.need(b, "window_grid", "blocks[]: ");
  if (!grid.is_array() || grid.size() != 2) r.fail("blocks[].window_grid must be [rows, cols]");
  s.grid_rows = r.integer(grid[0], "blocks[].window_grid[0]");
  s.grid_cols = r.integer(grid[1], "blocks[].window_grid[1]");
  s.window = g.window;
  s.token_stride = g.patch << (s.stage - 1);
  // Cyclic shift per dimension: `shift_size` [rows, cols], written by every export since it was
  // added; without it, the Swin rule the model follows (timm): odd blocks shift by window // 2,
  // except along a token dimension no larger than the window (tiny's 14x7 stage 4 shifts rows
  // only), which the boolean `shifted` cannot express.
  if (const json* ss = r.find(b, "shift_size"); ss && ss->is_array() && ss->size() == 2) {
    s.shift_rows = r.integer((*ss)[0], "blocks[].shift_size[0]");
    s.shift_cols = r.integer((*ss)[1], "blocks[].shift_size[1]");
  } else if (s.block % 2 == 1) {
    s.shift_rows = s.grid_rows > 1 ? g.window / 2 : 0;
    s.shift_cols = s.grid_cols > 1 ? g.window / 2 : 0;
  }
  const std::string where = "block " + s.view + " stage " + std::to_string(s.stage) + " block " +
                            std::to_string(s.block);
  if (const json* o = r.find(b, "selection_output")) {
    s.output = r.str(*o, "blocks[].selection_output");
    if (!by_name(m.outputs, s.output))
      r.fail(where + ": selection_output '" + s.output + "' is not an output");
    if (s.output == m.io.logits || s.output == m.io.prob)
      r.fail(where + ": selection_output '" + s.output + "' is the logits/prob output");
  }
  if (s.grid_rows < 1 || s.grid_cols < 1) r.fail(where + ": empty window grid");
  // grid * window * stride > input size, without overflow (window, stride <= img size <= 2^26)
  const int64_t pixels_per_window = int64_t(g.window) * s.token_stride;
  if (s.grid_rows > m.preprocessing.out_rows / pixels_per_window ||
      s.grid_cols > m.preprocessing.out_cols / pixels_per_window)
    r.fail(where + ": window grid larger than the model input");
  const int64_t windows = int64_t(s.grid_rows) * s.grid_cols;
  if (s.k < 1 || s.k > windows)
    r.fail(where + ": k = " + std::to_string(s.k) + " outside 1.." + std::to_string(windows));
  if (s.shift_rows < 0 || s.shift_cols < 0 || s.shift_rows >= int64_t(s.grid_rows) * g.window ||
      s.shift_cols >= int64_t(s.grid_cols) * g.window)
    r.fail(where + ": shift outside the token grid");
  return s;
}

// `blocks`: window selection per block, and the optional `plugin` op type of a fused selection.
void read_blocks_and_plugin(const Reader& r, const json& root, const Geometry& g, Manifest& m) {
  const json& blocks = root["blocks"];
  if (!blocks.is_array()) r.fail("'blocks' must be a list");
  for (const json& b : blocks) m.blocks.push_back(read_block(r, b, g, m));
  if (const json* plugin = r.find(root, "plugin"); plugin && plugin->is_object()) {
    if (const json* v = r.find(*plugin, "op_type")) m.plugin_op_type = r.str(*v, "plugin.op_type");
  }
}

}  // namespace

Manifest parse_manifest(const std::string& raw, const std::string& path) {
  Manifest m;
  m.path = path;
  const json root = parse_json(raw, m.path);
  const Reader r{m.path};
  if (!root.is_object()) r.fail("not a JSON object");
  try {
    read_header(r, raw, root, m);
    read_toolkit_version(r, root, m);
    read_files(r, root, m);
    read_engines(r, root, m);
    const Geometry g = read_model_config(r, root);
    read_batch_and_tensors(r, root, m);
    read_io(r, root, g, m);
    read_preprocessing(r, root, g, m);
    read_classes_and_thresholds(r, root, m);
    read_blocks_and_plugin(r, root, g, m);
  } catch (const json::exception& e) {
    r.fail(std::string("unexpected structure: ") + e.what());
  }
  return m;
}

void verify_files(const std::string& bundle_dir, const Manifest& m, bool check_hashes) {
  // every entry of the folder, links not followed: plain files and folders only
  const fs::path root(bundle_dir);
  std::set<std::string> present;
  std::error_code ec;
  std::string at = bundle_dir;
  const fs::recursive_directory_iterator end;
  for (fs::recursive_directory_iterator it(root, fs::directory_options::none, ec); !ec && it != end;
       it.increment(ec)) {
    const fs::path& p = it->path();
    at = p.string();
    const fs::file_status st = it->symlink_status(ec);
    if (ec) break;
    if (fs::is_symlink(st))
      throw Failure(XPR_ERR_BUNDLE, at + ": is a symbolic link; a bundle holds plain files only");
    if (fs::is_directory(st)) continue;
    if (!fs::is_regular_file(st))
      throw Failure(XPR_ERR_BUNDLE, at + ": is a special file; a bundle holds plain files only");
    present.insert(p.lexically_relative(root).generic_string());
  }
  if (ec) throw Failure(XPR_ERR_IO, at + ": cannot list the bundle folder: " + ec.message());
  present.erase(kManifestName);
  for (const auto& [rel, want] : m.sha256)
    if (!present.count(rel)) throw Failure(XPR_ERR_IO, join_path(bundle_dir, rel) + ": missing (listed in " + m.path + ")");
  for (const auto& rel : present)
    if (!m.sha256.count(rel))
      throw Failure(XPR_ERR_BUNDLE, join_path(bundle_dir, rel) + ": not listed in " + m.path +
                                        "; a bundle holds only the files it hashes");
  if (!check_hashes) return;
  for (const auto& [rel, want] : m.sha256) {
    const std::string p = join_path(bundle_dir, rel);
    const std::string got = sha256_file(p);
    if (got != want)
      throw Failure(XPR_ERR_HASH, p + ": SHA-256 mismatch (manifest " + want + ", file " + got +
                                      "): the file changed after export");
  }
}

void verify_graphs(const std::string& bundle_dir, const Manifest& m) {
  std::set<std::string> graphs{m.model_file};
  for (const auto& [prec, rel] : m.graphs) graphs.insert(rel);
  for (const auto& e : m.engines) graphs.insert(e.onnx);
  for (const auto& [rel, digest] : m.sha256)
    if (rel.size() > 5 && rel.compare(rel.size() - 5, 5, ".onnx") == 0) graphs.insert(rel);
  for (const std::string& graph : graphs) {
    const std::string where = join_path(bundle_dir, graph);
    const size_t slash = graph.rfind('/');
    const std::string folder = slash == std::string::npos ? "" : graph.substr(0, slash + 1);
    for (const ExternalRef& ref : external_refs(where)) {
      bool located = false;
      unsigned long long offset = 0, length = 0;
      bool has_length = false;
      for (const auto& [key, value] : ref.entries) {
        if (key == "offset" && !decimal(value, offset))
          throw Failure(XPR_ERR_BUNDLE, where + ": " + ref.what + " has a malformed external data offset '" + value + "'");
        if (key == "length" && !(has_length = decimal(value, length)))
          throw Failure(XPR_ERR_BUNDLE, where + ": " + ref.what + " has a malformed external data length '" + value + "'");
      }
      for (const auto& [key, loc] : ref.entries) {
        if (key != "location") continue;
        located = true;
        std::string why = why_not_plain(loc);
        const std::string rel = folder + loc;
        if (why.empty() && !m.sha256.count(rel)) why = "not a file listed in the manifest ('" + rel + "')";
        if (!why.empty())
          throw Failure(XPR_ERR_BUNDLE, where + ": " + ref.what + " keeps its data in '" + loc + "': " + why +
                                            "; a graph reads only files of its bundle");
        struct stat st {};
        const std::string data = join_path(bundle_dir, rel);
        if (::lstat(data.c_str(), &st) != 0) throw Failure(XPR_ERR_IO, data + ": missing (listed in " + m.path + ")");
        const unsigned long long size = static_cast<unsigned long long>(st.st_size);
        if (offset > size || (has_length && length > size - offset))
          throw Failure(XPR_ERR_BUNDLE, where + ": " + ref.what + " reads bytes " + std::to_string(offset) + ".." +
                                            std::to_string(offset + length) + " of '" + loc + "', which has " +
                                            std::to_string(size) + " bytes");
      }
      if (!located) throw Failure(XPR_ERR_BUNDLE, where + ": " + ref.what + " is stored externally without a location");
    }
  }
}

}  // namespace xpr::detail
