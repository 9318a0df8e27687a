// Sparse, chunked k-reciprocal re-ranking with the reference's fp16 rounding.
#include "trainer/eval/rerank.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <queue>
#include <sstream>
#include <string>

#include "trainer/distributed/shard.h"
#include "trainer/eval/evaluator.h"

namespace reid::trainer {
namespace {

using Half = c10::Half;

// Round to fp16 and back, as numpy stores a float16 result.
inline float H(float x) { return static_cast<float>(Half(x)); }

int64_t MemAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return -1;
}

// The reference's round(k1 / 2): numpy rounds halves to even.
int HalfK1(int k1) { return static_cast<int>(std::nearbyint(k1 / 2.0)); }

float Dot(const float* a, const float* b, int64_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

struct Keyed {
  float d;
  int32_t j;
  bool operator<(const Keyed& o) const { return d < o.d || (d == o.d && j < o.j); }
};

// The reference's original_dist: a row's distances divided by the row's largest. When that is
// not positive, every item is at distance 0 from item i up to rounding (all features identical):
// the reference's 0/0 is NaN there, and NaN distances rank arbitrarily (the evaluator counted
// every match as first: an mAP of 3). Such a row is all zeros instead, so its items tie and keep
// their index order, as every other tie does.
inline float Scaled(float d, float row_max) { return row_max > 0 ? d / row_max : 0.0f; }

}  // namespace

int64_t RerankMemoryBytes(int64_t q, int64_t g, int64_t d, const RerankOptions& o) {
  const int64_t n = q + g;
  const int64_t k = std::max<int64_t>(o.k1 + 1, o.k2);
  const int64_t v_row = std::min<int64_t>(n, (o.k1 + 1) * (HalfK1(o.k1) + 2));
  const int64_t qe_row = o.k2 > 1 ? std::min<int64_t>(n, o.k2 * v_row) : v_row;
  const int64_t entry = sizeof(int32_t) + sizeof(Half);
  const int64_t threads = at::get_num_threads();
  int64_t bytes = 2 * n * d * 4;                            // the caller's features and ours
  bytes += n * (8 + k * 4);                                 // norms, row maxima, neighbours
  bytes += std::min<int64_t>(o.chunk_rows, n) * n * 4 * 2;  // search block; ranking block
  bytes += n * v_row * entry + 2 * n * qe_row * entry;      // V, V_qe, inverted V_qe
  bytes += threads * n * 8;                                 // per-thread dense rows
  return bytes;
}

Status CheckRerankMemory(int64_t q, int64_t g, int64_t d, const RerankOptions& options) {
  const int64_t need = RerankMemoryBytes(q, g, d, options);
  const int64_t limit =
      options.memory_limit_mb > 0 ? options.memory_limit_mb << 20 : MemAvailableBytes();
  if (limit <= 0 || need <= limit) return Status::Ok();
  std::ostringstream msg;
  msg << "re-ranking " << q << " queries x " << g << " gallery items (k1 " << options.k1 << ", k2 "
      << options.k2 << ") may need up to " << (need >> 20) << " MiB, more than the "
      << (limit >> 20) << " MiB "
      << (options.memory_limit_mb > 0 ? "of eval.rerank_max_memory_mb" : "available now")
      << "; evaluate without re-ranking, or lower eval.rerank_k1 / eval.rerank_k2";
  return Status::InvalidArgument(msg.str());
}

std::unique_ptr<Reranker> Reranker::Build(const torch::Tensor& query, const torch::Tensor& gallery,
                                          bool normalize, const RerankOptions& options,
                                          dist::Communicator* comm) {
  CHECK_EQ(query.dim(), 2);
  CHECK_EQ(gallery.dim(), 2);
  CHECK_EQ(query.size(1), gallery.size(1));
  std::unique_ptr<Reranker> r(new Reranker());
  r->options_ = options;
  r->num_query_ = query.size(0);
  r->all_ = HugePageEmpty({query.size(0) + gallery.size(0), query.size(1)});  // (N, D)
  for (auto [part, rows] : {std::pair{r->all_.slice(0, 0, r->num_query_), query},
                            {r->all_.slice(0, r->num_query_), gallery}}) {
    if (normalize) {
      NormalizeRowsInto(rows, part);
    } else {
      part.copy_(rows);
    }
  }
  r->num_all_ = r->all_.size(0);
  r->width_ = r->all_.size(1);
  r->k_ = std::min<int64_t>(r->num_all_, std::max(options.k1 + 1, options.k2));
  const torch::Tensor sq = SquaredNorms(r->all_);
  r->sq_.assign(sq.data_ptr<float>(), sq.data_ptr<float>() + r->num_all_);
  r->SearchNeighbours(comm);
  r->BuildV();
  if (options.k2 != 1) r->ExpandQueries();
  r->InvertGallery();
  return r;
}

// initial_rank[:, :k] and the row maxima: the (N, N) distance a block of rows at a time, this
// rank's shard of the rows, then gathered.
void Reranker::SearchNeighbours(dist::Communicator* comm) {
  const int64_t n = num_all_, k = k_;
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  const dist::ShardRange shard = dist::InferenceShard(n, rank, world);
  const int64_t rows = shard.end - shard.begin;
  torch::Tensor knn = torch::empty({rows, k}, torch::kInt32);
  torch::Tensor maxima = torch::empty({rows}, torch::kFloat32);
  int32_t* knn_out = knn.data_ptr<int32_t>();
  float* max_out = maxima.data_ptr<float>();
  const int64_t chunk = std::max<int64_t>(1, options_.chunk_rows);
  torch::Tensor block = HugePageEmpty({std::max<int64_t>(1, std::min(chunk, rows)), n});
  for (int64_t b = shard.begin; b < shard.end; b += chunk) {
    const int64_t e = std::min(shard.end, b + chunk);
    torch::Tensor dots = block.slice(0, 0, e - b);
    at::mm_out(dots, all_.slice(0, b, e), all_.t());
    const float* base = dots.data_ptr<float>();
    at::parallel_for(0, e - b, 1, [&](int64_t lo, int64_t hi) {
      std::vector<Keyed> heap;
      for (int64_t r = lo; r < hi; ++r) {
        const float* dot = base + r * n;
        const float si = sq_[b + r];
        float row_max = -INFINITY;
        heap.clear();
        for (int64_t j = 0; j < n; ++j) {
          const Keyed x{(si + sq_[j]) - 2.0f * dot[j], static_cast<int32_t>(j)};
          row_max = std::max(row_max, x.d);
          if (static_cast<int64_t>(heap.size()) < k) {
            heap.push_back(x);
            std::push_heap(heap.begin(), heap.end());
          } else if (x < heap.front()) {
            std::pop_heap(heap.begin(), heap.end());
            heap.back() = x;
            std::push_heap(heap.begin(), heap.end());
          }
        }
        std::sort_heap(heap.begin(), heap.end());
        const int64_t out = b - shard.begin + r;
        for (int64_t t = 0; t < k; ++t) knn_out[out * k + t] = heap[t].j;
        if (!(row_max > 0)) {  // a row of ties once scaled (see Scaled): index order
          for (int64_t t = 0; t < k; ++t) knn_out[out * k + t] = static_cast<int32_t>(t);
        }
        max_out[out] = row_max;
      }
    });
  }
  if (comm != nullptr && world > 1) {
    knn = comm->AllGatherV(knn).to(torch::kInt32).contiguous();
    maxima = comm->AllGatherV(maxima).to(torch::kFloat32).contiguous();
  }
  CHECK_EQ(knn.size(0), n);
  knn_.assign(knn.data_ptr<int32_t>(), knn.data_ptr<int32_t>() + n * k);
  row_max_.assign(maxima.data_ptr<float>(), maxima.data_ptr<float>() + n);
}

float Reranker::Original(int64_t i, int64_t j) const {
  const float* f = all_.data_ptr<float>();
  const float d = (sq_[i] + sq_[j]) - 2.0f * Dot(f + i * width_, f + j * width_, width_);
  return Scaled(d, row_max_[i]);
}

// V: row i holds exp(-original) over i's k-reciprocal set expanded by its candidates' sets
// (the 2/3 overlap rule), normalised to sum 1, in fp16.
void Reranker::BuildV() {
  const int64_t n = num_all_, k = k_;
  const int64_t k1 = std::min<int64_t>(options_.k1 + 1, k);
  const int64_t half = std::min<int64_t>(HalfK1(options_.k1) + 1, k);
  // Is i among the first `m` neighbours of c?
  auto among = [&](int64_t c, int64_t i, int64_t m) {
    const int32_t* row = knn_.data() + c * k;
    return std::find(row, row + m, static_cast<int32_t>(i)) != row + m;
  };
  auto reciprocal = [&](int64_t i, int64_t m) {
    std::vector<int32_t> out;
    for (int64_t t = 0; t < m; ++t) {
      const int32_t c = knn_[i * k + t];
      if (among(c, i, m)) out.push_back(c);
    }
    return out;
  };
  std::vector<std::vector<int32_t>> cols(n);
  std::vector<std::vector<Half>> vals(n);
  at::parallel_for(0, n, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const std::vector<int32_t> kr = reciprocal(i, k1);
      std::vector<int32_t> sorted_kr(kr);
      std::sort(sorted_kr.begin(), sorted_kr.end());
      std::vector<int32_t> expansion(kr);
      for (int32_t c : kr) {
        const std::vector<int32_t> ckr = reciprocal(c, half);
        int64_t common = 0;
        for (int32_t x : ckr) common += std::binary_search(sorted_kr.begin(), sorted_kr.end(), x);
        if (static_cast<double>(common) > 2.0 / 3.0 * static_cast<double>(ckr.size())) {
          expansion.insert(expansion.end(), ckr.begin(), ckr.end());
        }
      }
      std::sort(expansion.begin(), expansion.end());
      expansion.erase(std::unique(expansion.begin(), expansion.end()), expansion.end());
      std::vector<float> w(expansion.size());
      float sum = 0;
      for (size_t t = 0; t < w.size(); ++t) {
        w[t] = std::exp(-Original(i, expansion[t]));
        sum += w[t];
      }
      for (size_t t = 0; t < w.size(); ++t) {
        const Half v(w[t] / sum);
        if (static_cast<float>(v) == 0.0f) continue;
        cols[i].push_back(expansion[t]);
        vals[i].push_back(v);
      }
    }
  });
  v_.ptr.assign(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) v_.ptr[i + 1] = v_.ptr[i] + cols[i].size();
  v_.col.resize(v_.ptr[n]);
  v_.val.resize(v_.ptr[n]);
  for (int64_t i = 0; i < n; ++i) {
    std::copy(cols[i].begin(), cols[i].end(), v_.col.begin() + v_.ptr[i]);
    std::copy(vals[i].begin(), vals[i].end(), v_.val.begin() + v_.ptr[i]);
  }
}

