// The training losses of CLIP-ReID and the improved model, each a plain function of tensors, as
// the reference code defines them (docs/design.md 6). Shapes: B samples,
// K texts/classes, D feature width.
#pragma once

#include <string>
#include <vector>

#include "base/torch_glog.h"
#include "proto/reid_config.pb.h"

namespace reid::trainer {

// Supervised contrastive loss (CLIP-ReID's SupConLoss; stage 1, paper eq. for L_i2t / L_t2i):
// a (B, D), b (M, D), no normalisation, logits = a b^T / temperature, mask = same label;
// loss = -mean_i [sum_j mask_ij log_softmax_j(logits_i) / sum_j mask_ij].
torch::Tensor SupConLoss(const torch::Tensor& a, const torch::Tensor& b,
                         const torch::Tensor& labels_a, const torch::Tensor& labels_b,
                         double temperature);

// Cross-entropy with label smoothing (CrossEntropyLabelSmooth): logits (B, K), labels (B);
// q = (1 - eps) onehot + eps / K, mean over the batch of -sum_k q_k log_softmax_k.
torch::Tensor CrossEntropyLabelSmooth(const torch::Tensor& logits, const torch::Tensor& labels,
                                      double epsilon);

// Triplet loss with batch-hard mining (TripletLoss): feats (B, D), labels (B). d_ap = largest
// distance to a same-label sample (the anchor included), d_an = smallest to another label;
// margin > 0: mean(max(0, d_ap - d_an + margin)); soft: mean(log(1 + exp(d_ap - d_an))).
// normalize: L2-normalise the features first. Anchors without a negative contribute nothing.
struct TripletOptions {
  double margin = 0.3;
  bool soft = false;
  bool normalize = false;
  static TripletOptions FromConfig(const proto::LossConfig& loss);
};
torch::Tensor TripletLoss(const torch::Tensor& feats, const torch::Tensor& labels,
                          const TripletOptions& options);

// Stage-1 loss: L_i2t + L_t2i on image features (B, D) and text features (B, D) of labels (B).
torch::Tensor Stage1Loss(const torch::Tensor& image, const torch::Tensor& text,
                         const torch::Tensor& labels, double temperature);

// The stage-2 loss components (each already weighted by the config) and their sum.
struct Stage2Losses {
  torch::Tensor id, tri, i2t, total;
};
// id_weight * (CE_ls(score) + CE_ls(score_proj)) + triplet_weight * (tri(feat_last) + tri(feat)
// + tri(feat_proj)) + i2t_weight * CE_ls(logits).
Stage2Losses Stage2Loss(const proto::LossConfig& cfg, const torch::Tensor& score,
                        const torch::Tensor& score_proj, const torch::Tensor& feat_last,
                        const torch::Tensor& feat, const torch::Tensor& feat_proj,
                        const torch::Tensor& logits, const torch::Tensor& labels);

// The loss components each stage reports, total first, in the order Step() averages them: the
// name on the progress line ("" = not printed) and the metrics' `loss` label. Stage 1 has one
// loss, L_i2t + L_t2i, which the metrics also report as "supcon".
struct LossComponent {
  int stage;
  const char* progress;
  const char* metric;
};
inline constexpr LossComponent kLossComponents[] = {
    {1, "loss", "total"}, {1, "", "supcon"},
    {2, "loss", "total"}, {2, "id", "id"}, {2, "tri", "triplet"}, {2, "i2t", "i2t"}};
std::vector<std::string> ProgressLossNames(int stage);
std::vector<std::string> MetricLossNames(int stage);

}  // namespace reid::trainer
