// Sparse, chunked k-reciprocal re-ranking with the reference's fp16 rounding.
#include "trainer/eval/rerank.h"

#include <ATen/Parallel.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
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

// "No Jaccard term here": a NaN whose payload no arithmetic makes (an invalid operation gives the
// default NaN, a NaN operand passes on its own payload), compared by its bits.
constexpr uint32_t kNoTermBits = 0x7fc0deadu;
inline float NoTerm() {
  float f;
  std::memcpy(&f, &kNoTermBits, sizeof(f));
  return f;
}
inline bool IsNoTerm(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits == kNoTermBits;
}

}  // namespace

int64_t RerankMemoryBytes(int64_t q, int64_t g, int64_t d, const RerankOptions& o) {
  const int64_t n = q + g;
  const int64_t k = std::max<int64_t>(o.k1 + 1, o.k2);
  const int64_t v_row = std::min<int64_t>(n, (o.k1 + 1) * (HalfK1(o.k1) + 2));
  const int64_t qe_row = o.k2 > 1 ? std::min<int64_t>(n, o.k2 * v_row) : v_row;
  const int64_t entry = sizeof(int32_t) + sizeof(Half);
  const int64_t threads = at::get_num_threads();
  const int64_t tile = std::min<int64_t>(n, o.search_tile > 0 ? o.search_tile : kSearchTile);
  const int64_t rows = std::min<int64_t>(o.chunk_rows, q);
  int64_t bytes = 2 * (n + tile) * d * 4;                 // the caller's features and ours
  bytes += n * (12 + k * 4);                               // norms, row maxima, neighbours
  bytes += threads * (n * (k * 8 + 12) + tile * tile * 4);  // the search's lists and tiles
  bytes += 2 * n * (k * 8 + 4);                            // the lists merged (and gathered)
  bytes += n * v_row * entry + 2 * n * qe_row * entry;     // V, V_qe, inverted V_qe
  bytes += rows * g * 4 * 2;                               // a block of distance rows; ranking's
  bytes += threads * (rows * kDistanceTile * 4 + g * 9);   // per thread: products, dense rows
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
  const int64_t n = query.size(0) + gallery.size(0);
  const int64_t side = options.search_tile > 0 ? options.search_tile : kSearchTile;
  const int64_t parts = std::max<int64_t>(1, (n + side - 1) / side);
  r->tile_ = std::max<int64_t>(1, (n + parts - 1) / parts);  // near-equal parts of N
  const int64_t padded = (n + r->tile_ - 1) / r->tile_ * r->tile_;
  r->all_ = HugePageEmpty({std::max<int64_t>(padded, 1), query.size(1)});  // (N, D), zero padding
  if (padded > n) r->all_.slice(0, n).zero_();
  for (auto [part, rows] : {std::pair{r->all_.slice(0, 0, r->num_query_), query},
                            {r->all_.slice(0, r->num_query_, n), gallery}}) {
    if (normalize) {
      NormalizeRowsInto(rows, part);
    } else {
      part.copy_(rows);
    }
  }
  r->num_all_ = n;
  r->width_ = r->all_.size(1);
  r->k_ = std::min<int64_t>(r->num_all_, std::max(options.k1 + 1, options.k2));
  const torch::Tensor sq = SquaredNorms(r->all_);  // padding rows: 0
  r->sq_.assign(sq.data_ptr<float>(), sq.data_ptr<float>() + sq.size(0));
  r->SearchNeighbours(comm);
  r->BuildV();
  if (options.k2 != 1) r->ExpandQueries();
  r->InvertGallery();
  return r;
}

namespace {

// Each item's k best (distance, index) so far, as a max-heap, and its largest distance: one per
// thread of the neighbour search, merged at the end (both are independent of the order of the
// candidates, so of the threads, the ranks and the tiles).
struct TopK {
  int64_t k = 0;
  std::vector<Keyed> heap;    // (N, k)
  std::vector<int32_t> size;  // (N)
  std::vector<float> worst;   // (N) the heap's largest distance once full; +inf before
  std::vector<float> max;     // (N) largest distance seen (NaN ignored)