// V_qe: row i is the mean of V over i's k2 nearest rows (float32 sums, fp16 result, as numpy's
// mean of a float16 array).
void Reranker::ExpandQueries() {
  const int64_t n = num_all_, k = k_;
  const int64_t k2 = std::min<int64_t>(options_.k2, k);
  std::vector<std::vector<int32_t>> cols(n);
  std::vector<std::vector<Half>> vals(n);
  at::parallel_for(0, n, 64, [&](int64_t lo, int64_t hi) {
    std::vector<float> acc(n, 0.0f);
    std::vector<int32_t> touched;
    for (int64_t i = lo; i < hi; ++i) {
      touched.clear();
      for (int64_t t = 0; t < k2; ++t) {
        const int64_t row = knn_[i * k + t];
        for (int64_t p = v_.ptr[row]; p < v_.ptr[row + 1]; ++p) {
          const int32_t c = v_.col[p];
          if (acc[c] == 0.0f) touched.push_back(c);
          acc[c] += static_cast<float>(v_.val[p]);
        }
      }
      std::sort(touched.begin(), touched.end());
      touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
      for (int32_t c : touched) {
        const Half v(acc[c] / static_cast<float>(k2));
        acc[c] = 0.0f;
        if (static_cast<float>(v) == 0.0f) continue;
        cols[i].push_back(c);
        vals[i].push_back(v);
      }
    }
  });
  Sparse qe;
  qe.ptr.assign(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) qe.ptr[i + 1] = qe.ptr[i] + cols[i].size();
  qe.col.resize(qe.ptr[n]);
  qe.val.resize(qe.ptr[n]);
  for (int64_t i = 0; i < n; ++i) {
    std::copy(cols[i].begin(), cols[i].end(), qe.col.begin() + qe.ptr[i]);
    std::copy(vals[i].begin(), vals[i].end(), qe.val.begin() + qe.ptr[i]);
    std::vector<int32_t>().swap(cols[i]);
    std::vector<Half>().swap(vals[i]);
  }
  v_ = std::move(qe);
}

