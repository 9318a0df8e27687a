// CLIP-ReID's losses (loss/supcontrast.py, softmax_loss.py, triplet_loss.py, make_loss.py).
#include "trainer/losses.h"

namespace reid::trainer {

torch::Tensor SupConLoss(const torch::Tensor& a, const torch::Tensor& b,
                         const torch::Tensor& labels_a, const torch::Tensor& labels_b,
                         double temperature) {
  auto mask = labels_a.unsqueeze(1).eq(labels_b.unsqueeze(0)).to(a.scalar_type());  // (B, M)
  auto logits = torch::matmul(a, b.t()) / temperature;                              // (B, M)
  logits = logits - std::get<0>(logits.max(1, /*keepdim=*/true)).detach();
  auto log_prob = logits - logits.exp().sum(1, /*keepdim=*/true).log();
  auto mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1);  // (B)
  return -mean_log_prob_pos.mean();
}

torch::Tensor CrossEntropyLabelSmooth(const torch::Tensor& logits, const torch::Tensor& labels,
                                      double epsilon) {
  const int64_t k = logits.size(1);
  auto log_probs = torch::log_softmax(logits, 1);  // (B, K)
  auto q = torch::zeros_like(log_probs).scatter_(1, labels.unsqueeze(1).to(torch::kLong), 1.0);
  q = (1.0 - epsilon) * q + epsilon / static_cast<double>(k);
  return (-q * log_probs).mean(0).sum();
}

TripletOptions TripletOptions::FromConfig(const proto::LossConfig& loss) {
  TripletOptions o;
  o.margin = loss.triplet_margin();
  o.soft = loss.soft_triplet();
  o.normalize = loss.triplet_normalize();
  return o;
}

torch::Tensor TripletLoss(const torch::Tensor& feats, const torch::Tensor& labels,
                          const TripletOptions& options) {
  torch::Tensor x = feats;
  if (options.normalize) x = x / (x.norm(2, -1, /*keepdim=*/true) + 1e-12);  // as normalize()
  auto sq = x.pow(2).sum(1, /*keepdim=*/true);                               // (B, 1)
  auto dist = (sq + sq.t() - 2.0 * torch::matmul(x, x.t())).clamp_min(1e-12).sqrt();  // (B, B)
  auto same = labels.unsqueeze(1).eq(labels.unsqueeze(0));
  // Hard positive: the largest same-label distance; hard negative: the smallest other-label one.
  // Masked with +-inf-like constants instead of the reference's view(N, -1), which needs the same
  // count of positives per anchor; the selected values are the same.
  const double big = 1e12;
  auto d_ap = std::get<0>(dist.masked_fill(same.logical_not(), -big).max(1));  // (B)
  auto d_an = std::get<0>(dist.masked_fill(same, big).min(1));                 // (B)
  auto has_neg = same.logical_not().any(1);
  torch::Tensor per_anchor;
  if (options.soft) {
    per_anchor = torch::nn::functional::softplus(d_ap - d_an);  // log(1 + exp(-(d_an - d_ap)))
  } else {
    per_anchor = (d_ap - d_an + options.margin).clamp_min(0);
  }
  per_anchor = per_anchor.masked_fill(has_neg.logical_not(), 0.0);
  const auto valid = has_neg.sum().item<int64_t>();
  if (valid == 0) return per_anchor.sum() * 0.0;  // keeps the graph; no negative anywhere
  return per_anchor.sum() / static_cast<double>(feats.size(0));
}

torch::Tensor Stage1Loss(const torch::Tensor& image, const torch::Tensor& text,
                         const torch::Tensor& labels, double temperature) {
  return SupConLoss(image, text, labels, labels, temperature) +
         SupConLoss(text, image, labels, labels, temperature);
}

Stage2Losses Stage2Loss(const proto::LossConfig& cfg, const torch::Tensor& score,
                        const torch::Tensor& score_proj, const torch::Tensor& feat_last,
                        const torch::Tensor& feat, const torch::Tensor& feat_proj,
                        const torch::Tensor& logits, const torch::Tensor& labels) {
  const double eps = cfg.label_smoothing();
  const TripletOptions tri = TripletOptions::FromConfig(cfg);
  Stage2Losses l;
  l.id = cfg.id_weight() * (CrossEntropyLabelSmooth(score, labels, eps) +
                            CrossEntropyLabelSmooth(score_proj, labels, eps));
  l.tri =
      cfg.triplet_weight() * (TripletLoss(feat_last, labels, tri) + TripletLoss(feat, labels, tri) +
                              TripletLoss(feat_proj, labels, tri));
  l.i2t = cfg.i2t_weight() * CrossEntropyLabelSmooth(logits, labels, eps);
  l.total = l.id + l.tri + l.i2t;
  return l;
}

std::vector<torch::Tensor> Stage2LossParts(const Stage2Losses& losses) {
  return {losses.id, losses.tri, losses.i2t};
}

const std::vector<ReportedLoss>& ReportedLosses(int stage) {
  static const std::vector<ReportedLoss> kStage1 = {{"total", "loss", 0}, {"supcon", nullptr, 0}};
  static const std::vector<ReportedLoss> kStage2 = {
      {"total", "loss", 0}, {"id", "id", 1}, {"triplet", "tri", 2}, {"i2t", "i2t", 3}};
  return stage == 1 ? kStage1 : kStage2;
}

std::vector<const char*> ProgressLossLabels(int stage) {
  std::vector<const char*> labels;
  for (const ReportedLoss& r : ReportedLosses(stage)) {
    if (r.progress != nullptr) labels.push_back(r.progress);
  }
  return labels;
}

}  // namespace reid::trainer
