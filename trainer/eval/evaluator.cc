// Exact CMC / mAP (CLIP-ReID's eval_func), chunked over queries and sharded over ranks.
#include "trainer/eval/evaluator.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "trainer/distributed/shard.h"


namespace reid::trainer {
namespace {

const float kInf = std::numeric_limits<float>::infinity();

// The protocol's key of a distance: a NaN distance ranks last, as numpy's argsort puts it (ties
// among them by index): compared as NaN it would be neither before nor after anything, every
// match would count as ranked first, and AP would exceed 1.
inline float Key(float d) { return std::isnan(d) ? kInf : d; }

// A query's matches, sorted by (key, gallery index): keys t padded with NaN to a multiple of 4
// (a NaN is neither below nor equal to anything), gallery indices m.
struct Thresholds {
  const float* t;
  const int64_t* m;
  int64_t h;
};

// How many of the matches rank before the item (key x, gallery index j): those of smaller key,
// and of the equal ones (adjacent, after them: t ascends) those of smaller gallery index.
inline int64_t MatchesBefore(float x, int64_t j, const Thresholds& th) {
  int64_t before = 0;
#if defined(__SSE2__)
  const __m128 x4 = _mm_set1_ps(x);
  __m128i lt = _mm_setzero_si128();
  for (int64_t i = 0; i < th.h; i += 4) {  // the NaN padding is below nothing
    lt = _mm_sub_epi32(lt, _mm_castps_si128(_mm_cmplt_ps(_mm_loadu_ps(th.t + i), x4)));
  }
  lt = _mm_add_epi32(lt, _mm_shuffle_epi32(lt, 0x4E));
  lt = _mm_add_epi32(lt, _mm_shuffle_epi32(lt, 0xB1));
  before = _mm_cvtsi128_si32(lt);
#else
  for (int64_t i = 0; i < th.h; ++i) before += th.t[i] < x;
#endif
  while (before < th.h && th.t[before] == x && th.m[before] < j) ++before;
  return before;
}

// counts[c] += 1 for each item at position pos in [a, b) not ranked after the last match, c =
// MatchesBefore; `dist(pos)` is its distance and `dist4(pos)` those of pos..pos + 3, `index(pos)`
// its gallery index. Items after the last match are passed over four at a time.
template <typename Dist, typename Dist4, typename Index>
void CountSpan(int64_t a, int64_t b, const Dist& dist, const Dist4& dist4, const Index& index,
               const Thresholds& th, int64_t* counts) {
  const float tmax = th.t[th.h - 1];
  const auto count = [&](int64_t pos) {
    const float x = Key(dist(pos));
    if (x <= tmax) ++counts[MatchesBefore(x, index(pos), th)];
  };
  int64_t pos = a;
#if defined(__SSE2__)
  const __m128 tmax4 = _mm_set1_ps(tmax);
  for (; pos + 4 <= b; pos += 4) {  // not above tmax: NaN included (Key decides)
    for (int mask = _mm_movemask_ps(_mm_cmpngt_ps(dist4(pos), tmax4)); mask != 0;
         mask &= mask - 1) {
      count(pos + __builtin_ctz(mask));
    }
  }
#else
  (void)dist4;
#endif
  for (; pos < b; ++pos) count(pos);
}

// A gallery item keyed for ranking: ascending distance, ties by gallery index.
struct Keyed {
  float d;
  int64_t j;
  bool operator<(const Keyed& o) const { return d < o.d || (d == o.d && j < o.j); }
};

// Sorts a query's matches into t/m (t padded with NaN).
Thresholds SortMatches(std::vector<Keyed>* matches, std::vector<float>* t,
                       std::vector<int64_t>* m) {
  std::sort(matches->begin(), matches->end());
  const int64_t h = static_cast<int64_t>(matches->size());
  t->assign((h + 3) / 4 * 4, std::numeric_limits<float>::quiet_NaN());
  m->resize(h);
  for (int64_t i = 0; i < h; ++i) {
    (*t)[i] = (*matches)[i].d;
    (*m)[i] = (*matches)[i].j;
  }
  return {t->data(), m->data(), h};
}

// Per-thread buffers of RankRow.
struct Scratch {
  std::vector<Keyed> matches, junk;
  std::vector<float> t;
  std::vector<int64_t> m, counts;
};

// The reference's eval_func for one query, given its distances to the whole gallery, without
// sorting the gallery: only the positions of its matches matter. One pass counts, for each item
// not ranked after the last match, how many matches rank before it (four items at a time for the
// rest); a match's position among the kept items follows, less the query's junk.
QueryRanking RankRow(const float* row, int64_t g, const std::vector<int64_t>& same_pid,
                     const std::vector<int64_t>& g_cams, int64_t cam, Scratch* s) {
  QueryRanking r;
  s->matches.clear();
  s->junk.clear();
  for (int64_t j : same_pid) (g_cams[j] == cam ? s->junk : s->matches).push_back({Key(row[j]), j});
  const int64_t h = static_cast<int64_t>(s->matches.size());
  if (h == 0) return r;  // no remaining match: skipped, as the reference does
  const Thresholds th = SortMatches(&s->matches, &s->t, &s->m);
  s->counts.assign(h + 1, 0);
  int64_t* counts = s->counts.data();
  CountSpan(
      0, g, [row](int64_t j) { return row[j]; },
      [row](int64_t j) {
#if defined(__SSE2__)
        return _mm_loadu_ps(row + j);
#else
        return j;
#endif
      },
      [](int64_t j) { return j; }, th, counts);
  // Every item was counted, the query's own among them: match i at counts[i], each junk item at
  // its own place; only other identities' items are to be counted.
  for (int64_t i = 0; i < h; ++i) --counts[i];
  for (const Keyed& k : s->junk) {
    if (k.d <= th.t[h - 1]) --counts[MatchesBefore(k.d, k.j, th)];
  }
  int64_t others = 0;
  double precision_sum = 0;
  for (int64_t i = 0; i < h; ++i) {
    others += counts[i];
    const int64_t position = i + others;  // among the kept items, from 0
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

namespace {

// OpenBLAS' thread count, looked up at run time: LibTorch reaches BLAS through libblas.so.3, which
// may be another implementation (then both stay null and the scope does nothing).
struct BlasThreadControl {
  void (*set)(int) = nullptr;
  int (*get)() = nullptr;
  // Ends OpenBLAS' worker threads; its next multi-threaded call starts them again.
  int (*end_workers)() = nullptr;
};

const BlasThreadControl& BlasControl() {
  static const BlasThreadControl control = [] {
    BlasThreadControl c;
    c.set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    c.get = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    c.end_workers = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "blas_thread_shutdown_"));
    if (c.set == nullptr || c.get == nullptr) c = BlasThreadControl();
    return c;
  }();
  return control;
}

}  // namespace

ScopedBlasThreads::ScopedBlasThreads(int threads) {
  const BlasThreadControl& c = BlasControl();
  if (c.set == nullptr) return;
  const int now = c.get();
  if (now == threads) return;
  saved_ = now;
  c.set(threads);
  // After its last call, each OpenBLAS worker spins (sched_yield) for about 2^28 cycles before it
  // sleeps: a tenth of a second of a core that our own threads, one per core, need. Measured
  // after a 2-thread product on 2 cores: up to 0.6 s of kernel time and +0.05-0.4 s on a 0.7 s
  // evaluation. Going to one thread, no worker is needed until the count is raised again.
  if (threads == 1 && c.end_workers != nullptr) c.end_workers();
}

ScopedBlasThreads::~ScopedBlasThreads() {
  if (saved_ > 0) BlasControl().set(saved_);
}

void ForEachDynamic(int64_t n, const std::function<void(int64_t, int)>& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t threads = std::min<int64_t>(n, std::max(1, at::get_num_threads()));
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    const int thread = at::get_thread_num();
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, thread);
  });
}