  TopK(int64_t n, int64_t k_)
      : k(k_), heap(n * k_), size(n, 0), worst(n, INFINITY), max(n, -INFINITY) {}

  void Offer(int64_t i, float d, int32_t j) {
    const Keyed x{std::isnan(d) ? INFINITY : d, j};  // NaN ranks last
    Keyed* h = heap.data() + i * k;
    int32_t& n = size[i];
    if (n < k) {
      h[n++] = x;
      std::push_heap(h, h + n);
      if (n == k) worst[i] = h[0].d;
    } else if (x < h[0]) {
      std::pop_heap(h, h + k);
      h[k - 1] = x;
      std::push_heap(h, h + k);
      worst[i] = h[0].d;
    }
  }
};

}  // namespace

// initial_rank[:, :k] and the row maxima from the (N, N) distance made in square tiles of
// kSearchTile items: the distance is symmetric (the product gives d(i, j) and d(j, i) the same
// bits), so only tiles on and above the diagonal are made, each on one thread (single-threaded
// product) and offered at once to the rows of both its items' blocks; half the (N, N) product.
// Over ranks the tiles are dealt round-robin and the per-item lists merged after a gather.
void Reranker::SearchNeighbours(dist::Communicator* comm) {
  const int64_t n = num_all_, k = k_, b = tile_, blocks = (n + b - 1) / b;
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  std::vector<std::pair<int64_t, int64_t>> tiles;  // this rank's (I, J), J >= I
  for (int64_t t = 0, bi = 0; bi < blocks; ++bi) {
    for (int64_t bj = bi; bj < blocks; ++bj, ++t) {
      if (t % world == rank) tiles.emplace_back(bi, bj);
    }
  }
  const int threads = std::max(1, at::get_num_threads());
  std::vector<std::unique_ptr<TopK>> best(threads);
  std::vector<torch::Tensor> own(threads);
  const float* sq = sq_.data();
  {
    ScopedBlasThreads one_blas_thread(1);  // each tile's product on the thread that reads it
    ForEachDynamic(static_cast<int64_t>(tiles.size()), [&](int64_t task, int thread) {
      if (!best[thread]) {
        best[thread] = std::make_unique<TopK>(n, k);
        own[thread] = HugePageEmpty({b, b});
      }
      TopK& top = *best[thread];
      const auto [bi, bj] = tiles[task];
      at::mm_out(own[thread], all_.slice(0, bi * b, (bi + 1) * b),
                 all_.slice(0, bj * b, (bj + 1) * b).t());
      const float* dots = own[thread].data_ptr<float>();
      const bool diagonal = bi == bj;  // then each pair is met twice: rows only
      const int64_t rows = std::min(b, n - bi * b), cols = std::min(b, n - bj * b);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = bi * b + r;
        const float* dot = dots + r * b;
        const float si = sq[i];
        const auto offer = [&](int64_t c, float d) {
          const int64_t j = bj * b + c;
          top.max[i] = std::max(top.max[i], d);
          top.Offer(i, d, static_cast<int32_t>(j));
          if (!diagonal) {
            top.max[j] = std::max(top.max[j], d);
            top.Offer(j, d, static_cast<int32_t>(i));
          }
        };
        int64_t c = 0;
#if defined(__SSE2__)
        // Four at a time: the row's and the columns' maxima, and the candidates not above a
        // list's current k-th distance (NaN included; Offer decides).
        const __m128 si4 = _mm_set1_ps(si);
        __m128 row_max = _mm_set1_ps(top.max[i]);
        float* col_max = top.max.data() + bj * b;
        const float* col_worst = top.worst.data() + bj * b;
        for (; c + 4 <= cols; c += 4) {
          const __m128 dt = _mm_loadu_ps(dot + c);
          const __m128 d4 =
              _mm_sub_ps(_mm_add_ps(si4, _mm_loadu_ps(sq + bj * b + c)), _mm_add_ps(dt, dt));
          row_max = _mm_max_ps(d4, row_max);  // a NaN distance keeps the maximum
          int mask = _mm_movemask_ps(_mm_cmpngt_ps(d4, _mm_set1_ps(top.worst[i])));
          if (!diagonal) {
            _mm_storeu_ps(col_max + c, _mm_max_ps(d4, _mm_loadu_ps(col_max + c)));
            mask |= _mm_movemask_ps(_mm_cmpngt_ps(d4, _mm_loadu_ps(col_worst + c)));
          }
          if (mask == 0) continue;
          alignas(16) float d[4];
          _mm_store_ps(d, d4);
          for (; mask != 0; mask &= mask - 1) {
            const int e = __builtin_ctz(mask);
            const int64_t j = bj * b + c + e;
            top.Offer(i, d[e], static_cast<int32_t>(j));
            if (!diagonal) top.Offer(j, d[e], static_cast<int32_t>(i));
          }
        }
        alignas(16) float m[4];
        _mm_store_ps(m, row_max);
        top.max[i] = std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
#endif
        for (; c < cols; ++c) offer(c, (si + sq[bj * b + c]) - 2.0f * dot[c]);
      }
    });
  }
  // This rank's lists: per item its threads' candidates, best k, as (distance, index) pairs.
  torch::Tensor dist_part = torch::full({n, k}, INFINITY, torch::kFloat32);
  torch::Tensor index_part =
      torch::full({n, k}, std::numeric_limits<int32_t>::max(), torch::kInt32);
  torch::Tensor max_part = torch::full({n}, -INFINITY, torch::kFloat32);
  const auto merge = [k](std::vector<Keyed>* all, float* d_out, int32_t* j_out) {
    const int64_t keep = std::min<int64_t>(k, static_cast<int64_t>(all->size()));
    std::partial_sort(all->begin(), all->begin() + keep, all->end());
    for (int64_t t = 0; t < keep; ++t) {
      d_out[t] = (*all)[t].d;
      j_out[t] = (*all)[t].j;
    }
  };
  {
    float* d_out = dist_part.data_ptr<float>();
    int32_t* j_out = index_part.data_ptr<int32_t>();
    float* m_out = max_part.data_ptr<float>();
    at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
      std::vector<Keyed> all;
      for (int64_t i = lo; i < hi; ++i) {
        all.clear();
        for (const auto& top : best) {
          if (!top) continue;
          const auto row = top->heap.begin() + i * k;
          all.insert(all.end(), row, row + top->size[i]);
          m_out[i] = std::max(m_out[i], top->max[i]);
        }
        merge(&all, d_out + i * k, j_out + i * k);
      }
    });
  }
  best.clear();
  own.clear();
  if (comm != nullptr && world > 1) {  // every rank's lists, merged the same way on each
    const torch::Tensor d_all = comm->AllGatherV(dist_part).to(torch::kFloat32).contiguous();
    const torch::Tensor j_all = comm->AllGatherV(index_part).to(torch::kInt32).contiguous();
    const torch::Tensor m_all = comm->AllGatherV(max_part).to(torch::kFloat32).contiguous();
    CHECK_EQ(d_all.size(0), world * n);
    const float* d_in = d_all.data_ptr<float>();
    const int32_t* j_in = j_all.data_ptr<int32_t>();
    const float* m_in = m_all.data_ptr<float>();
    float* d_out = dist_part.data_ptr<float>();
    int32_t* j_out = index_part.data_ptr<int32_t>();
    float* m_out = max_part.data_ptr<float>();
    at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
      std::vector<Keyed> all;
      for (int64_t i = lo; i < hi; ++i) {
        all.clear();
        for (int w = 0; w < world; ++w) {
          const int64_t row = w * n + i;
          for (int64_t t = 0; t < k; ++t) all.push_back({d_in[row * k + t], j_in[row * k + t]});
          m_out[i] = std::max(m_out[i], m_in[w * n + i]);
        }
        merge(&all, d_out + i * k, j_out + i * k);
      }
    });
  }
  const int32_t* j_out = index_part.data_ptr<int32_t>();
  knn_.assign(j_out, j_out + n * k);
  row_max_.assign(max_part.data_ptr<float>(), max_part.data_ptr<float>() + n);
  for (int64_t i = 0; i < n; ++i) {
    if (!(row_max_[i] > 0)) {  // a row of ties once scaled (see Scaled): index order
      for (int64_t t = 0; t < k; ++t) knn_[i * k + t] = static_cast<int32_t>(t);
    }
  }
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