// The reference's invIndex restricted to the gallery rows (the only columns the final distance
// keeps): per column of V, the gallery rows where it is non-zero, ascending, with their values.
void Reranker::InvertGallery() {
  const int64_t n = num_all_, q = num_query_;
  inv_.ptr.assign(n + 1, 0);
  for (int64_t row = q; row < n; ++row) {
    for (int64_t p = v_.ptr[row]; p < v_.ptr[row + 1]; ++p) ++inv_.ptr[v_.col[p] + 1];
  }
  for (int64_t c = 0; c < n; ++c) inv_.ptr[c + 1] += inv_.ptr[c];
  inv_.col.resize(inv_.ptr[n]);
  inv_.val.resize(inv_.ptr[n]);
  std::vector<int64_t> fill(inv_.ptr.begin(), inv_.ptr.end() - 1);
  for (int64_t row = q; row < n; ++row) {
    for (int64_t p = v_.ptr[row]; p < v_.ptr[row + 1]; ++p) {
      const int64_t at = fill[v_.col[p]]++;
      inv_.col[at] = static_cast<int32_t>(row - q);
      inv_.val[at] = v_.val[p];
    }
  }
}

torch::Tensor Reranker::DistanceRows(int64_t begin, int64_t end) const {
  const int64_t q = num_query_, g = num_all_ - num_query_;
  CHECK(begin >= 0 && begin <= end && end <= q);
  if (!dots_block_.defined() || dots_block_.size(0) < end - begin) {
    dots_block_ = HugePageEmpty({end - begin, g});
    out_block_ = HugePageEmpty({end - begin, g});
  }
  torch::Tensor dots = dots_block_.slice(0, 0, end - begin);
  at::mm_out(dots, all_.slice(0, begin, end), all_.slice(0, q, num_all_).t());
  torch::Tensor out = out_block_.slice(0, 0, end - begin);
  const float* dot = dots.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const float lambda = options_.lambda;
  // numpy: jaccard_dist (fp16) * (1 - lambda) stays fp16, the scalar rounded to fp16 first.
  const float jaccard_weight = H(static_cast<float>(1.0 - static_cast<double>(lambda)));
  const float untouched = H(1.0f * jaccard_weight);  // no shared neighbour: jaccard 1
  at::parallel_for(0, end - begin, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> min_sum(g, 0.0f);  // the reference's temp_min, fp16 values
    std::vector<char> seen(g, 0);
    std::vector<int32_t> touched;
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t i = begin + r;
      touched.clear();
      for (int64_t p = v_.ptr[i]; p < v_.ptr[i + 1]; ++p) {
        const float vi = static_cast<float>(v_.val[p]);
        const int32_t c = v_.col[p];
        for (int64_t t = inv_.ptr[c]; t < inv_.ptr[c + 1]; ++t) {
          const int32_t j = inv_.col[t];
          if (!seen[j]) {
            seen[j] = 1;
            touched.push_back(j);
          }
          min_sum[j] = H(min_sum[j] + std::min(vi, static_cast<float>(inv_.val[t])));
        }
      }
      float* row = o + r * g;
      const float* d = dot + r * g;
      const float si = sq_[i], m = row_max_[i];
      for (int64_t j = 0; j < g; ++j) {
        const float original = Scaled((si + sq_[q + j]) - 2.0f * d[j], m);
        row[j] = untouched + original * lambda;
      }
      for (int32_t j : touched) {
        const float t = min_sum[j];
        const float jaccard = H(1.0f - H(t / H(2.0f - t)));
        const float original = Scaled((si + sq_[q + j]) - 2.0f * d[j], m);
        row[j] = H(jaccard * jaccard_weight) + original * lambda;
        min_sum[j] = 0.0f;
        seen[j] = 0;
      }
    }
  });
  return out;
}

}  // namespace reid::trainer