namespace {

// Freed HugePageEmpty blocks by size, at most kKeptHugePageBytes in all. Evaluation asks for the
// same few sizes each time (tiles, operands, blocks' buffers), so training's periodic evaluations
// and a benchmark's repeats touch memory that is already mapped.
class KeptBlocks {
 public:
  static KeptBlocks& Get() {
    static KeptBlocks* const kept = new KeptBlocks();  // never destroyed: freed tensors may outlive
    return *kept;
  }

  // A kept block of at least `bytes` and at most twice that, or null.
  void* Take(size_t bytes, size_t* size) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = blocks_.lower_bound(bytes);
    if (it == blocks_.end() || it->first > 2 * bytes) return nullptr;
    *size = it->first;
    void* p = it->second;
    kept_ -= it->first;
    blocks_.erase(it);
    return p;
  }

  void Give(void* p, size_t size) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (kept_ + size <= kKeptHugePageBytes) {
        blocks_.emplace(size, p);
        kept_ += size;
        return;
      }
    }
    std::free(p);
  }

  size_t kept() {
    std::lock_guard<std::mutex> lock(mutex_);
    return kept_;
  }

  void Release() {
    std::multimap<size_t, void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(blocks_);
      kept_ = 0;
    }
    for (const auto& [size, p] : blocks) std::free(p);
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> blocks_;
  size_t kept_ = 0;
};

}  // namespace

