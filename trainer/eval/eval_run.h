// One evaluation as the config asks for it (protocol, optional re-ranking), shared by the
// training loop, `reid eval` (both modes) and the tests.
#pragma once

#include <vector>

#include "base/status.h"
#include "data/dataset.h"
#include "proto/reid_config.pb.h"
#include "trainer/eval/evaluator.h"
#include "trainer/eval/rerank.h"

namespace reid::trainer {

// A ranking input with the config's settings (max_rank, feat_norm, chunk_rows) and no data.
RankingInput RankingInputFromConfig(const proto::EvalConfig& cfg);

// The ranking input of features (Q, D), (G, D) and the splits' pids and cameras.
RankingInput MakeRankingInput(const proto::EvalConfig& cfg, const torch::Tensor& query,
                              const torch::Tensor& gallery, const std::vector<data::Sample>& q,
                              const std::vector<data::Sample>& g);

RerankOptions RerankOptionsFromConfig(const proto::EvalConfig& cfg);

// Evaluates `in`, re-ranked when `rerank` (the features normalised first when in.feat_norm, as
// the reference re-ranks normalised features). Collective when `comm` is not null; a refusal
// (re-ranking would not fit in memory) is agreed by every rank and returned before any
// allocation of size.
// Queries to show in a retrieval grid: `queries`, or (when empty) the first `first_valid` valid
// ones; RunEvaluation fills `top` with their best `k` matches (on rank 0).
struct TopRequest {
  std::vector<int64_t> queries;
  int64_t first_valid = 0;
  int k = 10;
  std::vector<TopMatches> top;
};

StatusOr<EvalResult> RunEvaluation(RankingInput in, const proto::EvalConfig& cfg, bool rerank,
                                   dist::Communicator* comm, TopRequest* top = nullptr);

}  // namespace reid::trainer
