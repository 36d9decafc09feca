// safetensors reading and writing (and the JSON reader under it): exact round trips, the byte
// layout other tools expect, and a clear error naming the file for every malformed or damaged
// file, never a crash or a silently wrong tensor.
#include "core/bf16.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "tests/io_test_util.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace sambay {
namespace {

using testing::ScratchDir;
using testing::expect_error;
using testing::read_bytes;
using testing::write_bytes;

// Values that test exactness: signed zero, subnormals, extremes, infinities, NaN payloads.
std::vector<float> awkward_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (float& x : v) {
    uint32_t bits = rng();
    std::memcpy(&x, &bits, 4);
  }
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), 1.0f, -2.5f};
  for (size_t i = 0; i < std::size(specials) && i < n; ++i) v[i] = specials[i];
  return v;
}

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * 4) == 0; }

struct Sample {
  std::vector<float> a = awkward_values(6 * 5, 1), b = awkward_values(7, 2), c = awkward_values(1, 3);
  std::vector<SafetensorsEntry> entries() const {
    return {{"model.layers.0.attn.Wqkv.weight", {6, 5}, a.data()},
            {"bias", {7}, b.data()},
            {"scalar_like", {1, 1, 1}, c.data()}};
  }
};

TEST(Safetensors, F32RoundTripIsBitExactAndKeepsOrderAndMetadata) {
  ScratchDir dir;
  const Sample s;
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, s.entries(), false, {{"format", "pt"}, {"note", "a \"quoted\" value"}});
  const SafetensorsFile f = open_safetensors(path);
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors[0].name, "model.layers.0.attn.Wqkv.weight");
  EXPECT_EQ(f.tensors[0].dtype, "F32");
  EXPECT_EQ(f.tensors[0].shape, (std::vector<int64_t>{6, 5}));
  EXPECT_EQ(f.tensors[2].shape, (std::vector<int64_t>{1, 1, 1}));
  ASSERT_EQ(f.metadata.size(), 2u);
  EXPECT_EQ(f.metadata[1].second, "a \"quoted\" value");
  std::vector<float> out(s.a.size());
  f.read_f32(*f.find("model.layers.0.attn.Wqkv.weight"), out.data());
  EXPECT_TRUE(same_bits(out.data(), s.a.data(), s.a.size()));
  out.resize(s.b.size());
  f.read_f32(*f.find("bias"), out.data());
  EXPECT_TRUE(same_bits(out.data(), s.b.data(), s.b.size()));
  EXPECT_EQ(f.find("absent"), nullptr);
}

TEST(Safetensors, ByteLayoutMatchesTheFormat) {
  ScratchDir dir;
  const float v[3] = {1.0f, -2.0f, 0.5f};
  const std::string path = dir.file("x.safetensors");
  write_safetensors(path, {{"t", {3}, v}}, false, {});
  const std::vector<uint8_t> bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";
  ASSERT_EQ(bytes.size(), 8 + n + 12);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + n);
  EXPECT_EQ(header.rfind("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 0), 0u)
      << header;
  float back[3];
  std::memcpy(back, bytes.data() + 8 + n, 12);  // raw little-endian float32
  EXPECT_TRUE(same_bits(back, v, 3));
}

TEST(Safetensors, Bf16WritesRoundedValuesAndReadsThemExactly) {
  ScratchDir dir;
  const std::vector<float> v = awkward_values(40, 5);
  const std::string path = dir.file("b.safetensors");
  write_safetensors(path, {{"w", {8, 5}, v.data()}}, true, {{"format", "pt"}});
  const SafetensorsFile f = open_safetensors(path);
  EXPECT_EQ(f.tensors[0].dtype, "BF16");
  EXPECT_EQ(f.tensors[0].end - f.tensors[0].begin, 80);
  std::vector<float> out(40);
  f.read_f32(f.tensors[0], out.data());
  for (size_t i = 0; i < v.size(); ++i) {
    const float want = to_float(to_bf16(v[i]));
    if (std::isnan(want))
      EXPECT_TRUE(std::isnan(out[i])) << i;
    else
      EXPECT_TRUE(same_bits(&out[i], &want, 1)) << i << ": " << v[i];
  }
}

// A valid file whose header text is `header` and whose data is `data_bytes` zero bytes.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> bytes(8);
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.resize(bytes.size() + data_bytes, 0);
  write_bytes(path, bytes);
}

