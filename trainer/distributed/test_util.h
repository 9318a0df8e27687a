// Helpers shared by the single-process tests of trainer/distributed/.
#pragma once

#include <gtest/gtest.h>

#include "base/torch_glog.h"

namespace reid::dist {

// max|a - b| / max|b| within `tol` (shapes equal), naming `what` on failure.
inline void ExpectClose(const torch::Tensor& a, const torch::Tensor& b, double tol,
                        const char* what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double err = (a - b).abs().max().item<double>();
  const double scale = b.abs().max().item<double>() + 1e-12;
  EXPECT_LE(err / scale, tol) << what << ": max abs error " << err << " scale " << scale;
}

}  // namespace reid::dist
