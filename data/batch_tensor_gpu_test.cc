// CUDA builds: the loader's torch buffers are pinned host memory and reach the GPU unchanged
// (non-blocking copy). Skips itself where LibTorch has no CUDA device.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "data/batch_tensor.h"

namespace reid::data {
namespace {

TEST(BatchTensorGpu, PinnedBuffersCopyToTheDevice) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const BufferAllocator alloc = TorchBufferAllocator();
  Batch batch;
  batch.indices = {0, 1};
  batch.pids = {3, 4};
  batch.camids = {0, 1};
  batch.images = alloc(2 * 3 * 4 * 2);
  for (size_t i = 0; i < batch.images.size; ++i) batch.images.data[i] = 0.25f * i;
  const TensorBatch t = ToTensors(batch, 4, 2);
  EXPECT_TRUE(t.images.is_pinned());
  const torch::Tensor gpu = t.images.to(torch::kCUDA, /*non_blocking=*/true);
  torch::cuda::synchronize();
  EXPECT_TRUE(torch::equal(gpu.cpu(), t.images));
}

}  // namespace
}  // namespace reid::data
