// Torch-side batch assembly: pinned tensor buffers and the wrapping of a Batch.
#include "data/batch_tensor.h"

#include <torch/cuda.h>

namespace reid::data {

BufferAllocator TorchBufferAllocator() {
  const bool pin = torch::cuda::is_available();
  return [pin](size_t num_floats) {
    auto t = std::make_shared<torch::Tensor>(
        torch::empty({static_cast<int64_t>(num_floats)},
                     torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(pin)));
    BatchBuffer b;
    b.data = t->data_ptr<float>();
    b.size = num_floats;
    b.owner = t;
    b.torch_owned = true;
    return b;
  };
}

TensorBatch ToTensors(const Batch& batch, int height, int width) {
  const int64_t n = static_cast<int64_t>(batch.indices.size());
  CHECK_EQ(batch.images.size, static_cast<size_t>(n * 3 * height * width))
      << "batch of step " << batch.step << ": buffer size vs (" << n << ", 3, " << height << ", "
      << width << ")";
  TensorBatch out;
  if (batch.images.torch_owned) {
    out.images = static_cast<torch::Tensor*>(batch.images.owner.get())->view({n, 3, height, width});
  } else {
    out.images =
        torch::from_blob(batch.images.data, {n, 3, height, width}, torch::kFloat32).clone();
  }
  out.pids = torch::tensor(batch.pids, torch::kInt64);
  out.camids = torch::tensor(batch.camids, torch::kInt64);
  return out;
}

}  // namespace reid::data