torch::Tensor HugePageEmpty(at::IntArrayRef sizes) {
  int64_t bytes = sizeof(float);
  for (int64_t s : sizes) bytes *= s;
  constexpr size_t kHuge = 2 << 20;
  const size_t rounded =
      (static_cast<size_t>(std::max<int64_t>(bytes, 1)) + kHuge - 1) / kHuge * kHuge;
  size_t size = rounded;
  void* p = KeptBlocks::Get().Take(rounded, &size);
  if (p == nullptr) {
    CHECK_EQ(posix_memalign(&p, kHuge, rounded), 0) << "cannot allocate " << rounded << " bytes";
    madvise(p, rounded, MADV_HUGEPAGE);  // advice only: 4 KiB pages where refused
  }
  return torch::from_blob(
      p, sizes, [size](void* q) { KeptBlocks::Get().Give(q, size); },
      torch::TensorOptions().dtype(torch::kFloat32));
}

size_t KeptHugePageBytes() { return KeptBlocks::Get().kept(); }

void ReleaseKeptHugePages() { KeptBlocks::Get().Release(); }

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
    for (int64_t i = lo; i < hi; ++i) o[i] = SquaredNorm(p + i * d, d);
  });
  return out;
}

float SquaredNorm(const float* row, int64_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= d; k += 8) {
    for (int t = 0; t < 8; ++t) acc[t] += row[k + t] * row[k + t];
  }
  float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; k < d; ++k) sum += row[k] * row[k];
  return sum;
}

