// Batch assembly into LibTorch tensors: the only part of data/ that includes torch.
#pragma once

#include "base/torch_glog.h"
#include "data/loader.h"

namespace reid::data {

// An allocator whose buffers are torch tensors (pinned host memory when CUDA is available), so
// the loader's threads write straight into the tensor the trainer receives.
BufferAllocator TorchBufferAllocator();

struct TensorBatch {
  torch::Tensor images;  // (B, 3, H, W) float32
  torch::Tensor pids;    // (B) int64
  torch::Tensor camids;  // (B) int64
};

// Wraps (no copy when the buffer came from TorchBufferAllocator) the batch as tensors.
TensorBatch ToTensors(const Batch& batch, int height, int width);

}  // namespace reid::data
