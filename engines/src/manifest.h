// manifest.json of an export bundle (format 2, export/manifest.schema.json), read with nlohmann-json.
//
// Nothing in a bundle is used before all of it is checked, by the rules of the Python verified
// reader (xpr_deploy/bundle/reader.py; export/README.md "Integrity"):
//   1. manifest.json is a regular file (no link), <= 16 MiB, a JSON object, `format` "xpr-bundle",
//      `format_version` 2 (older: "re-export");
//   2. its seal `manifest_sha256` matches its bytes (seal_digests);
//   3. every path it names is a plain relative path (plain_relpath), and every path named outside
//      `files` is a key of `files`;
//   4. the folder holds exactly the files of `files` plus manifest.json: no symbolic link or special
//      file anywhere, nothing unlisted, nothing missing, every SHA-256 as listed (verify_files);
//      every graph reads external data only from those files (verify_graphs);
//   5. the I/O roles (`io`) name real inputs/outputs; blocks' selection outputs are outputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "preprocess.h"

namespace xpr::detail {

struct TensorSpec {
  std::string name, dtype;
  std::vector<int64_t> shape;
};

// Tensor names by role (the manifest's `io`): nothing in the runtime hard-codes them.
struct IoNames {
  std::string cc, mlo;       // inputs: the CC and MLO views
  std::string logits, prob;  // outputs
};

struct BlockSpec {
  std::string view;       // "cc" / "mlo" (the view, not a tensor name)
  int32_t stage = 0;      // 1..4
  int32_t block = 0;      // index within the stage
  int32_t grid_rows = 0, grid_cols = 0, k = 0, shift_rows = 0, shift_cols = 0, window = 7, token_stride = 4;
  std::string output;     // output holding its kept indices ("" when not exported)
};

struct EngineEntry {
  std::string backend;    // "tensorrt" / "tensorrt-rtx"
  std::string file;       // `path`, relative to the bundle
  std::string onnx;       // the graph it was built from
  std::string sha256;
  std::string version;    // TensorRT version that built it
  std::string compute_capability;  // e.g. "8.6"
  std::string hw_compat;           // "same" / "ampere+"
  std::vector<std::string> plugins_required;  // plugin op types the engine needs at run time
};

struct Manifest {
  std::string path;                 // manifest.json path (for messages)
  std::string digest;               // manifest_sha256: the bundle's identity
  int format_version = 0;
  std::string toolkit_version;
  std::string model_file;           // the served graph
  std::map<std::string, std::string> graphs;  // precision -> file
  int32_t batch = 1;
  int32_t max_batch = 0;            // > 0: dynamic batch axis (-1 first in every shape); the runtime runs batch 1
  IoNames io;
  std::vector<TensorSpec> inputs, outputs;
  PreprocSettings preprocessing;
  std::vector<std::string> class_names;
  double threshold = 0.5;           // the default operating point's threshold
  std::string operating_point;      // its name ("youden", ...); threshold_method (or "threshold") without points
  // named operating points chosen on the validation split (name -> threshold), sorted by name
  std::vector<std::pair<std::string, double>> operating_points;
  std::map<std::string, std::string> sha256;  // `files`: relative file -> hex digest
  std::vector<BlockSpec> blocks;
  std::vector<EngineEntry> engines;
  std::string plugin_op_type;       // custom window-selection op (--plugin), "" when none
};

// Reads bundle_dir/manifest.json and applies rules 1-3 and 5. Throws Failure (IO, BUNDLE,
// MANIFEST, VERSION, HASH for a broken seal).
Manifest read_manifest(const std::string& bundle_dir);

// Rules 1 (from the JSON on), 2, 3 and 5 on the bytes of a manifest.json; `path` names it in messages.
// read_manifest = the file checks of rule 1 + parse_manifest. Throws Failure.
Manifest parse_manifest(const std::string& raw, const std::string& path);

// Rule 4: the folder holds exactly the listed files (plus manifest.json), no links, each with its
// SHA-256 (hashes only when check_hashes). Throws Failure (IO, BUNDLE, HASH).
void verify_files(const std::string& bundle_dir, const Manifest& m, bool check_hashes);

// Rule 4b: every graph a reader may load (`model`, `graphs.*`, `engines[].onnx`, any listed .onnx)
// reads external data only from files of `files`: each `location` a plain relative path of
// [A-Za-z0-9._-] parts (no absolute path, no "..", no device, no ONNX Runtime memory tag), resolved
// against the graph's folder, listed (so hashed by verify_files), offset + length inside the file.
// Throws Failure (BUNDLE) naming the graph and the location. Call after verify_files.
void verify_graphs(const std::string& bundle_dir, const Manifest& m);

// The manifest format this build reads (and nothing else).
constexpr int kManifestFormat = 2;
constexpr size_t kMaxManifestBytes = size_t(16) << 20;
// Arrays/objects inside each other, the top-level object counting 1 (Python: MAX_JSON_DEPTH).
constexpr int kMaxJsonDepth = 64;
// Bounds no real bundle comes near (the paper model: 2688 x 896, batch 1); past them a manifest is refused
// before any buffer is sized from it.
constexpr int64_t kMaxInputPixels = int64_t(1) << 26;
constexpr int32_t kMaxBatch = 64;

// The seal (rule 2): raw must hold exactly one `"manifest_sha256": "<64 lowercase hex>"`; recorded
// is that hex, computed the SHA-256 of raw with those 64 digits replaced by '0'. False (why set)
// when there is not exactly one such field.
bool seal_digests(const std::string& raw, std::string& recorded, std::string& computed, std::string& why);

// raw with its one seal field set to the digest of its content (for tools and tests).
std::string reseal(const std::string& raw);

// Rule 3: relative, '/'-separated, no empty, "." or ".." part, no '\\', ':' or NUL, not absolute.
bool plain_relpath(const std::string& rel);

}  // namespace xpr::detail
