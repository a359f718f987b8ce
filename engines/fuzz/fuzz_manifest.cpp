// libFuzzer target: the manifest reader (seal check, then every field rule) on arbitrary bytes.
// Each input is tried as it is (the seal check answers first) and, when it holds exactly one
// seal field, re-sealed (xpr::detail::reseal), so the fuzzer gets past the seal into the field checks.
// A Failure is the expected answer; anything else escaping, or a crash / sanitizer report, is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "failure.h"
#include "manifest.h"

namespace {

void parse(const std::string& raw) {
  try {
    const xpr::detail::Manifest m = xpr::detail::parse_manifest(raw, "fuzz/manifest.json");
    // what the runtime then relies on
    if (m.inputs.size() != 2 || m.outputs.size() < 2 || m.batch < 1) __builtin_trap();
    for (const auto& b : m.blocks)
      if (b.k < 1 || int64_t(b.k) > int64_t(b.grid_rows) * b.grid_cols) __builtin_trap();
  } catch (const xpr::detail::Failure& f) {
    const std::string what = f.what();
    if (what.empty() || what.find('\n') != std::string::npos) __builtin_trap();  // one line, never empty
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string raw(reinterpret_cast<const char*>(data), size);
  std::string recorded, computed, why;
  const bool one_seal = xpr::detail::seal_digests(raw, recorded, computed, why);
  parse(raw);
  if (one_seal && recorded != computed) parse(xpr::detail::reseal(raw));
  return 0;
}
