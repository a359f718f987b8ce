// manifest.json of an export bundle (export/manifest.schema.json), read with nlohmann-json.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "preprocess.h"

namespace xpr::detail {

struct TensorSpec {
  std::string name, dtype;
  std::vector<int64_t> shape;  // -1 for a dynamic dimension
};

struct BlockSpec {
  std::string view;       // "cc" / "mlo"
  int32_t stage = 0;      // 1..4
  int32_t block = 0;      // index within the stage
  int32_t grid_rows = 0, grid_cols = 0, k = 0, shift_rows = 0, shift_cols = 0, window = 7, token_stride = 4;
  std::string output;     // ONNX output holding its kept indices ("" when not exported)
};

struct EngineEntry {
  std::string backend;    // "tensorrt" / "tensorrt-rtx"
  std::string file;       // `path`, relative to the bundle
  std::string sha256;
  std::string version;    // TensorRT version that built it
  std::string compute_capability;  // e.g. "8.6"
  std::string hw_compat;           // "same" / "ampere+"
  std::vector<std::string> plugins_required;  // plugin op types the engine needs at run time
};

struct Manifest {
  std::string path;                 // manifest.json path (for messages)
  std::string format_version;       // schema / manifest format version
  std::string toolkit_version;
  std::string model_file = "model.onnx";
  std::vector<TensorSpec> inputs, outputs;
  PreprocSettings preprocessing;
  std::vector<std::string> class_names;
  int32_t positive_class = 1;
  std::map<std::string, std::string> sha256;  // relative file -> hex digest
  std::vector<BlockSpec> blocks;
  std::vector<EngineEntry> engines;
  std::string plugin_op_type;       // custom window-selection op (--plugin), "" when none
};

// Reads and validates bundle_dir/manifest.json. Throws Failure (IO, MANIFEST, VERSION).
Manifest read_manifest(const std::string& bundle_dir);

// Checks that every file in the manifest exists and matches its SHA-256, and that the model
// (and engine) files are listed. Throws Failure (IO, HASH, MANIFEST).
void verify_files(const std::string& bundle_dir, const Manifest& m, bool check_hashes);

// Manifest format versions (major) this build reads.
constexpr int kManifestFormatMajor = 1;

}  // namespace xpr::detail