TEST(Safetensors, MalformedHeadersNameTheFileAndTheProblem) {
  ScratchDir dir;
  const std::string p = dir.file("bad.safetensors");
  struct Case {
    std::string header;
    size_t data;
    std::string expect;
  };
  const Case cases[] = {
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12, "overlap"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", 16, "gap"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "needs 12"},
      {R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8, "unknown dtype"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12, "trailing bytes"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4, "truncated"},
      {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "negative"},
      {R"({"a":{"dtype":"F32","shape":[2]}})", 8, "data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})", 8, "twice"},
      {R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8, "too large"},
      {R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, "__metadata__.k"},
      {R"([1,2])", 0, "does not start with"},
      {R"({"a":)", 0, "invalid JSON"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x)", 8, "expected end of input"},
  };
  for (const Case& c : cases) {
    write_raw(p, c.header, c.data);
    SCOPED_TRACE(c.header);
    expect_error([&] { open_safetensors(p); }, {p, c.expect});
  }
  write_bytes(p, {1, 2, 3});
  expect_error([&] { open_safetensors(p); }, {p, "too short"});
  std::vector<uint8_t> huge(16, 0);
  huge[7] = 0x7f;  // header length 2^62
  write_bytes(p, huge);
  expect_error([&] { open_safetensors(p); }, {p, "does not fit"});
}

TEST(Safetensors, EveryTruncationAndSampledBitFlipIsAnErrorOrHarmless) {
  ScratchDir dir;
  const Sample s;
  const std::string good = dir.file("good.safetensors"), p = dir.file("damaged.safetensors");
  write_safetensors(good, s.entries(), false, {{"format", "pt"}});
  const std::vector<uint8_t> bytes = read_bytes(good);
  for (size_t len = 0; len < bytes.size(); ++len) {
    write_bytes(p, std::vector<uint8_t>(bytes.begin(), bytes.begin() + len));
    expect_error([&] { open_safetensors(p); }, {p});
  }
  // safetensors has no checksums: a flipped bit may leave a valid file (another name, a value
  // changed in the data). Every flip in the header must either be refused naming the file or
  // give a file whose byte ranges still tile the data exactly (the reader guarantees it, so
  // reading any tensor stays in bounds). Import then refuses a renamed tensor (test_checkpoint).
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  int errors = 0, valid = 0;
  for (size_t pos = 0; pos < 8 + n; ++pos) {
    std::vector<uint8_t> flipped = bytes;
    flipped[pos] ^= static_cast<uint8_t>(1u << (pos % 8));
    write_bytes(p, flipped);
    try {
      const SafetensorsFile f = open_safetensors(p);
      int64_t covered = 0;
      for (const SafetensorsTensor& t : f.tensors) {
        covered += t.end - t.begin;
        std::vector<float> x((t.end - t.begin) / 4);
        f.read_f32(t, x.data());
      }
      EXPECT_EQ(covered, f.data_bytes) << pos;
      ++valid;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      ++errors;
    }
  }
  EXPECT_GT(errors, static_cast<int>(n) / 2);
  std::printf("header bit flips: %d refused, %d still well-formed\n", errors, valid);
}

TEST(Json, ParsesValuesEscapesAndExactIntegers) {
  const Json j = parse_json(
      R"( {"a": [1, -2, 3.5e2, true, false, null], "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00",
          "big": 9007199254740993, "o": {}} )",
      "test");
  ASSERT_TRUE(j.is_object());
  const Json& a = j["a"];
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(json_int(a[1], "x"), -2);
  EXPECT_EQ(json_number(a[2], "x"), 350.0);
  EXPECT_EQ(a[3], true);
  EXPECT_EQ(a[4], false);
  EXPECT_TRUE(a[5].is_null());
  EXPECT_EQ(json_string(j["s"], "s"), "q\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_EQ(json_int(j["big"], "big"), 9007199254740993);  // not representable as a double
  EXPECT_TRUE(j["o"].is_object());
  EXPECT_EQ(json_find(j, "missing"), nullptr);
  // Keys keep their order.
  std::string keys;
  for (const auto& [k, v] : j.items()) keys += k;
  EXPECT_EQ(keys, "asbigo");
}

TEST(Json, RejectsMalformedDocumentsNamingThePlace) {
  for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "\"\\x\"", "\"abc", "01x", "tru",
                          "\"\\ud800\"", "{\"a\":1}}", "[\"\x01\"]"})
    expect_error([&] { parse_json(bad, "doc.json"); }, {"doc.json", "invalid JSON"});
  expect_error([&] { parse_json(std::string(100, '[') + std::string(100, ']'), "deep.json"); },
               {"deep.json", "nested too deeply"});
  expect_error([&] { parse_json(R"({"a": 1, "b": {"a": 2, "a": 3}})", "twice.json"); },
               {"twice.json", "key 'a' appears twice"});
  expect_error([&] { json_int(parse_json("1.5", "n"), "n.value"); }, {"n.value", "integer"});
  expect_error([&] { json_string(parse_json("[]", "s"), "s.value"); }, {"s.value", "string", "array"});
}

}  // namespace
}  // namespace sambay