namespace {

// The size of near-equal parts of at most `max` that cover n.
int64_t EvenPart(int64_t n, int64_t max) {
  const int64_t parts = std::max<int64_t>(1, (n + max - 1) / max);
  return std::max<int64_t>(1, (n + parts - 1) / parts);
}

// The gallery in (pid, index) order: each identity's items are one range of positions, so a
// block of queries sorted by pid finds all its matches and junk in a few adjacent tiles.
struct PidGallery {
  int64_t g = 0, width = 0, tiles = 0;  // items; columns per tile; tiles
  std::vector<int64_t> index, cam;      // per position: gallery index, camera
  std::unordered_map<int64_t, std::pair<int64_t, int64_t>> range;  // pid -> positions [lo, hi)
  torch::Tensor feats;       // (G, D) the caller's features as float32, contiguous
  std::vector<float> norm;   // per position: the row's divisor (its L2 norm, at least 1e-12)
  std::vector<float> sq;     // per position: squared norm of the row as used (normalised or not)
};

PidGallery OrderGallery(const RankingInput& in) {
  PidGallery p;
  p.g = static_cast<int64_t>(in.g_pids.size());
  p.index.resize(p.g);
  std::iota(p.index.begin(), p.index.end(), 0);
  std::stable_sort(p.index.begin(), p.index.end(),
                   [&](int64_t a, int64_t b) { return in.g_pids[a] < in.g_pids[b]; });
  p.cam.resize(p.g);
  for (int64_t pos = 0; pos < p.g; ++pos) {
    const int64_t j = p.index[pos];
    p.cam[pos] = in.g_cams[j];
    auto [it, fresh] = p.range.try_emplace(in.g_pids[j], pos, pos + 1);
    if (!fresh) it->second.second = pos + 1;
  }
  p.width = EvenPart(std::max<int64_t>(p.g, 1), in.tile_cols > 0 ? in.tile_cols : kTileCols);
  p.tiles = (p.g + p.width - 1) / p.width;
  return p;
}

// The gallery rows' divisors and squared norms (one pass): the norms from ATen as
// NormalizeRowsInto takes them, the squared norms of the rows divided by them. Where `ordered` is
// given ((tiles * width, D)), each row as used is also written at its position (zero past the
// last item), which GalleryTile would otherwise make for every block.
void MeasureGallery(const RankingInput& in, PidGallery* p, float* ordered = nullptr) {
  p->feats = in.gallery.to(torch::kFloat32).contiguous();
  const int64_t d = p->feats.size(1);
  std::vector<float> norm(p->g, 1.0f), sq(p->g);
  std::vector<int64_t> position;  // of each gallery index
  if (ordered != nullptr) {
    position.resize(p->g);
    for (int64_t pos = 0; pos < p->g; ++pos) position[p->index[pos]] = pos;
  }
  constexpr int64_t kRows = 256;
  at::parallel_for(0, (p->g + kRows - 1) / kRows, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> row(d);
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t r0 = b * kRows, r1 = std::min(p->g, r0 + kRows);
      const float* f = p->feats.data_ptr<float>() + r0 * d;
      if (in.feat_norm) {  // F.normalize(dim=1): x / max(|x|, 1e-12)
        const torch::Tensor n = p->feats.slice(0, r0, r1).norm(2, 1, true).clamp_min(1e-12);
        std::copy(n.data_ptr<float>(), n.data_ptr<float>() + (r1 - r0), norm.begin() + r0);
      }
      for (int64_t j = r0; j < r1; ++j, f += d) {
        for (int64_t k = 0; k < d; ++k) row[k] = in.feat_norm ? f[k] / norm[j] : f[k];
        sq[j] = SquaredNorm(row.data(), d);
        if (ordered != nullptr) std::copy(row.begin(), row.end(), ordered + position[j] * d);
      }
    }
  });
  if (ordered != nullptr) {
    std::fill(ordered + p->g * d, ordered + p->tiles * p->width * d, 0.0f);
  }
  p->norm.resize(p->tiles * p->width, 1.0f);
  p->sq.assign(p->tiles * p->width, 0.0f);
  for (int64_t pos = 0; pos < p->g; ++pos) {
    p->norm[pos] = norm[p->index[pos]];
    p->sq[pos] = sq[p->index[pos]];
  }
}

// Tile `tile` of the gallery in position order, (width, D), normalised as the rows are used
// (a division, as NormalizeRowsInto's), zero past the last item.
void GalleryTile(const RankingInput& in, const PidGallery& gal, int64_t tile, float* out) {
  const int64_t d = gal.feats.size(1);
  const float* f = gal.feats.data_ptr<float>();
  for (int64_t r = 0; r < gal.width; ++r, out += d) {
    const int64_t pos = tile * gal.width + r;
    if (pos >= gal.g) {
      std::fill(out, out + d, 0.0f);
      continue;
    }
    const float* row = f + gal.index[pos] * d;
    if (in.feat_norm) {
      const float n = gal.norm[pos];
      for (int64_t k = 0; k < d; ++k) out[k] = row[k] / n;
    } else {
      std::copy(row, row + d, out);
    }
  }
}

