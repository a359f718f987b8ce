// Unit tests of the pieces with exact answers: SHA-256, the manifest seal and path rule, VOI,
// orientation, crop, resize.
#include <cmath>
#include <vector>

#include "check.h"
#include "failure.h"
#include "manifest.h"
#include "onnx_refs.h"
#include "preprocess.h"
#include "sha256.h"

using namespace xpr::detail;

static xpr_image make(const std::vector<uint16_t>& px, int rows, int cols) {
  xpr_image im;
  xpr_image_init(&im);
  im.pixels = px.data();
  im.rows = rows;
  im.cols = cols;
  im.name = "unit";
  return im;
}

static xpr_status status_of(const xpr_image& im, const PreprocSettings& s, std::string* msg = nullptr) {
  std::vector<float> out(static_cast<size_t>(s.out_rows) * s.out_cols);
  try {
    preprocess(im, s, out.data());
  } catch (const Failure& f) {
    if (msg) *msg = f.what();
    return f.status;
  }
  return XPR_OK;
}

// protobuf wire format by hand: a length-delimited field, and the external-data walk on bytes
static std::string field(int number, const std::string& body) {
  std::string out(1, static_cast<char>((number << 3) | 2));
  if (number > 15) out = std::string{static_cast<char>(((number << 3) | 2) | 0x80), static_cast<char>(number >> 4)};
  size_t n = body.size();
  do {
    out += static_cast<char>((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>= 7;
  } while (n);
  return out + body;
}
static std::string walk_error(const std::string& bytes) {
  try {
    xpr::detail::external_refs_of(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "g.onnx");
  } catch (const xpr::detail::Failure& f) {
    return f.what();
  }
  return "";
}
static void onnx_walk_tests() {
  using xpr::detail::external_refs_of;
  auto refs = [](const std::string& b) {
    return external_refs_of(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "g.onnx");
  };
  CHECK(refs("").empty());
  // Model.graph(7) { initializer(5) { name(8) "w", external_data(13) {location, ../x}, data_location(14) 1 } }
  const std::string entry = field(13, field(1, "location") + field(2, "../x.bin"));
  const std::string tensor = field(8, "w") + entry + std::string{0x70, 0x01};
  auto r = refs(field(7, field(5, tensor)));
  CHECK(r.size() == 1 && r[0].what == "tensor 'w'" && r[0].entries.size() == 1 &&
        r[0].entries[0] == std::make_pair(std::string("location"), std::string("../x.bin")));
  // inside a function's node's attribute (Model.functions 25 > Function.node 7 > Node.attribute 5 > t 5)
  r = refs(field(25, field(7, field(5, field(5, tensor)))));
  CHECK(r.size() == 1);
  // data_location EXTERNAL without entries is reported too (the check then wants a location)
  r = refs(field(7, field(5, field(8, "v") + std::string{0x70, 0x01})));
  CHECK(r.size() == 1 && r[0].entries.empty());
  // an inline tensor is not
  CHECK(refs(field(7, field(5, field(8, "i") + field(9, std::string(64, 'x'))))).empty());
  CHECK(contains(walk_error(std::string{0x3a, 0x05}), "a field longer than its message"));
  CHECK(contains(walk_error(std::string{0x08, static_cast<char>(0x80)}), "truncated varint"));
  CHECK(contains(walk_error(std::string{0x0b}), "wire type 3"));
  CHECK(contains(walk_error(std::string{0x02, 0x00}), "field number 0"));
  std::string deep = tensor;  // Graph > Node > Attribute > Graph ... past protobuf's 100 levels
  for (int i = 0; i < 40; ++i) deep = field(1, field(5, field(6, deep)));
  CHECK_MSG(contains(walk_error(field(7, deep)), "nested deeper than 100"), walk_error(field(7, deep)));
  CHECK(walk_error(field(7, field(5, tensor))).empty());
}

int main() {
  onnx_walk_tests();
  // SHA-256 (FIPS 180-4 examples)
  CHECK(sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  {
    const std::string m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(sha256_hex(m.data(), m.size()) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    Sha256 s;  // split updates give the same digest
    for (char c : m) s.update(&c, 1);
    CHECK(s.hex_digest() == sha256_hex(m.data(), m.size()));
  }

  // the seal: bytes written by xpr_deploy.bundle.seal.seal({"format": "xpr-bundle", "name": "unit"})
  {
    const std::string digest = "dd04f1af822645c7febe2857f34c929405538fe2a26a20896ab106a312061272";
    const std::string raw = "{\n  \"format\": \"xpr-bundle\",\n  \"name\": \"unit\",\n  \"manifest_sha256\": \"" +
                            digest + "\"\n}\n";
    std::string rec, got, why;
    CHECK(seal_digests(raw, rec, got, why) && rec == digest && got == digest);
    CHECK(reseal(raw) == raw);
    std::string edited = raw;
    edited.replace(edited.find("unit"), 4, "unix");
    CHECK(seal_digests(edited, rec, got, why) && rec == digest && got != digest);
    CHECK(seal_digests(reseal(edited), rec, got, why) && rec == got && rec != digest);
    CHECK(!seal_digests("{}", rec, got, why) && contains(why, "no manifest_sha256 seal"));
    CHECK(!seal_digests(raw + raw, rec, got, why) && contains(why, "2 manifest_sha256 fields"));
    std::string upper = raw;  // upper-case hex, a space less: not the sealed field
    upper[upper.find(digest)] = 'D';
    CHECK(!seal_digests(upper, rec, got, why));
    std::string nospace = raw;
    nospace.replace(nospace.find("\": \"" + digest), 4, "\":\"");
    CHECK(!seal_digests(nospace, rec, got, why));
  }
  // paths a manifest may name
  for (const char* ok : {"model.onnx", "engines/model.sm86.engine", "a/b/c", "..a", "a..", ".hidden", "a b"})
    CHECK_MSG(plain_relpath(ok), ok);
  for (const char* bad : {"", "/abs", "../x", "a/../b", "a/..", ".", "./a", "a/./b", "a//b", "a/", "a\\b", "c:x",
                          "C:/x"})
    CHECK_MSG(!plain_relpath(bad), bad);
  CHECK(!plain_relpath(std::string("a\0b", 3)));

  // resize: identity at scale 1, constants stay constant, weights sum to 1
  {
    std::vector<double> in(6 * 5);
    for (size_t i = 0; i < in.size(); ++i) in[i] = std::sin(0.7 * i);
    CHECK(resize_triangle(in, 6, 5, 6, 5) == in);
    std::vector<double> c(37 * 23, 0.25);
    for (double v : resize_triangle(c, 37, 23, 16, 8)) CHECK(std::abs(v - 0.25) < 1e-12);
    for (double v : resize_triangle(std::vector<double>(5 * 3, 0.5), 5, 3, 11, 7)) CHECK(std::abs(v - 0.5) < 1e-12);
  }
  // downscale by 2 in columns: PIL weights for out i: inputs 2i-1..2i+2 with 1/8,3/8,3/8,1/8 (interior)
  {
    std::vector<double> in = {0, 0, 0, 8, 0, 0, 0, 0};
    auto out = resize_triangle(in, 1, 8, 1, 4);
    CHECK(std::abs(out[1] - 3.0) < 1e-12);  // centre 3.0: taps 1..4 -> 3/8 * 8
    CHECK(std::abs(out[2] - 1.0) < 1e-12);  // centre 5.0: taps 3..6 -> 1/8 * 8
  }

  PreprocSettings s;
  s.out_rows = 8;
  s.out_cols = 4;
  s.mean = 0.0;
  s.std = 1.0;

  // a breast on the right half gets flipped to the left; burned-in marker rows ignored
  {
    const int rows = 100, cols = 60;
    std::vector<uint16_t> px(rows * cols, 0);
    for (int r = 10; r < 90; ++r)
      for (int c = 30; c < 60; ++c) px[r * cols + c] = 1000;
    px[0 * cols + 2] = 1000;  // one-pixel marker: 1 % of a column, below the 2 % rule
    xpr_image im = make(px, rows, cols);
    Cropped cr = window_orient_crop(im, s);
    CHECK(cr.flipped);
    CHECK(cr.c0 == 0 && cr.c1 == 29);
    CHECK(cr.r0 == 10 && cr.r1 == 89);
    CHECK(cr.rows == 80 && cr.cols == 30);
    for (double v : cr.x) CHECK(v == 1.0);
  }

  // VOI LINEAR per PS3.3 C.11.2.1.2, MONOCHROME1, padding
  {
    const int rows = 50, cols = 50;
    std::vector<uint16_t> px(rows * cols, 100);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < 25; ++c) px[r * cols + c] = 250;
    px[0] = 7;  // padding value
    xpr_image im = make(px, rows, cols);
    im.has_window = 1;
    im.window_center = 200;
    im.window_width = 201;  // lo = 99.5, hi = 299.5
    Cropped cr = window_orient_crop(im, s);
    CHECK(!cr.flipped);
    CHECK(cr.cols == 25 && cr.rows == 50);
    CHECK(cr.x[0] == 0.0);                                  // stored 7 -> below the window
    CHECK(cr.x[1] == (250 - (200 - 0.5)) / (201 - 1.0) + 0.5);  // inside the window
    im.has_padding_value = 1;
    im.padding_value = 7;
    im.monochrome1 = 1;  // inverted: the 100 side becomes bright -> flipped
    cr = window_orient_crop(im, s);
    CHECK(cr.flipped);
    im.voi_function = XPR_VOI_LINEAR_EXACT;
    im.monochrome1 = 0;
    cr = window_orient_crop(im, s);
    CHECK(cr.x[0] == 0.0);  // padding
    CHECK(cr.x[1] == (250 - 200) / 201.0 + 0.5);
    im.voi_function = XPR_VOI_SIGMOID;
    cr = window_orient_crop(im, s);
    CHECK(std::abs(cr.x[1] - 1.0 / (1.0 + std::exp(-4.0 * 50.0 / 201.0))) < 1e-15);
  }

  // signed pixels masked to BitsStored and sign-extended; rescale
  {
    const int rows = 20, cols = 20;
    std::vector<uint16_t> px(rows * cols, 0xF000 | 0x0FFF);  // -1 in 12 bits (+ garbage high bits)
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < 10; ++c) px[r * cols + c] = 0x07FF;  // 2047
    xpr_image im = make(px, rows, cols);
    im.is_signed = 1;
    im.bits_stored = 12;
    im.rescale_slope = 2.0;
    im.rescale_intercept = 10.0;
    Cropped cr = window_orient_crop(im, s);  // min-max: (-2+10) .. (4094+10)
    CHECK(cr.cols == 10 && !cr.flipped);
    CHECK(cr.x[0] == 1.0);
  }

  // errors: every one a Failure with a message naming the image
  {
    std::vector<uint16_t> px(16 * 16, 5);
    std::string msg;
    xpr_image im = make(px, 16, 16);
    CHECK(status_of(im, s, &msg) == XPR_ERR_IMAGE);  // constant, no window: all 0
    CHECK(contains(msg, "unit") && contains(msg, "empty breast mask"));
    im.has_window = 1;
    im.window_center = 1000;
    im.window_width = 100;
    CHECK(status_of(im, s, &msg) == XPR_ERR_IMAGE && contains(msg, "empty breast mask"));
    im.window_width = 0.5;
    CHECK(status_of(im, s, &msg) == XPR_ERR_IMAGE && contains(msg, "WindowWidth"));
    im = make(px, 0, 16);
    CHECK(status_of(im, s) == XPR_ERR_IMAGE);
    im = make(px, 16, 16);
    im.pixels = nullptr;
    CHECK(status_of(im, s) == XPR_ERR_IMAGE);
    im = make(px, 16, 16);
    im.bits_stored = 0;
    CHECK(status_of(im, s) == XPR_ERR_IMAGE);
    im.bits_stored = 17;
    CHECK(status_of(im, s) == XPR_ERR_IMAGE);
    im = make(px, 16, 16);
    im.has_modality_lut_sequence = 1;
    CHECK(status_of(im, s, &msg) == XPR_ERR_IMAGE && contains(msg, "Modality LUT"));
    im = make(px, 16, 16);
    im.rescale_slope = std::nan("");
    CHECK(status_of(im, s) == XPR_ERR_IMAGE);
    im = make(px, 16, 16);
    im.voi_function = 42;
    im.has_window = 1;
    im.window_width = 10;
    CHECK(status_of(im, s) == XPR_ERR_IMAGE);
    PreprocSettings bad = s;
    bad.version = "xpr-preproc-2";
    CHECK(status_of(make(px, 16, 16), bad) == XPR_ERR_VERSION);
  }

  std::printf("test_units: %d failure(s)\n", g_failures);
  return g_failures ? 1 : 0;
}
