// Exact CMC / mAP (CLIP-ReID's eval_func), chunked over queries and sharded over ranks.
#include "trainer/eval/evaluator.h"

#include <ATen/Parallel.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <sstream>
#include <unordered_map>

#include "trainer/distributed/shard.h"


namespace reid::trainer {
namespace {

// A gallery item keyed for ranking: ascending distance, ties by gallery index.
struct Keyed {
  float d;
  int64_t j;
  bool operator<(const Keyed& o) const { return d < o.d || (d == o.d && j < o.j); }
};

// Per-thread buffers of RankRow.
struct Scratch {
  std::vector<Keyed> matches, junk;
  std::vector<float> thresholds;
  std::vector<float> row;  // the query's distances
  std::vector<int64_t> before;
};

// The reference's eval_func for one query without sorting the gallery: only the positions of its
// matches matter. A match's position among the kept items is the number of gallery items ranked
// before it, less the junk ranked before it: per match, a vectorised count over the query's
// distances (matches are few). `key(j)` is the query's distance to gallery item j.
template <typename Key>
QueryRanking RankRow(const Key& raw_key, int64_t g, const std::vector<int64_t>& same_pid,
                     const std::vector<int64_t>& g_cams, int64_t cam, Scratch* s) {
  // A NaN distance ranks last, as numpy's argsort puts it (ties among them by index): compared
  // as NaN it would be neither before nor after anything, every match would count as ranked
  // first, and AP would exceed 1.
  const auto key = [&raw_key](int64_t j) {
    const float d = raw_key(j);
    return std::isnan(d) ? std::numeric_limits<float>::infinity() : d;
  };
  QueryRanking r;
  s->matches.clear();
  s->junk.clear();
  for (int64_t j : same_pid) (g_cams[j] == cam ? s->junk : s->matches).push_back({key(j), j});
  const int64_t h = static_cast<int64_t>(s->matches.size());
  if (h == 0) return r;  // no remaining match: skipped, as the reference does
  std::sort(s->matches.begin(), s->matches.end());
  s->thresholds.resize(h);
  for (int64_t i = 0; i < h; ++i) s->thresholds[i] = s->matches[i].d;
  const float* t = s->thresholds.data();
  // The query's distances once, then per distinct match distance a branch-free (vectorised)
  // count of the items below it and of those equal to it.
  s->row.resize(g);
  float* x = s->row.data();
  for (int64_t j = 0; j < g; ++j) x[j] = key(j);
  s->before.assign(h, 0);
  bool other_ties = false;
  for (int64_t i = 0; i < h; ++i) {
    if (i > 0 && t[i] == t[i - 1]) {  // equal distances: the earlier match precedes by index
      s->before[i] = s->before[i - 1] + 1;
      continue;
    }
    const float ti = t[i];
    int32_t less = 0, equal = 0;
    for (int64_t j = 0; j < g; ++j) {
      less += x[j] < ti;
      equal += x[j] == ti;
    }
    int64_t same = 1;  // matches at this distance
    while (i + same < h && t[i + same] == ti) ++same;
    other_ties |= equal != same;
    s->before[i] = less;
  }
  if (other_ties) {  // rare exact ties with other items: count each match's predecessors directly
    for (int64_t i = 0; i < h; ++i) {
      const Keyed m = s->matches[i];
      int64_t n = 0;
      for (int64_t j = 0; j < g; ++j) n += Keyed{x[j], j} < m;
      s->before[i] = n;
    }
  }
  double precision_sum = 0;
  for (int64_t i = 0; i < h; ++i) {
    int64_t junk_before = 0;
    for (const Keyed& k : s->junk) junk_before += k < s->matches[i];
    const int64_t position = s->before[i] - junk_before;  // among the kept items, from 0
    if (i == 0) r.first_hit = position;
    precision_sum += static_cast<double>(i + 1) / static_cast<double>(position + 1);
  }
  r.ap = precision_sum / static_cast<double>(h);
  return r;
}

int EffectiveMaxRank(const RankingInput& in) {
  return static_cast<int>(std::min<int64_t>(in.max_rank, in.g_pids.size()));
}

// Gallery indices of each pid, ascending.
std::unordered_map<int64_t, std::vector<int64_t>> IndexByPid(const std::vector<int64_t>& pids) {
  std::unordered_map<int64_t, std::vector<int64_t>> index;
  for (int64_t j = 0; j < static_cast<int64_t>(pids.size()); ++j) index[pids[j]].push_back(j);
  return index;
}

}  // namespace

torch::Tensor HugePageEmpty(at::IntArrayRef sizes) {
  int64_t bytes = sizeof(float);
  for (int64_t s : sizes) bytes *= s;
  constexpr size_t kHuge = 2 << 20;
  const size_t rounded =
      (static_cast<size_t>(std::max<int64_t>(bytes, 1)) + kHuge - 1) / kHuge * kHuge;
  void* p = nullptr;
  CHECK_EQ(posix_memalign(&p, kHuge, rounded), 0) << "cannot allocate " << rounded << " bytes";
  madvise(p, rounded, MADV_HUGEPAGE);  // advice only: 4 KiB pages where refused
  return torch::from_blob(
      p, sizes, [](void* q) { std::free(q); }, torch::TensorOptions().dtype(torch::kFloat32));
}

torch::Tensor NormalizeRows(const torch::Tensor& x) {
  torch::Tensor out = HugePageEmpty(x.sizes());
  NormalizeRowsInto(x, out);
  return out;
}

void NormalizeRowsInto(const torch::Tensor& x, torch::Tensor& out) {
  const torch::Tensor f = x.to(torch::kFloat32);
  // F.normalize(dim=1): x / max(|x|, 1e-12).
  at::div_out(out, f, f.norm(2, 1, true).clamp_min(1e-12));
}

torch::Tensor SquaredNorms(const torch::Tensor& x) {
  const torch::Tensor f = x.to(torch::kFloat32).contiguous();
  const int64_t n = f.size(0), d = f.size(1);
  torch::Tensor out = torch::empty({n}, torch::kFloat32);
  const float* p = f.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {  // no (N, D) temporary
    for (int64_t i = lo; i < hi; ++i) {
      const float* row = p + i * d;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t k = 0;
      for (; k + 8 <= d; k += 8) {
        for (int t = 0; t < 8; ++t) acc[t] += row[k + t] * row[k + t];
      }
      float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      for (; k < d; ++k) sum += row[k] * row[k];
      o[i] = sum;
    }
  });
  return out;
}

