// k-reciprocal re-ranking (Zhong et al., CVPR 2017) as the reference's re_ranking
// (docs/design.md 10.2), without its dense (Q+G)^2 matrices: the k-nearest-neighbour lists
// come from a chunked search over all Q+G items (sharded over ranks), V and its query expansion
// are sparse rows, and the final (Q, G) distance is produced a chunk of query rows at a time.
// The fp16 steps of the reference (V, V_qe, the Jaccard sums and distance) are kept bit for bit,
// since the final ranking depends on their rounding. Shapes: Q queries, G gallery, N = Q + G, D.
#pragma once

#include <c10/util/Half.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"
#include "trainer/distributed/communicator.h"

namespace reid::trainer {

// The neighbour search's square tiles: 1024 x 1024 x 4 B = 4 MiB of distances per thread (two
// threads' in this machine's 32 MiB L3), offered to both items' lists while there.
constexpr int64_t kSearchTile = 1024;
// The final distance's tiles: its rows (up to chunk_rows, 1024) x 2048 gallery items, 8 MiB of
// products per thread, read at once into the rows.
constexpr int64_t kDistanceTile = 2048;

// Built by RerankOptionsFromConfig (eval_run.h) from eval.rerank_k1, rerank_k2, rerank_lambda,
// chunk_rows and rerank_max_memory_mb, which hold the defaults (the reference's k1 20, k2 6,
// lambda 0.3); none is restated here.
struct RerankOptions {
  int k1 = 0;                   // neighbours of the k-reciprocal sets
  int k2 = 0;                   // neighbours of the query expansion
  float lambda = 0;             // weight of the original distance
  int64_t chunk_rows = 0;       // rows per distance block
  int64_t memory_limit_mb = 0;  // refuse above this; 0 = MemAvailable of /proc/meminfo
  int64_t search_tile = 0;      // items per side of the search's tiles; 0 = kSearchTile (tests)
};

// An upper bound of the memory re-ranking Q x G items of width D holds at its peak, in bytes,
// including the features and the evaluation's distance chunk.
int64_t RerankMemoryBytes(int64_t q, int64_t g, int64_t d, const RerankOptions& options);
// InvalidArgument (naming the sizes and the limit) when RerankMemoryBytes exceeds the limit.
Status CheckRerankMemory(int64_t q, int64_t g, int64_t d, const RerankOptions& options);

class Reranker {
 public:
  // `query` (Q, D) and `gallery` (G, D), L2-normalised first when `normalize` (as the reference
  // re-ranks normalised features); call CheckRerankMemory first. Collective when `comm` is not
  // null: the neighbour search is sharded over ranks.
  static std::unique_ptr<Reranker> Build(const torch::Tensor& query, const torch::Tensor& gallery,
                                         bool normalize, const RerankOptions& options,
                                         dist::Communicator* comm);
  // Rows [begin, end) of the re-ranked (Q, G) distance, float32.
  torch::Tensor DistanceRows(int64_t begin, int64_t end) const;

  int64_t num_query() const { return num_query_; }
  int64_t num_gallery() const { return num_all_ - num_query_; }

 private:
  struct Sparse {  // CSR rows: columns ascending, values fp16
    std::vector<int64_t> ptr;
    std::vector<int32_t> col;
    std::vector<c10::Half> val;
  };
  Reranker() = default;
  void SearchNeighbours(dist::Communicator* comm);
  void BuildV();
  void ExpandQueries();
  void InvertGallery();
  // Squared Euclidean distance of items i and j, scaled by row i's maximum (the reference's
  // original_dist).
  float Original(int64_t i, int64_t j) const;

  RerankOptions options_;
  int64_t num_query_ = 0, num_all_ = 0, width_ = 0;
  int64_t k_ = 0;               // neighbours kept per item: max(k1 + 1, k2)
  int64_t tile_ = 1;            // the search's tile: near-equal parts of N, at most kSearchTile
  torch::Tensor all_;           // (N, D) query rows then gallery rows, zero rows up to tiles
  std::vector<float> sq_;       // (N) squared norms (then the padding's zeros)
  std::vector<float> row_max_;  // (N) largest distance of each row
  std::vector<int32_t> knn_;    // (N, k_) nearest first (the reference's initial_rank)
  Sparse v_;                    // (N, N) V, then V_qe
  Sparse inv_;                  // (N, G) per column of V_qe: gallery rows that have it
  // DistanceRows' reused blocks (fresh pages cost a fault each): the rows, per-thread tiles.
  mutable torch::Tensor out_block_;
  mutable std::vector<torch::Tensor> dot_tiles_;
};

}  // namespace reid::trainer
