// CRC-32C: published check values (the "123456789" check and the iSCSI vectors of RFC 3720,
// appendix B.4), both implementations, continuation, and that every single-bit error is seen.
#include "io/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace sambay {
namespace {

using CrcFn = uint32_t (*)(const void*, size_t, uint32_t);

struct Impl {
  const char* name;
  CrcFn fn;
};

class Crc32c : public ::testing::TestWithParam<Impl> {};

TEST_P(Crc32c, KnownVectors) {
  const CrcFn crc = GetParam().fn;
  const std::string check = "123456789";
  EXPECT_EQ(crc(check.data(), check.size(), 0), 0xE3069283u);
  EXPECT_EQ(crc(nullptr, 0, 0), 0u);
  std::vector<uint8_t> v(32, 0x00);
  EXPECT_EQ(crc(v.data(), v.size(), 0), 0x8A9136AAu);
  v.assign(32, 0xFF);
  EXPECT_EQ(crc(v.data(), v.size(), 0), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) v[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(crc(v.data(), v.size(), 0), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) v[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(crc(v.data(), v.size(), 0), 0x113FDB5Cu);
}

TEST_P(Crc32c, ContinuesAcrossAnySplit) {
  const CrcFn crc = GetParam().fn;
  std::mt19937 rng(7);
  std::vector<uint8_t> data(1000);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  const uint32_t whole = crc(data.data(), data.size(), 0);
  for (size_t split : {0, 1, 3, 7, 8, 9, 500, 999, 1000}) {
    const uint32_t first = crc(data.data(), split, 0);
    EXPECT_EQ(crc(data.data() + split, data.size() - split, first), whole) << split;
  }
}

TEST_P(Crc32c, EverySingleBitFlipChangesTheChecksum) {
  const CrcFn crc = GetParam().fn;
  std::vector<uint8_t> data(257);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 37 + 11);
  const uint32_t clean = crc(data.data(), data.size(), 0);
  for (size_t byte = 0; byte < data.size(); ++byte)
    for (int bit = 0; bit < 8; ++bit) {
      data[byte] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_NE(crc(data.data(), data.size(), 0), clean) << byte << ":" << bit;
      data[byte] ^= static_cast<uint8_t>(1u << bit);
    }
}

INSTANTIATE_TEST_SUITE_P(Impls, Crc32c,
                         ::testing::Values(Impl{"dispatch", crc32c}, Impl{"portable", crc32c_portable}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Crc32cDispatch, AgreesWithPortableAtEveryLengthAndAlignment) {
  std::mt19937 rng(3);
  std::vector<uint8_t> data(300);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (size_t start = 0; start < 9; ++start)
    for (size_t n = 0; start + n <= data.size(); n += 1 + n / 8)
      ASSERT_EQ(crc32c(data.data() + start, n), crc32c_portable(data.data() + start, n))
          << start << "+" << n;
  std::printf("crc32c: SSE4.2 instruction %s\n", crc32c_hardware_available() ? "used" : "absent");
}

}  // namespace
}  // namespace sambay