// A query of a block: its identity's positions, its matches (sorted by distance, then gallery
// index) and its counts: counts[c] = items of other identities ranked after exactly c matches.
struct BlockQuery {
  int64_t query = 0;
  int64_t lo = 0, hi = 0;            // its pid's gallery positions
  int64_t h = 0;                     // matches (other cameras)
  int64_t first = 0, counts_at = 0;  // its matches in Block::t/m (padded to 4); its h + 1 counts
  float qn = 0;                      // squared norm
};

// A block of queries (rows [row0, row0 + rows) of the sorted queries) and its tasks: make the
// tiles of its own identities (tiles [t_lo, t_lo + ns)), make and count every other tile, count
// its own identities' tiles (once their matches are known).
struct Block {
  std::vector<BlockQuery> q;
  std::vector<float> t;    // match distances, each query's padded to a multiple of 4 with NaN
  std::vector<int64_t> m;  // match gallery indices
  int64_t counts = 0, row0 = 0, t_lo = 0, ns = 0, tasks_at = 0;
  std::once_flag ready;
  torch::Tensor queries;             // (rows, D) its queries, normalised, zero padding
  torch::Tensor own_tiles;           // (ns * rows * w), from the pool
  std::vector<int64_t> counts_of;    // (threads, counts)
  std::atomic<int64_t> made{0}, left{0};
  std::atomic<bool> known{false};    // t and m are set
};

// One query's row of a tile (positions [c0, c1), `dots` at c0) into its counts (CountSpan), the
// items of its own identity skipped.
void CountRow(const float* dots, int64_t c0, int64_t c1, const BlockQuery& bq,
              const Thresholds& th, const PidGallery& gal, int64_t* counts) {
  const float* row = dots - c0;  // row[pos]
  const float* gs = gal.sq.data();
  const float qn = bq.qn;
  const auto dist = [&](int64_t pos) { return (qn + gs[pos]) - 2.0f * row[pos]; };
#if defined(__SSE2__)
  const __m128 qn4 = _mm_set1_ps(qn);
  const auto dist4 = [&](int64_t pos) {
    const __m128 dot = _mm_loadu_ps(row + pos);
    return _mm_sub_ps(_mm_add_ps(qn4, _mm_loadu_ps(gs + pos)), _mm_add_ps(dot, dot));
  };
#else
  const auto dist4 = [](int64_t pos) { return pos; };
#endif
  const auto index = [&](int64_t pos) { return gal.index[pos]; };
  CountSpan(c0, std::max(c0, std::min(c1, bq.lo)), dist, dist4, index, th, counts);
  CountSpan(std::min(c1, std::max(c0, bq.hi)), c1, dist, dist4, index, th, counts);
}

