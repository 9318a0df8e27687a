// Exact CMC / mAP (CLIP-ReID's eval_func), chunked over queries and sharded over ranks.
#include "trainer/eval/evaluator.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "data/sampler.h"

namespace reid::trainer {
namespace {

// AP of one query (-1 when it has no remaining match) and the position of its first match.
struct QueryResult {
  double ap = -1;
  int64_t first_hit = -1;
};

QueryResult RankOne(const float* dist, const RankingInput& in, int64_t q,
                    std::vector<int64_t>* order) {
  const int64_t g = static_cast<int64_t>(in.g_pids.size());
  std::iota(order->begin(), order->end(), 0);
  // Stable: equal distances keep gallery order, whatever the threads or shards.
  std::stable_sort(order->begin(), order->end(),
                   [dist](int64_t a, int64_t b) { return dist[a] < dist[b]; });
  const int64_t pid = in.q_pids[q], cam = in.q_cams[q];
  int64_t kept = 0, hits = 0;
  QueryResult r;
  double precision_sum = 0;
  for (int64_t i = 0; i < g; ++i) {
    const int64_t j = (*order)[i];
    const bool same_pid = in.g_pids[j] == pid;
    if (same_pid && in.g_cams[j] == cam) continue;  // junk: same identity, same camera
    ++kept;
    if (!same_pid) continue;
    ++hits;
    if (r.first_hit < 0) r.first_hit = kept - 1;
    precision_sum += static_cast<double>(hits) / static_cast<double>(kept);
  }
  if (hits > 0) r.ap = precision_sum / static_cast<double>(hits);
  return r;
}

int EffectiveMaxRank(const RankingInput& in) {
  return static_cast<int>(std::min<int64_t>(in.max_rank, in.g_pids.size()));
}

}  // namespace

RankingSums RankQueries(const RankingInput& in, int64_t begin, int64_t end) {
  const int max_rank = EffectiveMaxRank(in);
  torch::Tensor gallery = in.gallery.to(torch::kFloat32).contiguous();
  if (in.feat_norm) gallery = torch::nn::functional::normalize(gallery);
  const torch::Tensor g_sq = gallery.pow(2).sum(1).unsqueeze(0);  // (1, G)
  const int64_t g = gallery.size(0);
  const int64_t chunk = std::max<int64_t>(1, in.chunk_rows);
  std::vector<QueryResult> results(std::max<int64_t>(0, end - begin));
  for (int64_t b = begin; b < end; b += chunk) {
    const int64_t e = std::min(end, b + chunk);
    torch::Tensor q = in.query.slice(0, b, e).to(torch::kFloat32);
    if (in.feat_norm) q = torch::nn::functional::normalize(q);
    // Squared Euclidean distance, as the reference's addmm: |q|^2 + |g|^2 - 2 q g^T.
    const torch::Tensor dist =
        (q.pow(2).sum(1, true) + g_sq - 2.0 * torch::matmul(q, gallery.t())).contiguous();
    const float* d = dist.data_ptr<float>();
    at::parallel_for(0, e - b, 1, [&](int64_t lo, int64_t hi) {
      std::vector<int64_t> order(g);
      for (int64_t r = lo; r < hi; ++r)
        results[b - begin + r] = RankOne(d + r * g, in, b + r, &order);
    });
  }
  RankingSums sums;  // summed in query order: independent of the thread count
  sums.cmc_hits.assign(max_rank, 0);
  for (const QueryResult& r : results) {
    if (r.ap < 0) continue;  // no remaining match: skipped, as the reference does
    sums.ap_sum += r.ap;
    sums.valid += 1;
    for (int64_t k = r.first_hit; k < max_rank; ++k) sums.cmc_hits[k] += 1;
  }
  return sums;
}

EvalResult EvaluateRanking(const RankingInput& in, dist::Communicator* comm) {
  const int64_t nq = static_cast<int64_t>(in.q_pids.size());
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  const data::ShardRange shard = data::InferenceShard(nq, rank, world);
  const int max_rank = EffectiveMaxRank(in);
  const RankingSums sums = RankQueries(in, shard.begin, shard.end);
  // Reduce: [ap_sum, valid, cmc_hits...] in float64 (exact for counts below 2^53).
  torch::Tensor packed = torch::zeros({2 + max_rank}, torch::kFloat64);
  auto p = packed.accessor<double, 1>();
  p[0] = sums.ap_sum;
  p[1] = static_cast<double>(sums.valid);
  for (int k = 0; k < max_rank; ++k) p[2 + k] = static_cast<double>(sums.cmc_hits[k]);
  if (comm != nullptr && world > 1) comm->AllReduce(packed, dist::ReduceOp::kSum);
  EvalResult r;
  r.num_query = nq;
  r.num_gallery = static_cast<int64_t>(in.g_pids.size());
  r.num_valid_queries = static_cast<int64_t>(p[1]);
  if (r.num_valid_queries == 0) {
    LOG(WARNING) << "evaluation: no query has a match in the gallery (all skipped)";
    r.cmc.assign(max_rank, 0.0);
    return r;
  }
  r.mAP = p[0] / p[1];
  for (int k = 0; k < max_rank; ++k) r.cmc.push_back(p[2 + k] / p[1]);
  return r;
}

std::string FormatEvalResult(const EvalResult& r) {
  char buf[160];
  auto at = [&](size_t k) { return k < r.cmc.size() ? 100.0 * r.cmc[k] : 0.0; };
  std::snprintf(buf, sizeof(buf), "mAP %.1f%% | R1 %.1f%% R5 %.1f%% R10 %.1f%% (%lld/%lld queries)",
                100.0 * r.mAP, at(0), at(4), at(9), static_cast<long long>(r.num_valid_queries),
                static_cast<long long>(r.num_query));
  return buf;
}

std::string EvalResultJson(const EvalResult& r, const std::string& extra) {
  std::ostringstream out;
  out.precision(10);
  out << "{\"mAP\":" << r.mAP << ",\"cmc\":[";
  for (size_t k = 0; k < r.cmc.size(); ++k) out << (k ? "," : "") << r.cmc[k];
  out << "],\"num_valid_queries\":" << r.num_valid_queries << ",\"num_query\":" << r.num_query
      << ",\"num_gallery\":" << r.num_gallery;
  if (!extra.empty()) out << "," << extra;
  out << "}";
  return out.str();
}

}  // namespace reid::trainer
