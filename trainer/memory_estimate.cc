// The training memory estimate (see memory_estimate.h).
#include "trainer/memory_estimate.h"

#ifdef REID_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>

#include "base/file_util.h"

namespace reid::trainer {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// a * b and a + b for non-negative values, saturating at kMax.
int64_t Mul(int64_t a, int64_t b) {
  if (a <= 0 || b <= 0) return 0;
  return a > kMax / b ? kMax : a * b;
}
int64_t Add(int64_t a, int64_t b) { return a > kMax - b ? kMax : a + b; }

// Tokens of the image encoder at `side` pixels: the patch grid (floored for an overlapping
// stride, as CLIP-ReID does) of each side, plus the class token.
int64_t GridSide(int64_t side, int64_t patch, int64_t stride) {
  return side < patch || stride <= 0 ? 0 : (side - patch) / stride + 1;
}

// "3.4 TB" (decimal units); a saturated sum reads "9.2 EB", still a true lower bound.
std::string Bytes(int64_t b) { return base::FormatBytes(static_cast<uint64_t>(b)); }

}  // namespace

MemoryEstimate EstimateTrainingMemory(const proto::ReidConfig& cfg, int world_size,
                                      int bytes_per_value) {
  const proto::ModelConfig& m = cfg.model();
  const int64_t patch = m.vision_patch_size(), stride = m.stride_size();
  const int64_t tokens = Add(Mul(GridSide(cfg.input().size_train().height(), patch, stride),
                                 GridSide(cfg.input().size_train().width(), patch, stride)),
                             1);
  const int64_t width = m.vision_width(), layers = m.vision_layers();
  const int64_t heads = m.vision_heads() > 0 ? m.vision_heads() : std::max<int64_t>(1, width / 64);
  const int64_t attention = Mul(heads, Mul(tokens, tokens));  // one image, one layer
  const int64_t world = std::max(1, world_size);
  const int64_t batch = std::max<int64_t>(1, (cfg.stage2().ims_per_batch() + world - 1) / world);
  const int64_t per_image = Mul(layers, Add(attention, Mul(16, Mul(tokens, width))));
  // Both encoders' main weights: 12 w^2 per transformer layer, the patch embedding, the
  // positional embedding and the token embedding.
  const int64_t tw = m.transformer_width();
  int64_t params = Mul(12, Mul(Mul(width, width), layers));
  params = Add(params, Mul(3, Mul(Mul(patch, patch), width)));
  params = Add(params, Mul(tokens, width));
  params = Add(params, Mul(12, Mul(Mul(tw, tw), m.transformer_layers())));
  params = Add(params, Mul(m.vocab_size(), tw));

  MemoryEstimate e;
  const int64_t activations = Mul(Mul(batch, per_image), bytes_per_value);
  e.train_bytes = Add(activations, Mul(params, 16));
  const int64_t test_batch = std::max<int64_t>(1, cfg.data().test_batch_size());
  e.inference_bytes = Mul(Mul(Mul(test_batch, 2), attention), 4);  // extraction runs in fp32
  std::ostringstream detail;
  if (e.train_bytes >= e.inference_bytes) {
    detail << "stage 2: " << batch << " image(s) per rank x " << layers << " layer(s) x (" << heads
           << " heads x " << tokens << "^2 attention + 16 x " << tokens << " tokens x " << width
           << " width) x " << bytes_per_value << " bytes = " << Bytes(activations)
           << " of activations, + " << Bytes(Mul(params, 16)) << " for the parameters";
  } else {
    detail << "inference: " << test_batch << " image(s) (data.test_batch_size) x 2 x " << heads
           << " heads x " << tokens << "^2 attention x 4 bytes";
  }
  e.detail = detail.str();
  return e;
}

Status CheckTrainingMemory(const MemoryEstimate& estimate, int ranks_on_node, int64_t limit_bytes,
                           const std::string& limit_name, const proto::ReidConfig& cfg) {
  if (limit_bytes <= 0) return Status::Ok();
  const int64_t need = Mul(estimate.bytes(), std::max(1, ranks_on_node));
  if (need <= limit_bytes) return Status::Ok();
  std::ostringstream msg;
  msg << "the model at input.size_train " << cfg.input().size_train().height() << "x"
      << cfg.input().size_train().width() << " needs at least " << Bytes(estimate.bytes())
      << " per rank" << (ranks_on_node > 1 ? " (" + std::to_string(ranks_on_node) +
                                                 " ranks on this node: " + Bytes(need) + ")"
                                           : std::string())
      << ", more than the " << Bytes(limit_bytes) << " of " << limit_name << " ("
      << estimate.detail << "); lower input.size_train, stage2.ims_per_batch or "
      << "data.test_batch_size";
  return Status::InvalidArgument(msg.str());
}

int64_t AvailableMemoryBytes(bool device_is_cuda, int device_index, std::string* name) {
  if (device_is_cuda) {
#ifdef REID_TORCH_CUDA
    *name = "CUDA device " + std::to_string(device_index);
    return static_cast<int64_t>(at::cuda::getDeviceProperties(device_index)->totalGlobalMem);
#else
    (void)device_index;
    return -1;
#endif
  }
  std::ifstream in("/proc/meminfo");  // a kernel file: never blocks, never large
  std::string key, unit;
  int64_t kb = 0;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") {
      *name = "memory available on this node (MemAvailable)";
      return Mul(kb, 1024);
    }
  }
  return -1;
}

}  // namespace reid::trainer