// Queries [begin, end) with a match, sorted by (pid, index), ranked in blocks of at most
// min(chunk_rows, kTileRows) queries against gallery tiles of `width` items (docs/evaluation.md):
// per block, the tiles holding the block's own identities are made first and give each query's
// matches; every other tile is made by one thread and counted by it at once, while in cache. The
// tasks of all blocks form one list taken in order by the intra-op threads, so no thread waits
// for another until the end (a block's own tiles are counted after its matches are read). Every
// tile has one shape (queries and gallery padded), so each distance comes from the same product
// kernel whatever the threads and shards; no distance matrix is held.
std::vector<QueryRanking> RankTiled(const RankingInput& in, int64_t begin, int64_t end) {
  std::vector<QueryRanking> results(std::max<int64_t>(0, end - begin));
  PidGallery gal = OrderGallery(in);
  std::vector<BlockQuery> valid;
  for (int64_t q = begin; q < end; ++q) {
    const auto it = gal.range.find(in.q_pids[q]);
    if (it == gal.range.end()) continue;
    BlockQuery bq;
    bq.query = q;
    std::tie(bq.lo, bq.hi) = it->second;
    for (int64_t pos = bq.lo; pos < bq.hi; ++pos) bq.h += gal.cam[pos] != in.q_cams[q];
    if (bq.h > 0) valid.push_back(bq);  // else no remaining match: skipped, as the reference does
  }
  if (valid.empty()) return results;
  std::stable_sort(valid.begin(), valid.end(), [&](const BlockQuery& a, const BlockQuery& b) {
    return in.q_pids[a.query] < in.q_pids[b.query];
  });
  const int64_t n = static_cast<int64_t>(valid.size()), d = in.query.size(1), w = gal.width;
  const int64_t rows = EvenPart(n, std::clamp<int64_t>(in.chunk_rows, 1, kTileRows));
  const int64_t num_blocks = (n + rows - 1) / rows;
  // The gallery in position order, normalised, made once where it takes at most half of what
  // HugePageEmpty keeps (a Market-1501-size gallery: 82 MB at D 1280; MSMT17's, 420 MB, is made a
  // tile at a time for each block).
  torch::Tensor ordered;
  const int64_t ordered_max = in.ordered_gallery_max_bytes >= 0
                                  ? in.ordered_gallery_max_bytes
                                  : static_cast<int64_t>(kKeptHugePageBytes / 2);
  if (gal.tiles * w * d * static_cast<int64_t>(sizeof(float)) <= ordered_max) {
    ordered = HugePageEmpty({gal.tiles * w, d});
  }
  MeasureGallery(in, &gal, ordered.defined() ? ordered.data_ptr<float>() : nullptr);
  const int threads = std::max(1, at::get_num_threads());
  std::vector<std::unique_ptr<Block>> blocks;
  int64_t tasks = 0;
  for (int64_t b = 0; b < num_blocks; ++b) {
    auto blk = std::make_unique<Block>();
    blk->row0 = b * rows;
    blk->q.assign(valid.begin() + blk->row0, valid.begin() + std::min(n, blk->row0 + rows));
    for (int64_t r = 0; r < static_cast<int64_t>(blk->q.size()); ++r) {
      BlockQuery& bq = blk->q[r];
      bq.first = static_cast<int64_t>(blk->t.size());
      bq.counts_at = blk->counts;
      blk->t.resize(bq.first + (bq.h + 3) / 4 * 4, std::numeric_limits<float>::quiet_NaN());
      blk->counts += bq.h + 1;
    }
    blk->m.resize(blk->t.size());
    // The block's own identities' tiles (pid ranges ascend with the sorted queries).
    blk->t_lo = blk->q.front().lo / w;
    blk->ns = (blk->q.back().hi - 1) / w - blk->t_lo + 1;
    blk->tasks_at = tasks;
    blk->left = gal.tiles + blk->ns;
    tasks += gal.tiles + blk->ns;
    blocks.push_back(std::move(blk));
  }
  ScopedBlasThreads one_blas_thread(1);  // each tile's product on the thread that counts it
  std::vector<torch::Tensor> own(threads);       // per thread: its tile of distances
  std::vector<torch::Tensor> operand(threads);   // per thread: its tile of the gallery
  for (int t = 0; t < threads; ++t) {
    own[t] = HugePageEmpty({rows, w});
    if (!ordered.defined()) operand[t] = HugePageEmpty({w, d});
  }
  std::mutex pool_mutex;
  std::vector<torch::Tensor> pool, query_pool;  // blocks' own tiles and queries, reused
  const float* gs = gal.sq.data();
  const auto product = [&](const Block& blk, int64_t tile, int thread, torch::Tensor out) {
    if (ordered.defined()) {  // the same values in the same layout: the same product, bit for bit
      at::mm_out(out, blk.queries, ordered.narrow(0, tile * w, w).t());
      return;
    }
    GalleryTile(in, gal, tile, operand[thread].data_ptr<float>());
    at::mm_out(out, blk.queries, operand[thread].t());
  };
  const auto take = [&](std::vector<torch::Tensor>* from, int64_t need) {  // under pool_mutex
    for (size_t i = 0; i < from->size(); ++i) {
      if ((*from)[i].numel() >= need) {
        torch::Tensor t = std::move((*from)[i]);
        from->erase(from->begin() + static_cast<std::ptrdiff_t>(i));
        return t;
      }
    }
    return HugePageEmpty({need});
  };
  const auto own_tile = [&](const Block& blk, int64_t i) {
    return blk.own_tiles.narrow(0, i * rows * w, rows * w).view({rows, w});
  };
  const auto read_matches = [&](Block& blk) {
    const float* sp = blk.own_tiles.data_ptr<float>();
    std::vector<Keyed> matches;
    for (int64_t r = 0; r < static_cast<int64_t>(blk.q.size()); ++r) {
      BlockQuery& bq = blk.q[r];
      const int64_t cam = in.q_cams[bq.query];
      matches.clear();
      for (int64_t pos = bq.lo; pos < bq.hi; ++pos) {
        if (gal.cam[pos] == cam) continue;  // junk: removed
        const float dot = sp[((pos / w) - blk.t_lo) * rows * w + r * w + pos % w];
        matches.push_back({Key((bq.qn + gs[pos]) - 2.0f * dot), gal.index[pos]});
      }
      std::sort(matches.begin(), matches.end());
      for (int64_t i = 0; i < bq.h; ++i) {
        blk.t[bq.first + i] = matches[i].d;
        blk.m[bq.first + i] = matches[i].j;
      }
    }
  };
  const auto count_tile = [&](Block& blk, int64_t tile, const float* dots, int thread) {
    const int64_t c0 = tile * w, c1 = std::min(gal.g, c0 + w);
    int64_t* cnt = blk.counts_of.data() + thread * blk.counts;
    for (int64_t r = 0; r < static_cast<int64_t>(blk.q.size()); ++r) {
      const BlockQuery& bq = blk.q[r];
      CountRow(dots + r * w, c0, c1, bq, {blk.t.data() + bq.first, blk.m.data() + bq.first, bq.h},
               gal, cnt + bq.counts_at);
    }
  };
  const auto finish = [&](Block& blk) {
    for (const BlockQuery& bq : blk.q) {
      // Position of match i among the kept items: the i matches before it and the items of other
      // identities ranked before it (counts[0..i] summed over the threads).
      int64_t others = 0;
      double precision_sum = 0;
      QueryRanking& out = results[bq.query - begin];
      for (int64_t i = 0; i < bq.h; ++i) {
        for (int th = 0; th < threads; ++th) {
          others += blk.counts_of[th * blk.counts + bq.counts_at + i];
        }
        const int64_t position = i + others;
        if (i == 0) out.first_hit = position;
        precision_sum += static_cast<double>(i + 1) / static_cast<double>(position + 1);
      }
      out.ap = precision_sum / static_cast<double>(bq.h);
    }
    std::lock_guard<std::mutex> lock(pool_mutex);
    pool.push_back(std::move(blk.own_tiles));
    query_pool.push_back(blk.queries.view({-1}));
    blk.queries = torch::Tensor();
    std::vector<int64_t>().swap(blk.counts_of);
  };
  ForEachDynamic(tasks, [&](int64_t task, int thread) {
    const auto it = std::upper_bound(blocks.begin(), blocks.end(), task,
                                     [](int64_t k, const std::unique_ptr<Block>& b) {
                                       return k < b->tasks_at;
                                     });
    Block& blk = **(it - 1);
    std::call_once(blk.ready, [&] {  // the block's first task: its buffers and queries
      blk.counts_of.assign(static_cast<size_t>(threads) * blk.counts, 0);
      {
        std::lock_guard<std::mutex> lock(pool_mutex);
        blk.own_tiles = take(&pool, blk.ns * rows * w);
        blk.queries = take(&query_pool, rows * d).narrow(0, 0, rows * d).view({rows, d});
      }
      const int64_t nb = static_cast<int64_t>(blk.q.size());
      std::vector<int64_t> ids(nb);
      for (int64_t r = 0; r < nb; ++r) ids[r] = blk.q[r].query;
      torch::Tensor rows_in = blk.queries.slice(0, 0, nb);
      const torch::Tensor index = torch::tensor(ids, torch::kInt64);
      if (in.query.scalar_type() == torch::kFloat32) {
        // Gathered straight into the pooled buffer and normalised there (NormalizeRowsInto's
        // arithmetic on the same values, so the same bits): no fresh (rows, D) temporary per
        // block, whose page faults cost more than its copy.
        at::index_select_out(rows_in, in.query, 0, index);
        if (in.feat_norm) rows_in.div_(rows_in.norm(2, 1, true).clamp_min(1e-12));
      } else {
        const torch::Tensor src = in.query.index_select(0, index);
        if (in.feat_norm) {
          NormalizeRowsInto(src, rows_in);
        } else {
          rows_in.copy_(src);
        }
      }
      blk.queries.slice(0, nb).zero_();
      const float* qf = blk.queries.data_ptr<float>();
      for (int64_t r = 0; r < nb; ++r) blk.q[r].qn = SquaredNorm(qf + r * d, d);
    });
    const auto wait_for_matches = [&] {
      while (!blk.known.load(std::memory_order_acquire)) std::this_thread::yield();
    };
    const int64_t i = task - blk.tasks_at, others = gal.tiles - blk.ns;
    if (i < blk.ns) {  // one of the block's own identities' tiles
      product(blk, blk.t_lo + i, thread, own_tile(blk, i));
      if (blk.made.fetch_add(1) + 1 == blk.ns) {
        read_matches(blk);
        blk.known.store(true, std::memory_order_release);
      }
    } else if (i < blk.ns + others) {  // another tile
      const int64_t k = i - blk.ns, tile = k < blk.t_lo ? k : k + blk.ns;
      product(blk, tile, thread, own[thread]);
      wait_for_matches();
      count_tile(blk, tile, own[thread].data_ptr<float>(), thread);
    } else {  // count one of the block's own identities' tiles
      const int64_t k = i - blk.ns - others;
      wait_for_matches();
      count_tile(blk, blk.t_lo + k, own_tile(blk, k).data_ptr<float>(), thread);
    }
    if (blk.left.fetch_sub(1) == 1) finish(blk);
  });
  return results;
}

