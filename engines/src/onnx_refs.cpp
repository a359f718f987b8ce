// A minimal protobuf wire-format walk of onnx.ModelProto (onnx/onnx.proto field numbers), only
// through the messages that can hold a TensorProto; every other field is skipped by its length, so
// tensor data is never copied and the file is mapped, not read into memory.
#include "onnx_refs.h"

#include <sys/mman.h>

#include "failure.h"
#include "files.h"

namespace xpr::detail {
namespace {

enum class Kind { Model, TrainingInfo, Graph, Function, Node, Attribute, Sparse, Tensor, Entry };

// The message kind of field `field` (length-delimited) inside a `kind` message, or false.
bool child(Kind kind, uint64_t field, Kind& out) {
  switch (kind) {
    case Kind::Model:  // graph 7, training_info 20, functions 25
      if (field == 7) return out = Kind::Graph, true;
      if (field == 20) return out = Kind::TrainingInfo, true;
      if (field == 25) return out = Kind::Function, true;
      return false;
    case Kind::TrainingInfo:  // initialization 1, algorithm 2
      if (field == 1 || field == 2) return out = Kind::Graph, true;
      return false;
    case Kind::Graph:  // node 1, initializer 5, sparse_initializer 15
      if (field == 1) return out = Kind::Node, true;
      if (field == 5) return out = Kind::Tensor, true;
      if (field == 15) return out = Kind::Sparse, true;
      return false;
    case Kind::Function:  // node 7, attribute_proto 11
      if (field == 7) return out = Kind::Node, true;
      if (field == 11) return out = Kind::Attribute, true;
      return false;
    case Kind::Node:  // attribute 5
      if (field == 5) return out = Kind::Attribute, true;
      return false;
    case Kind::Attribute:  // t 5, g 6, tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23
      if (field == 5 || field == 10) return out = Kind::Tensor, true;
      if (field == 6 || field == 11) return out = Kind::Graph, true;
      if (field == 22 || field == 23) return out = Kind::Sparse, true;
      return false;
    case Kind::Sparse:  // values 1, indices 2
      if (field == 1 || field == 2) return out = Kind::Tensor, true;
      return false;
    case Kind::Tensor:  // external_data 13
      if (field == 13) return out = Kind::Entry, true;
      return false;
    case Kind::Entry:
      return false;
  }
  return false;
}

struct Walker {
  const std::string& path;
  std::vector<ExternalRef>& out;

  [[noreturn]] void bad(const std::string& why) const {
    throw Failure(XPR_ERR_BUNDLE, path + ": not a readable ONNX graph (" + why + ")");
  }

  uint64_t varint(const uint8_t*& p, const uint8_t* end) const {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) bad("truncated varint");
      const uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    bad("varint longer than 10 bytes");
  }

  // Walks one message of `kind` in [p, end). For a Tensor: its name, data_location and entries;
  // for an Entry: key (1) and value (2) into `entry`.
  void walk(const uint8_t* p, const uint8_t* end, Kind kind, int depth,
            std::pair<std::string, std::string>* entry = nullptr) {
    if (depth > kMaxProtoDepth) bad("messages nested deeper than " + std::to_string(kMaxProtoDepth));
    ExternalRef tensor;
    bool external = false;
    while (p < end) {
      const uint64_t tag = varint(p, end);
      const uint64_t field = tag >> 3;
      const unsigned wire = tag & 7;
      if (field == 0) bad("field number 0");
      if (wire == 0) {
        const uint64_t v = varint(p, end);
        if (kind == Kind::Tensor && field == 14) external = v == 1;  // data_location EXTERNAL (last wins)
      } else if (wire == 1 || wire == 5) {
        const size_t n = wire == 1 ? 8 : 4;
        if (size_t(end - p) < n) bad("truncated fixed-size field");
        p += n;
      } else if (wire == 2) {
        const uint64_t n = varint(p, end);
        if (n > uint64_t(end - p)) bad("a field longer than its message");
        const uint8_t* q = p;
        p += n;
        Kind sub;
        if (child(kind, field, sub)) {
          if (sub == Kind::Entry) {
            std::pair<std::string, std::string> e;
            walk(q, p, sub, depth + 1, &e);
            tensor.entries.push_back(std::move(e));
          } else {
            walk(q, p, sub, depth + 1);
          }
        } else if (kind == Kind::Tensor && field == 8) {
          tensor.what = "tensor '" + std::string(reinterpret_cast<const char*>(q), n) + "'";
        } else if (kind == Kind::Entry && (field == 1 || field == 2)) {
          (field == 1 ? entry->first : entry->second).assign(reinterpret_cast<const char*>(q), n);
        }
      } else {
        bad("wire type " + std::to_string(wire));  // groups: not in ONNX
      }
    }
    if (kind == Kind::Tensor && (external || !tensor.entries.empty())) {
      if (tensor.what.empty()) tensor.what = "an unnamed tensor";
      out.push_back(std::move(tensor));
    }
  }
};

}  // namespace

std::vector<ExternalRef> external_refs_of(const uint8_t* data, size_t size, const std::string& path) {
  std::vector<ExternalRef> out;
  Walker w{path, out};
  w.walk(data, data + size, Kind::Model, 0);
  return out;
}

std::vector<ExternalRef> external_refs(const std::string& path) {
  const RegularFile f(path, /*follow_links=*/false, XPR_ERR_BUNDLE);
  if (f.size() > kMaxGraphBytes)
    throw Failure(XPR_ERR_BUNDLE, path + ": " + std::to_string(f.size()) +
                                      " bytes, more than an ONNX graph can be (such weights are external data)");
  if (f.size() == 0) return external_refs_of(nullptr, 0, path);
  void* map = ::mmap(nullptr, static_cast<size_t>(f.size()), PROT_READ, MAP_PRIVATE, f.fd(), 0);
  if (map == MAP_FAILED) throw Failure(XPR_ERR_IO, path + ": cannot map the graph to read it");
  struct Unmap {
    void* p;
    size_t n;
    ~Unmap() { ::munmap(p, n); }
  } guard{map, static_cast<size_t>(f.size())};
  return external_refs_of(static_cast<const uint8_t*>(map), static_cast<size_t>(f.size()), path);
}

}  // namespace xpr::detail