// Rows [begin, end) of the final distance: per row, the Jaccard terms of the items sharing a
// neighbour with it (sparse, from V_qe and its inverted index) written into the row, then the
// gallery a tile of kDistanceTile items at a time on each thread: the tile's products with the
// rows (single-threaded product) give the original distance, added to the rows while in cache.
torch::Tensor Reranker::DistanceRows(int64_t begin, int64_t end) const {
  const int64_t q = num_query_, g = num_all_ - num_query_, rows = end - begin;
  CHECK(begin >= 0 && begin <= end && end <= q);
  if (!out_block_.defined() || out_block_.size(0) < rows) out_block_ = HugePageEmpty({rows, g});
  torch::Tensor out = out_block_.slice(0, 0, rows);
  if (rows == 0 || g == 0) return out;
  const float lambda = options_.lambda;
  // numpy: jaccard_dist (fp16) * (1 - lambda) stays fp16, the scalar rounded to fp16 first.
  const float jaccard_weight = H(static_cast<float>(1.0 - static_cast<double>(lambda)));
  const float untouched = H(1.0f * jaccard_weight);  // no shared neighbour: jaccard 1
  // Per row, into the row itself: each gallery item's fp16 Jaccard term where it shares a
  // neighbour with the row's item, kNoTerm elsewhere (a term may be any float: fp16 sums of the
  // overlap can pass 1 and make it negative).
  float* o = out.data_ptr<float>();
  const float no_term = NoTerm();
  at::parallel_for(0, rows, 1, [&](int64_t lo, int64_t hi) {
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
      std::fill(row, row + g, no_term);
      for (int32_t j : touched) {
        const float t = min_sum[j];
        row[j] = H(H(1.0f - H(t / H(2.0f - t))) * jaccard_weight);
        min_sum[j] = 0.0f;
        seen[j] = 0;
      }
    }
  });
  const int64_t parts = std::max<int64_t>(1, (g + kDistanceTile - 1) / kDistanceTile);
  const int64_t w = (g + parts - 1) / parts, tiles = (g + w - 1) / w;
  const int threads = std::max(1, at::get_num_threads());
  std::vector<torch::Tensor>& own = dot_tiles_;  // per thread, reused
  if (static_cast<int>(own.size()) < threads) own.resize(threads);
  const torch::Tensor query_rows = all_.slice(0, begin, end);
  ScopedBlasThreads one_blas_thread(1);  // each tile's product on the thread that reads it
  ForEachDynamic(tiles, [&](int64_t tile, int thread) {
    const int64_t c0 = tile * w, c1 = std::min(g, c0 + w), cols = c1 - c0;
    if (!own[thread].defined() || own[thread].numel() < rows * w) {
      own[thread] = HugePageEmpty({rows, w});
    }
    torch::Tensor dots = own[thread].view({-1}).narrow(0, 0, rows * cols).view({rows, cols});
    at::mm_out(dots, query_rows, all_.slice(0, q + c0, q + c1).t());
    const float* dot = dots.data_ptr<float>();
    const float* sg = sq_.data() + q + c0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = begin + r;
      const float si = sq_[i], m = row_max_[i];
      const float* d = dot + r * cols;
      float* row = o + r * g + c0;
      for (int64_t c = 0; c < cols; ++c) {
        const float original = Scaled((si + sg[c]) - 2.0f * d[c], m);
        row[c] = (IsNoTerm(row[c]) ? untouched : row[c]) + original * lambda;
      }
    }
  });
  return out;
}

}  // namespace reid::trainer
