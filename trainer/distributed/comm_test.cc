// The raw communicator layer in one process: the world-size-1 communicator and the float16 /
// bfloat16 wire conversions (against LibTorch's).
#include "trainer/distributed/comm.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <vector>

namespace reid::dist {
namespace {

TEST(LocalCommTest, CollectivesAreIdentityOrCopy) {
  auto comm = MakeLocalComm();
  std::vector<float> buf = {1, 2, 3};
  comm->AllReduce(buf.data(), 3, DType::kFloat32, ReduceOp::kAvg)->Wait();
  EXPECT_EQ(buf, (std::vector<float>{1, 2, 3}));
  std::vector<float> out(3);
  comm->AllGatherV(buf.data(), out.data(), {3}, DType::kFloat32)->Wait();
  EXPECT_EQ(out, buf);
}

// The wire conversions of float16 / bfloat16 against LibTorch's: every 16-bit pattern to float,
// and float to 16 bits for edge values, ties, subnormals, overflow and many random floats.
TEST(Float16Test, ConversionsMatchLibTorch) {
  torch::Tensor bits = torch::arange(65536, torch::kInt).to(torch::kShort);  // every pattern
  for (bool half : {true, false}) {
    torch::Tensor as16 = bits.view(half ? torch::kHalf : torch::kBFloat16);
    torch::Tensor expect = as16.to(torch::kFloat);
    const int16_t* b = bits.data_ptr<int16_t>();
    const float* e = expect.data_ptr<float>();
    for (int i = 0; i < 65536; ++i) {
      const uint16_t v = static_cast<uint16_t>(b[i]);
      const float got = half ? HalfToFloat(v) : BFloat16ToFloat(v);
      if (std::isnan(e[i])) {
        ASSERT_TRUE(std::isnan(got)) << std::hex << v;
      } else {
        ASSERT_EQ(got, e[i]) << (half ? "half " : "bf16 ") << std::hex << v;
      }
    }
  }
  torch::manual_seed(3);
  std::vector<torch::Tensor> parts = {
      torch::randn({20000}) * 1e3, torch::randn({20000}) * 1e-5, torch::randn({20000}) * 1e-7,
      torch::randn({2000}) * 7e4, torch::randn({2000}) * 1e-30,
      // every float16 value and every midpoint between neighbours (ties to even)
      (torch::arange(0, 0x7C00, torch::kInt)
           .to(torch::kShort)
           .view(torch::kHalf)
           .to(torch::kFloat)),
      torch::tensor({0.f, -0.f, 65504.f, 65519.f, 65520.f, 65536.f, 1e30f, -1e30f,
                     std::numeric_limits<float>::infinity(),
                     -std::numeric_limits<float>::infinity(), 5.9604645e-8f, 2.9802322e-8f,
                     2.9802326e-8f, 6.1035156e-5f, 3.3895314e38f, 3.4028235e38f})};
  torch::Tensor h = parts[5];
  parts.push_back((h.slice(0, 0, -1) + h.slice(0, 1)) / 2);
  torch::Tensor values = torch::cat(parts);
  for (bool half : {true, false}) {
    torch::Tensor expect = values.to(half ? torch::kHalf : torch::kBFloat16).view(torch::kShort);
    const float* v = values.data_ptr<float>();
    const int16_t* e = expect.data_ptr<int16_t>();
    for (int64_t i = 0; i < values.numel(); ++i) {
      const uint16_t got = half ? FloatToHalf(v[i]) : FloatToBFloat16(v[i]);
      ASSERT_EQ(got, static_cast<uint16_t>(e[i]))
          << (half ? "half " : "bf16 ") << std::setprecision(9) << v[i];
    }
  }
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
}

}  // namespace
}  // namespace reid::dist
