#include "manifest.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "failure.h"
#include "sha256.h"

namespace xpr::detail {
namespace {

using json = nlohmann::json;

std::string join_path(const std::string& dir, const std::string& rel) {
  if (dir.empty()) return rel;
  return dir.back() == '/' ? dir + rel : dir + "/" + rel;
}

struct Reader {
  const std::string& path;

  [[noreturn]] void fail(const std::string& what) const {
    throw Failure(XPR_ERR_MANIFEST, path + ": " + what);
  }

  // First present key among alternatives, or nullptr.
  const json* find(const json& obj, std::initializer_list<const char*> keys) const {
    if (!obj.is_object()) return nullptr;
    for (const char* k : keys) {
      auto it = obj.find(k);
      if (it != obj.end() && !it->is_null()) return &*it;
    }
    return nullptr;
  }

  std::string str(const json& v, const std::string& what) const {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    fail(what + " must be a string");
  }

  double num(const json& v, const std::string& what) const {
    if (!v.is_number()) fail(what + " must be a number");
    return v.get<double>();
  }

  int32_t integer(const json& v, const std::string& what) const {
    if (!v.is_number_integer()) fail(what + " must be an integer");
    const int64_t x = v.get<int64_t>();
    if (x < INT32_MIN || x > INT32_MAX) fail(what + " out of range");
    return static_cast<int32_t>(x);
  }