// Ranks full rows of given distances (re-ranking), `chunk_rows` at a time.
std::vector<QueryRanking> RankDistanceRows(const RankingInput& in, int64_t begin, int64_t end) {
  const int64_t g = static_cast<int64_t>(in.g_pids.size());
  const auto by_pid = IndexByPid(in.g_pids);
  const std::vector<int64_t> none;
  const int64_t chunk = std::max<int64_t>(1, in.chunk_rows);
  std::vector<QueryRanking> results(std::max<int64_t>(0, end - begin));
  for (int64_t b = begin; b < end; b += chunk) {
    const int64_t e = std::min(end, b + chunk);
    const torch::Tensor rows = in.distance_rows(b, e).to(torch::kFloat32).contiguous();
    CHECK_EQ(rows.size(0), e - b);
    CHECK_EQ(rows.size(1), g);
    const float* base = rows.data_ptr<float>();
    at::parallel_for(0, e - b, 1, [&](int64_t lo, int64_t hi) {
      Scratch scratch;
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t q = b + r;
        const auto it = by_pid.find(in.q_pids[q]);
        const std::vector<int64_t>& same = it == by_pid.end() ? none : it->second;
        const float* row = base + r * g;
        results[q - begin] = RankRow(row, g, same, in.g_cams, in.q_cams[q], &scratch);
      }
    });
  }
  return results;
}

}  // namespace

std::vector<QueryRanking> RankEachQuery(const RankingInput& in, int64_t begin, int64_t end) {
  return in.distance_rows ? RankDistanceRows(in, begin, end) : RankTiled(in, begin, end);
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
