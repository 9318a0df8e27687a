// The CLIP-ReID evaluation protocol (docs/design.md 10.1): L2-normalised features, squared
// Euclidean distance, gallery items of the query's pid and camera removed, queries without a
// remaining match skipped, CMC to max_rank, mAP. Ranking sharded over queries across ranks
// (gallery on every rank, per-query results reduced), so no rank idles while another ranks.
// Shapes: Q queries, G gallery items, D feature width.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/torch_glog.h"
#include "trainer/distributed/communicator.h"

namespace reid::trainer {

struct EvalResult {
  double mAP = 0;                 // fraction in [0, 1]
  std::vector<double> cmc;        // rank 1..max_rank (fewer when the gallery is smaller)
  int64_t num_valid_queries = 0;  // queries with at least one remaining match
  int64_t num_query = 0, num_gallery = 0;
};

struct RankingInput {
  torch::Tensor query, gallery;  // (Q, D), (G, D) float32, CPU
  std::vector<int64_t> q_pids, q_cams, g_pids, g_cams;
  // From proto::EvalConfig (RankingInputFromConfig); no defaults of their own.
  int max_rank = 0;
  bool feat_norm = false;
  int64_t chunk_rows = 0;     // query rows per distance block (at most kTileRows when tiled)
  int64_t tile_cols = 0;      // gallery columns per tile; 0 = kTileCols (tests set small ones)
  // The largest gallery (bytes, padded to whole tiles) put in pid order once; a larger one is made
  // a tile at a time for each block of queries. -1 = kKeptHugePageBytes / 2 (tests set 0).
  int64_t ordered_gallery_max_bytes = -1;
  // When set, gives rows [begin, end) of the (Q, G) distance matrix instead of the squared
  // Euclidean distance of the features (re-ranking); `query` and `gallery` are then unused.
  std::function<torch::Tensor(int64_t begin, int64_t end)> distance_rows;
};

// One query's outcome: AP (-1 when no match remains and the query is skipped) and the position of
// its first match among the kept gallery items.
struct QueryRanking {
  double ap = -1;
  int64_t first_hit = -1;
};

// Sums over some queries: what each rank contributes before the reduction.
struct RankingSums {
  double ap_sum = 0;
  int64_t valid = 0;
  std::vector<int64_t> cmc_hits;  // per rank position: queries whose first match is at or before
};

// The evaluation's tiles of squared Euclidean distances (docs/evaluation.md, docs/performance.md):
// a block of up to kTileRows queries times kTileCols gallery items, D deep, is one single-threaded
// product on one thread, ranked by that thread as soon as it is made: 1024 x 2048 x 4 B = 8 MiB of
// distances per thread, two threads' tiles in this machine's 32 MiB L3, while the product's packed
// panels work in the 1 MiB L2 of each core. Smaller tiles would stay in L2 but repack the
// operands more often per flop (256 x 256 makes the product about 10% slower here, 1024 x 512 5%).
constexpr int64_t kTileRows = 1024;
constexpr int64_t kTileCols = 2048;

// Ranks queries [begin, end) against the whole gallery. Ties in distance are broken by gallery
// index, so results do not depend on threads or sharding. Squared Euclidean distances are made
// and ranked tile by tile (memory: a tile per thread and the tiles holding the block's own
// identities); `distance_rows` are ranked a chunk of `chunk_rows` full rows at a time.
std::vector<QueryRanking> RankEachQuery(const RankingInput& in, int64_t begin, int64_t end);
// The same, summed.
RankingSums RankQueries(const RankingInput& in, int64_t begin, int64_t end);

// Sets the BLAS library's own thread count (OpenBLAS; a no-op elsewhere) for the scope, and
// restores it: products made on each of our threads at once must not each start a thread pool.
// Going to one thread also ends OpenBLAS' idle workers, which would otherwise spin on the cores
// our threads need (it starts them again at its next multi-threaded call). The count is the
// process's: no other thread may run BLAS products while a scope that changes it is open.
class ScopedBlasThreads {
 public:
  explicit ScopedBlasThreads(int threads);
  ~ScopedBlasThreads();
  ScopedBlasThreads(const ScopedBlasThreads&) = delete;
  ScopedBlasThreads& operator=(const ScopedBlasThreads&) = delete;

 private:
  int saved_ = 0;
};

// Calls fn(i, thread) for i in [0, n) on the intra-op threads, each taking the next i when done
// (thread: at::get_thread_num(), for per-thread buffers).
void ForEachDynamic(int64_t n, const std::function<void(int64_t, int)>& fn);

// An uninitialised float32 tensor in memory advised for transparent huge pages: first touches of
// large blocks cost far less than with 4 KiB pages. When it is freed, its block is kept for the
// next request of about its size (at most kKeptHugePageBytes kept in all, process-wide): memory
// handed back to the kernel comes back as fresh pages, whose first touch costs far more than the
// arithmetic on them where the host reclaims freed guest memory (a VM's free page reporting).
torch::Tensor HugePageEmpty(at::IntArrayRef sizes);
constexpr size_t kKeptHugePageBytes = size_t{192} << 20;
// Bytes of freed blocks HugePageEmpty keeps now.
size_t KeptHugePageBytes();
// Frees the kept blocks.
void ReleaseKeptHugePages();
// Rows scaled to unit L2 norm, float32 (the reference's F.normalize(dim=1)).
torch::Tensor NormalizeRows(const torch::Tensor& x);
// The same into `out` (same shape).
void NormalizeRowsInto(const torch::Tensor& x, torch::Tensor& out);
// Per-row sums of squares (N) of (N, D), without an (N, D) temporary.
torch::Tensor SquaredNorms(const torch::Tensor& x);
// The same for one row of `d` floats (SquaredNorms' arithmetic, bit for bit).
float SquaredNorm(const float* row, int64_t d);

// The whole protocol: this rank ranks its shard of the queries, the per-query results are
// all-gathered and summed in query order, so every rank returns the same result, bit for bit the
// same for any number of ranks and threads. `comm` may be null (one process).
EvalResult EvaluateRanking(const RankingInput& in, dist::Communicator* comm);

// A query's best kept gallery items (junk removed, as ranked by the protocol), best first.
struct TopMatches {
  int64_t query = 0;
  std::vector<int64_t> gallery;
  std::vector<float> distance;
};
// The first `n` queries that have a match (the valid ones), in query order.
std::vector<int64_t> FirstValidQueries(const RankingInput& in, int64_t n);
// The top `k` of each of `queries` (indices into the query set).
std::vector<TopMatches> RankTop(const RankingInput& in, const std::vector<int64_t>& queries, int k);

// "mAP 71.2% | R1 85.0% R5 93.1% R10 95.2%" for the log.
std::string FormatEvalResult(const EvalResult& r);
// {"mAP":..,"cmc":[..],"num_valid_queries":..,"num_query":..,"num_gallery":..} plus `extra`
// (already formatted "key":value pairs, may be empty).
std::string EvalResultJson(const EvalResult& r, const std::string& extra);

}  // namespace reid::trainer
