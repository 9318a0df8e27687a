// The training losses of CLIP-ReID and the improved model, each a plain function of tensors, as
// the reference code defines them (docs/design.md 6), and the names they are reported under.
// Shapes: B samples, K texts/classes, D feature width.
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
// Built by FromConfig from loss.triplet_margin, soft_triplet and triplet_normalize, whose schema
// defaults are CLIP-ReID's (margin 0.3, hard margin, not normalised); none is restated here.
struct TripletOptions {
  double margin = 0;
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
// The components after the total, in the order of ReportedLosses(2)'s values 1, 2, 3.
std::vector<torch::Tensor> Stage2LossParts(const Stage2Losses& losses);

// The one table of loss names: what a training step reports of its averaged losses (the total,
// value 0, then the stage's parts in order), as the `loss` label of the metrics and history.jsonl
// and as the label on the progress line.
struct ReportedLoss {
  const char* metric;    // label of reid_loss and history.jsonl
  const char* progress;  // label on the progress line; nullptr = not shown there
  int value;             // index into the step's averaged losses: 0 = total
};
// Stage 1's total is its only loss (L_i2t + L_t2i of SupConLoss), reported as "total" and
// "supcon"; stage 2's are total, id, triplet and i2t.
const std::vector<ReportedLoss>& ReportedLosses(int stage);
// The progress-line labels of ReportedLosses(stage), in value order ("loss", "id", ...).
std::vector<const char*> ProgressLossLabels(int stage);
// id_weight * (CE_ls(score) + CE_ls(score_proj)) + triplet_weight * (tri(feat_last) + tri(feat)
// + tri(feat_proj)) + i2t_weight * CE_ls(logits).
Stage2Losses Stage2Loss(const proto::LossConfig& cfg, const torch::Tensor& score,
                        const torch::Tensor& score_proj, const torch::Tensor& feat_last,
                        const torch::Tensor& feat, const torch::Tensor& feat_proj,
                        const torch::Tensor& logits, const torch::Tensor& labels);


}  // namespace reid::trainer