std::vector<QueryRanking> RankEachQuery(const RankingInput& in, int64_t begin, int64_t end) {
  const int64_t g = static_cast<int64_t>(in.g_pids.size());
  const auto by_pid = IndexByPid(in.g_pids);
  const std::vector<int64_t> none;
  torch::Tensor gallery, g_sq;
  if (!in.distance_rows) {
    gallery = in.feat_norm ? NormalizeRows(in.gallery) : in.gallery.to(torch::kFloat32);
    gallery = gallery.contiguous();
    g_sq = SquaredNorms(gallery);  // (G)
  }
  const int64_t chunk = std::max<int64_t>(1, in.chunk_rows);
  std::vector<QueryRanking> results(std::max<int64_t>(0, end - begin));
  // Reused blocks (fresh pages cost a fault each): a chunk's queries and its dot products.
  torch::Tensor block, q_block;
  if (!in.distance_rows) {
    const int64_t rows = std::min(chunk, std::max<int64_t>(end - begin, 1));
    block = HugePageEmpty({rows, g});
    q_block = HugePageEmpty({rows, in.query.size(1)});
  }
  for (int64_t b = begin; b < end; b += chunk) {
    const int64_t e = std::min(end, b + chunk);
    torch::Tensor rows, q_sq;  // (e - b, G): distances, or dot products with the gallery
    if (in.distance_rows) {
      rows = in.distance_rows(b, e).to(torch::kFloat32).contiguous();
      CHECK_EQ(rows.size(0), e - b);
      CHECK_EQ(rows.size(1), g);
    } else {
      torch::Tensor q = q_block.slice(0, 0, e - b);
      if (in.feat_norm) {
        NormalizeRowsInto(in.query.slice(0, b, e), q);
      } else {
        q.copy_(in.query.slice(0, b, e));
      }
      q_sq = SquaredNorms(q);
      rows = block.slice(0, 0, e - b);
      at::mm_out(rows, q, gallery.t());
    }
    const float* base = rows.data_ptr<float>();
    const float* gs = g_sq.defined() ? g_sq.data_ptr<float>() : nullptr;
    const float* qs = q_sq.defined() ? q_sq.data_ptr<float>() : nullptr;
    at::parallel_for(0, e - b, 1, [&](int64_t lo, int64_t hi) {
      Scratch scratch;
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t q = b + r;
        const auto it = by_pid.find(in.q_pids[q]);
        const std::vector<int64_t>& same = it == by_pid.end() ? none : it->second;
        const float* row = base + r * g;
        QueryRanking& out = results[q - begin];
        if (qs == nullptr) {
          out = RankRow([row](int64_t j) { return row[j]; }, g, same, in.g_cams, in.q_cams[q],
                        &scratch);
        } else {
          // Squared Euclidean distance as the reference's addmm: (|q|^2 + |g|^2) - 2 q.g.
          const float qn = qs[r];
          out = RankRow([row, gs, qn](int64_t j) { return (qn + gs[j]) - 2.0f * row[j]; }, g, same,
                        in.g_cams, in.q_cams[q], &scratch);
        }
      }
    });
  }
  return results;
}