  std::vector<TensorSpec> tensors(const json& root, const char* key) const {
    const json* raw = find(root, {key});
    if (!raw) fail(std::string("missing '") + key + "'");
    std::vector<TensorSpec> out;
    auto one = [&](const std::string& name, const json& spec) {
      TensorSpec t;
      t.name = name;
      if (const json* d = find(spec, {"dtype", "type"})) t.dtype = str(*d, std::string(key) + "." + name + ".dtype");
      if (const json* s = find(spec, {"shape", "dims"})) {
        if (!s->is_array()) fail(std::string(key) + "." + name + ".shape must be a list");
        for (const json& d : *s) t.shape.push_back(d.is_number_integer() ? d.get<int64_t>() : -1);
      }
      out.push_back(std::move(t));
    };
    if (raw->is_array()) {
      for (const json& e : *raw) {
        const json* n = find(e, {"name"});
        if (!n) fail(std::string(key) + ": entry without a name");
        one(str(*n, std::string(key) + ".name"), e);
      }
    } else if (raw->is_object()) {
      for (auto it = raw->begin(); it != raw->end(); ++it) one(it.key(), it.value());
    } else {
      fail(std::string("'") + key + "' must be a list or an object");
    }
    return out;
  }
};

int version_major(const std::string& v) {
  size_t i = 0;
  while (i < v.size() && !std::isdigit(static_cast<unsigned char>(v[i]))) ++i;
  if (i == v.size()) return -1;
  return std::atoi(v.c_str() + i);
}

// (major, minor) of "X.Y[.Z...]"; {-1,-1} when unparsable.
std::pair<int, int> major_minor(const std::string& v) {
  int a = -1, b = -1;
  if (std::sscanf(v.c_str(), "%d.%d", &a, &b) != 2) return {-1, -1};
  return {a, b};
}

}  // namespace

Manifest read_manifest(const std::string& bundle_dir) {
  Manifest m;
  m.path = join_path(bundle_dir, "manifest.json");
  std::ifstream f(m.path, std::ios::binary);
  if (!f) throw Failure(XPR_ERR_IO, m.path + ": cannot open (is '" + bundle_dir + "' an export bundle?)");
  json root;
  try {
    root = json::parse(f);
  } catch (const json::exception& e) {
    throw Failure(XPR_ERR_MANIFEST, m.path + ": not valid JSON: " + e.what());
  }
  const Reader r{m.path};
  if (!root.is_object()) r.fail("not a JSON object");

  try {
    // ---- versions -------------------------------------------------------------------------
    const json* fmt = r.find(root, {"format"});
    if (!fmt || !fmt->is_string() || fmt->get<std::string>() != "xpr-bundle")
      r.fail("'format' is not \"xpr-bundle\": not an xpr export bundle manifest");
    const json* fv = r.find(root, {"format_version"});
    if (!fv) r.fail("missing 'format_version'");
    m.format_version = r.str(*fv, "format_version");
    if (version_major(m.format_version) != kManifestFormatMajor)
      throw Failure(XPR_ERR_VERSION, m.path + ": manifest format version '" + m.format_version +
                                         "' is not supported (this runtime reads format version " +
                                         std::to_string(kManifestFormatMajor) + ")");
    const json* tv = r.find(root, {"toolkit_version", "xpr_version"});
    if (!tv)
      if (const json* t = r.find(root, {"toolkit"})) tv = r.find(*t, {"version"});
    if (!tv) r.fail("missing 'toolkit_version'");
    m.toolkit_version = r.str(*tv, "toolkit_version");
    {
      const auto [maj, min] = major_minor(m.toolkit_version);
      // 0.x toolkits: same minor line as this runtime; later: same major
      const auto [rmaj, rmin] = major_minor(XPR_VERSION_STRING);
      const bool ok = maj >= 0 && maj == rmaj && (maj > 0 || min == rmin);
      if (!ok)
        throw Failure(XPR_ERR_VERSION, m.path + ": bundle written by xpr " + m.toolkit_version +
                                           ", this runtime (xpr " XPR_VERSION_STRING ") reads bundles of xpr " +
                                           std::to_string(rmaj) + "." + std::to_string(rmin) + ".x");
    }

    // ---- model config: window size and patch size for the window grid of each block ---------
    int32_t window = 7, patch = 4;
    if (const json* mc = r.find(root, {"model_config"}); mc && mc->is_object()) {
      if (const json* v = r.find(*mc, {"window_size"})) window = r.integer(*v, "model_config.window_size");
      if (const json* v = r.find(*mc, {"patch_size"})) patch = r.integer(*v, "model_config.patch_size");
      if (window < 1 || patch < 1) r.fail("model_config.window_size/patch_size must be >= 1");
    }

    // ---- model and tensors ----------------------------------------------------------------
    if (const json* model = r.find(root, {"model"})) {
      if (model->is_string()) m.model_file = model->get<std::string>();
      else if (const json* file = r.find(*model, {"file", "path"})) m.model_file = r.str(*file, "model.file");
    }
    m.inputs = r.tensors(root, "inputs");
    m.outputs = r.tensors(root, "outputs");

    // ---- preprocessing --------------------------------------------------------------------
    const json* pre = r.find(root, {"preprocessing"});
    if (!pre || !pre->is_object()) r.fail("missing 'preprocessing' object");
    const json* pv = r.find(*pre, {"version"});
    if (!pv) r.fail("missing 'preprocessing.version'");
    m.preprocessing.version = r.str(*pv, "preprocessing.version");
    if (!preprocessing_version_supported(m.preprocessing.version))
      throw Failure(XPR_ERR_VERSION, m.path + ": preprocessing version '" + m.preprocessing.version +
                                         "' is not implemented by this runtime (it implements xpr-preproc-1)");
    auto read_norm = [&](const json& obj) {
      if (const json* v = r.find(obj, {"mean"})) m.preprocessing.mean = r.num(*v, "preprocessing.mean");
      if (const json* v = r.find(obj, {"std"})) m.preprocessing.std = r.num(*v, "preprocessing.std");
    };
    read_norm(*pre);
    if (const json* norm = r.find(*pre, {"normalize", "normalise", "normalization", "normalisation"}))
      if (norm->is_object()) read_norm(*norm);
    if (const json* v = r.find(*pre, {"mask_threshold"})) m.preprocessing.mask_threshold = r.num(*v, "mask_threshold");
    if (const json* v = r.find(*pre, {"profile_threshold", "profile_fraction", "min_fraction"}))
      m.preprocessing.profile_fraction = r.num(*v, "profile_fraction");
    if (const json* crop = r.find(*pre, {"crop"}); crop && crop->is_object()) {
      if (const json* v = r.find(*crop, {"threshold", "mask_threshold"}))
        m.preprocessing.mask_threshold = r.num(*v, "crop.threshold");
      if (const json* v = r.find(*crop, {"min_fraction", "profile_fraction"}))
        m.preprocessing.profile_fraction = r.num(*v, "crop.min_fraction");
    }
    // model input size: preprocessing.size / input_size, else the cc input's last two dims
    if (const json* sz = r.find(*pre, {"size", "input_size", "img_size", "image_size"}); sz && sz->is_array() &&
                                                                                          sz->size() == 2) {
      m.preprocessing.out_rows = r.integer((*sz)[0], "preprocessing.size[0]");
      m.preprocessing.out_cols = r.integer((*sz)[1], "preprocessing.size[1]");
    }
    const TensorSpec* cc = nullptr;
    const TensorSpec* mlo = nullptr;
    for (const auto& t : m.inputs) {
      if (t.name == "cc") cc = &t;
      if (t.name == "mlo") mlo = &t;
    }
    if (!cc || !mlo) r.fail("inputs must include 'cc' and 'mlo'");
    if (cc->shape != mlo->shape) r.fail("inputs 'cc' and 'mlo' differ in shape");
    if (cc->shape.size() != 4 || cc->shape[1] != 1 || cc->shape[2] <= 0 || cc->shape[3] <= 0)
      r.fail("input 'cc' must have a static shape [B, 1, H, W]");
    if (m.preprocessing.out_rows == 0) {
      m.preprocessing.out_rows = static_cast<int32_t>(cc->shape[2]);
      m.preprocessing.out_cols = static_cast<int32_t>(cc->shape[3]);
    } else if (m.preprocessing.out_rows != cc->shape[2] || m.preprocessing.out_cols != cc->shape[3]) {
      r.fail("preprocessing size differs from the shape of input 'cc'");
    }
    bool has_prob = false, has_logits = false;
    for (const auto& t : m.outputs) {
      has_prob |= t.name == "prob";
      has_logits |= t.name == "logits";
    }
    if (!has_prob || !has_logits) r.fail("outputs must include 'logits' and 'prob'");

    // ---- classes --------------------------------------------------------------------------
    if (const json* cn = r.find(root, {"class_names", "classes"}); cn && cn->is_array())
      for (const json& c : *cn) m.class_names.push_back(r.str(c, "class_names[]"));
    if (m.class_names.empty()) m.class_names = {"benign", "malignant"};

    // ---- hashes ---------------------------------------------------------------------------
    const json* files = r.find(root, {"files", "sha256", "checksums"});
    if (!files) r.fail("missing 'files' (SHA-256 of every bundle file)");
    auto add_hash = [&](const std::string& rel, const json& v) {
      std::string h;
      if (v.is_string()) h = v.get<std::string>();
      else if (const json* s = r.find(v, {"sha256"})) h = r.str(*s, "files." + rel + ".sha256");
      else r.fail("files entry '" + rel + "' has no sha256");
      if (h.size() != 64 || h.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
        r.fail("files entry '" + rel + "': '" + h + "' is not a SHA-256 hex digest");
      for (char& c : h) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      m.sha256[rel] = h;
    };
    if (files->is_object()) {
      for (auto it = files->begin(); it != files->end(); ++it) add_hash(it.key(), it.value());
    } else if (files->is_array()) {
      for (const json& e : *files) {
        const json* p = r.find(e, {"path", "file", "name"});
        if (!p) r.fail("files entry without a path");
        add_hash(r.str(*p, "files[].path"), e);
      }
    } else {
      r.fail("'files' must be an object or a list");
    }

    // ---- window selection per block ------------------------------------------------------
    const json* blocks = r.find(root, {"blocks"});
    if (!blocks || !blocks->is_array()) r.fail("missing 'blocks' list");
    for (const json& b : *blocks) {
      BlockSpec s;
      const json* v = r.find(b, {"view"});
      if (!v) r.fail("blocks[]: missing 'view'");
      s.view = r.str(*v, "blocks[].view");
      if (s.view != "cc" && s.view != "mlo") r.fail("blocks[].view '" + s.view + "' is not cc or mlo");
      if (!(v = r.find(b, {"stage"}))) r.fail("blocks[]: missing 'stage'");
      s.stage = r.integer(*v, "blocks[].stage");
      if (s.stage < 1 || s.stage > 4) r.fail("blocks[].stage " + std::to_string(s.stage) + " not in 1..4");
      if (!(v = r.find(b, {"block"}))) r.fail("blocks[]: missing 'block'");
      s.block = r.integer(*v, "blocks[].block");
      if (!(v = r.find(b, {"k"}))) r.fail("blocks[]: missing 'k'");
      s.k = r.integer(*v, "blocks[].k");
      const json* g = r.find(b, {"window_grid"});
      if (!g || !g->is_array() || g->size() != 2) r.fail("blocks[].window_grid must be [rows, cols]");
      s.grid_rows = r.integer((*g)[0], "blocks[].window_grid[0]");
      s.grid_cols = r.integer((*g)[1], "blocks[].window_grid[1]");
      s.window = window;
      s.token_stride = patch << (s.stage - 1);
      // Cyclic shift per dimension: `shift_size` [rows, cols], written by every export since it was
      // added; bundles from before fall back to the Swin rule the model follows (timm): odd blocks
      // shift by window // 2, except along a token dimension no larger than the window (tiny's 14x7
      // stage 4 shifts rows only), which the boolean `shifted` cannot express.
      if (const json* ss = r.find(b, {"shift_size"}); ss && ss->is_array() && ss->size() == 2) {
        s.shift_rows = r.integer((*ss)[0], "blocks[].shift_size[0]");
        s.shift_cols = r.integer((*ss)[1], "blocks[].shift_size[1]");
      } else if (s.block % 2 == 1) {
        s.shift_rows = s.grid_rows > 1 ? window / 2 : 0;
        s.shift_cols = s.grid_cols > 1 ? window / 2 : 0;
      }
      if (const json* o = r.find(b, {"selection_output"})) s.output = r.str(*o, "blocks[].selection_output");
      const std::string where = "block " + s.view + " stage " + std::to_string(s.stage) + " block " +
                                std::to_string(s.block);
      if (s.grid_rows < 1 || s.grid_cols < 1) r.fail(where + ": empty window grid");
      if (s.k < 1 || s.k > s.grid_rows * s.grid_cols)
        r.fail(where + ": k = " + std::to_string(s.k) + " outside 1.." + std::to_string(s.grid_rows * s.grid_cols));
      if (s.shift_rows < 0 || s.shift_cols < 0 || s.shift_rows >= s.grid_rows * window ||
          s.shift_cols >= s.grid_cols * window)
        r.fail(where + ": shift outside the token grid");
      const int64_t tokens_r = int64_t(s.grid_rows) * window * s.token_stride;
      const int64_t tokens_c = int64_t(s.grid_cols) * window * s.token_stride;
      if (tokens_r > m.preprocessing.out_rows || tokens_c > m.preprocessing.out_cols)
        r.fail(where + ": window grid larger than the model input");
      m.blocks.push_back(std::move(s));
    }

    // ---- engines and plugin ---------------------------------------------------------------
    if (const json* plugin = r.find(root, {"plugin"}); plugin && plugin->is_object()) {
      if (const json* v = r.find(*plugin, {"op_type"})) m.plugin_op_type = r.str(*v, "plugin.op_type");
    }
    if (const json* engines = r.find(root, {"engines"}); engines && engines->is_array()) {
      for (const json& e : *engines) {
        EngineEntry en;
        const json* v = nullptr;
        if ((v = r.find(e, {"backend"}))) en.backend = r.str(*v, "engines[].backend");
        if ((v = r.find(e, {"path"}))) en.file = r.str(*v, "engines[].path");
        if ((v = r.find(e, {"sha256"}))) en.sha256 = r.str(*v, "engines[].sha256");
        if ((v = r.find(e, {"version"}))) en.version = r.str(*v, "engines[].version");
        if ((v = r.find(e, {"compute_capability"}))) en.compute_capability = r.str(*v, "engines[].compute_capability");
        if ((v = r.find(e, {"hw_compat"}))) en.hw_compat = r.str(*v, "engines[].hw_compat");
        if ((v = r.find(e, {"plugins_required"})) && v->is_array())
          for (const json& p : *v) en.plugins_required.push_back(r.str(p, "engines[].plugins_required[]"));
        if (en.file.empty()) r.fail("engines[] entry without a path");
        if (en.sha256.size() != 64) r.fail("engines[] entry '" + en.file + "' without a SHA-256");
        m.engines.push_back(std::move(en));
      }
    }
  } catch (const json::exception& e) {
    r.fail(std::string("unexpected structure: ") + e.what());
  }
  return m;
}

void verify_files(const std::string& bundle_dir, const Manifest& m, bool check_hashes) {
  if (!m.sha256.count(m.model_file))
    throw Failure(XPR_ERR_MANIFEST, m.path + ": model file '" + m.model_file + "' has no SHA-256 entry in 'files'");
  for (const auto& [rel, expected] : m.sha256) {
    if (rel.empty() || rel[0] == '/' || rel.find("..") != std::string::npos)
      throw Failure(XPR_ERR_MANIFEST, m.path + ": file entry '" + rel + "' is not a path inside the bundle");
    const std::string p = join_path(bundle_dir, rel);
    std::ifstream probe(p, std::ios::binary);
    if (!probe) throw Failure(XPR_ERR_IO, p + ": listed in the manifest but missing or unreadable");
    if (!check_hashes) continue;
    const std::string got = sha256_file(p);
    if (got != expected)
      throw Failure(XPR_ERR_HASH, p + ": SHA-256 mismatch (manifest " + expected + ", file " + got +
                                      "): the bundle was modified or is incomplete");
  }
}

}  // namespace xpr::detail
