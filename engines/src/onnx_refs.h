// The files an ONNX graph reads besides itself (external data), read from the graph's protobuf
// wire format without loading any tensor data: the C++ side of xpr_deploy/bundle/external.py.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace xpr::detail {

struct ExternalRef {
  std::string what;  // "tensor 'w'" (a message names the tensor)
  std::vector<std::pair<std::string, std::string>> entries;  // external_data (key, value), in order
};

// Every tensor of the model stored externally (data_location EXTERNAL or any external_data entry):
// graph initializers and sparse initializers, attribute tensors (t, tensors, sparse_tensor(s)),
// in subgraphs (g, graphs), local functions (nodes and attribute defaults) and training info.
// Throws Failure(XPR_ERR_BUNDLE) naming `path` when the file is not a readable ModelProto.
std::vector<ExternalRef> external_refs(const std::string& path);

// The same on bytes in memory (tests, fuzzing); `path` names them in messages.
std::vector<ExternalRef> external_refs_of(const uint8_t* data, size_t size, const std::string& path);

// Protobuf's own limits, which ONNX Runtime's parser applies too.
constexpr int kMaxProtoDepth = 100;
constexpr long long kMaxGraphBytes = (2LL << 30) - 1;

}  // namespace xpr::detail