namespace {

// Sums in query order: independent of the thread count and of the shards.
RankingSums Sum(const std::vector<QueryRanking>& results, int max_rank) {
  RankingSums sums;
  sums.cmc_hits.assign(max_rank, 0);
  for (const QueryRanking& r : results) {
    if (r.ap < 0) continue;  // no remaining match: skipped, as the reference does
    sums.ap_sum += r.ap;
    sums.valid += 1;
    for (int64_t k = r.first_hit; k < max_rank; ++k) sums.cmc_hits[k] += 1;
  }
  return sums;
}

}  // namespace

RankingSums RankQueries(const RankingInput& in, int64_t begin, int64_t end) {
  return Sum(RankEachQuery(in, begin, end), EffectiveMaxRank(in));
}

EvalResult EvaluateRanking(const RankingInput& in, dist::Communicator* comm) {
  const int64_t nq = static_cast<int64_t>(in.q_pids.size());
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  const dist::ShardRange shard = dist::InferenceShard(nq, rank, world);
  const int max_rank = EffectiveMaxRank(in);
  std::vector<QueryRanking> results = RankEachQuery(in, shard.begin, shard.end);
  if (comm != nullptr && world > 1) {
    // (n, 2) float64 [ap, first_hit] per query, gathered in rank (= query) order; exact.
    torch::Tensor mine = torch::empty({static_cast<int64_t>(results.size()), 2}, torch::kFloat64);
    auto m = mine.accessor<double, 2>();
    for (size_t i = 0; i < results.size(); ++i) {
      m[i][0] = results[i].ap;
      m[i][1] = static_cast<double>(results[i].first_hit);
    }
    torch::Tensor all = comm->AllGatherV(mine).contiguous();
    CHECK_EQ(all.size(0), nq);
    auto a = all.accessor<double, 2>();
    results.assign(nq, {});
    for (int64_t i = 0; i < nq; ++i) results[i] = {a[i][0], static_cast<int64_t>(a[i][1])};
  }
  const RankingSums sums = Sum(results, max_rank);
  EvalResult r;
  r.num_query = nq;
  r.num_gallery = static_cast<int64_t>(in.g_pids.size());
  r.num_valid_queries = sums.valid;
  if (r.num_valid_queries == 0) {
    LOG(WARNING) << "evaluation: no query has a match in the gallery (all skipped)";
    r.cmc.assign(max_rank, 0.0);
    return r;
  }
  const double valid = static_cast<double>(sums.valid);
  r.mAP = sums.ap_sum / valid;
  for (int k = 0; k < max_rank; ++k) r.cmc.push_back(static_cast<double>(sums.cmc_hits[k]) / valid);
  return r;
}

std::vector<int64_t> FirstValidQueries(const RankingInput& in, int64_t n) {
  const auto by_pid = IndexByPid(in.g_pids);
  std::vector<int64_t> out;
  for (int64_t q = 0;
       q < static_cast<int64_t>(in.q_pids.size()) && static_cast<int64_t>(out.size()) < n; ++q) {
    const auto it = by_pid.find(in.q_pids[q]);
    if (it == by_pid.end()) continue;
    for (int64_t j : it->second) {
      if (in.g_cams[j] != in.q_cams[q]) {
        out.push_back(q);
        break;
      }
    }
  }
  return out;
}

std::vector<TopMatches> RankTop(const RankingInput& in, const std::vector<int64_t>& queries,
                                int k) {
  torch::Tensor gallery, g_sq;
  if (!in.distance_rows) {
    gallery =
        in.feat_norm ? NormalizeRows(in.gallery) : in.gallery.to(torch::kFloat32).contiguous();
    g_sq = SquaredNorms(gallery);
  }
  const int64_t g = static_cast<int64_t>(in.g_pids.size());
  std::vector<TopMatches> out;
  for (int64_t q : queries) {
    torch::Tensor row;  // (G) distances
    if (in.distance_rows) {
      row = in.distance_rows(q, q + 1).reshape({g}).to(torch::kFloat32).contiguous();
    } else {
      torch::Tensor f = in.query.slice(0, q, q + 1).to(torch::kFloat32);
      if (in.feat_norm) f = NormalizeRows(f);
      const float qn = SquaredNorms(f).item<float>();
      row = ((qn + g_sq) - 2.0f * torch::matmul(gallery, f.reshape({-1}))).contiguous();
    }
    const float* d = row.data_ptr<float>();
    std::vector<Keyed> kept;
    for (int64_t j = 0; j < g; ++j) {
      if (in.g_pids[j] == in.q_pids[q] && in.g_cams[j] == in.q_cams[q]) continue;  // junk
      kept.push_back({d[j], j});
    }
    const size_t top = std::min<size_t>(kept.size(), std::max(0, k));
    std::partial_sort(kept.begin(), kept.begin() + top, kept.end());
    TopMatches t;
    t.query = q;
    for (size_t i = 0; i < top; ++i) {
      t.gallery.push_back(kept[i].j);
      t.distance.push_back(kept[i].d);
    }
    out.push_back(std::move(t));
  }
  return out;
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
