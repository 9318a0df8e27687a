// A lower bound of the memory one rank of `reid train` needs, checked before training starts: an
// input size that validates (4096 x 4096 is within the config's bounds) can still ask for
// petabytes of attention maps, which LibTorch would only discover at the first forward pass.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "proto/reid_config.pb.h"

namespace reid::trainer {

struct MemoryEstimate {
  int64_t train_bytes = 0;      // a stage-2 step: activations kept for backward, plus the model
  int64_t inference_bytes = 0;  // feature extraction and evaluation: one layer's attention maps
  int64_t bytes() const { return train_bytes > inference_bytes ? train_bytes : inference_bytes; }
  std::string detail;  // how the larger one was counted, for the error message
};

// The estimate for one rank of a world of `world_size` ranks, with `bytes_per_value` 4 (fp32)
// or 2 (AMP on CUDA) for training; inference always counts 4 (it runs in fp32). For the image encoder (the text side is small beside it) with T tokens
// (the patch grid of input.size_train plus the class token), width W, H heads and L layers:
//   training, per image of the rank's share of stage2.ims_per_batch:
//     L x (H x T^2 + 16 x T x W) values: each layer keeps its attention probabilities (H x T^2)
//     and at least 16 T x W activations (LayerNorm inputs 2, q/k/v 3, attention output 1, MLP
//     input 1, hidden 4 before and 4 after GELU, projection input 1) for the backward pass;
//     plus 16 bytes per parameter of both encoders (weights, gradients, Adam's two moments).
//   inference, per image of data.test_batch_size (without gradients one layer is alive at a
//     time): 2 x H x T^2 values (the attention scores and their softmax).
// Everything else (biases, the heads, the loader's buffers, LibTorch's workspace) is left out,
// so a run refused by it cannot fit; one that passes may still run out of memory.
// Overflow-safe: sums saturate at INT64_MAX.
MemoryEstimate EstimateTrainingMemory(const proto::ReidConfig& cfg, int world_size,
                                      int bytes_per_value);

// InvalidArgument "the model at input.size_train HxW needs at least X per rank (...), more than
// the Y of LIMIT" when the estimate of `ranks_on_node` ranks exceeds `limit_bytes` (<= 0: no
// check). `limit_name` says what the limit is ("MemAvailable of this node", "CUDA device 0").
Status CheckTrainingMemory(const MemoryEstimate& estimate, int ranks_on_node, int64_t limit_bytes,
                           const std::string& limit_name, const proto::ReidConfig& cfg);

// The memory a rank on `device_is_cuda` may use: MemAvailable of /proc/meminfo shared by the
// node's ranks on CPU, the device's total memory on CUDA (LibTorch built with CUDA; else -1).
// -1 when unknown.
int64_t AvailableMemoryBytes(bool device_is_cuda, int device_index, std::string* name);

}  // namespace reid::trainer
