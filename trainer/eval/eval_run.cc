// Evaluation as configured: the protocol, with k-reciprocal re-ranking when asked.
#include "trainer/eval/eval_run.h"

namespace reid::trainer {

RankingInput RankingInputFromConfig(const proto::EvalConfig& cfg) {
  RankingInput in;
  in.max_rank = cfg.max_rank();
  in.feat_norm = cfg.feat_norm();
  in.chunk_rows = cfg.chunk_rows();
  return in;
}

RankingInput MakeRankingInput(const proto::EvalConfig& cfg, const torch::Tensor& query,
                              const torch::Tensor& gallery, const std::vector<data::Sample>& q,
                              const std::vector<data::Sample>& g) {
  RankingInput in = RankingInputFromConfig(cfg);
  in.query = query;
  in.gallery = gallery;
  for (const data::Sample& s : q) {
    in.q_pids.push_back(s.pid);
    in.q_cams.push_back(s.camid);
  }
  for (const data::Sample& s : g) {
    in.g_pids.push_back(s.pid);
    in.g_cams.push_back(s.camid);
  }
  return in;
}

RerankOptions RerankOptionsFromConfig(const proto::EvalConfig& cfg) {
  RerankOptions o;
  o.k1 = cfg.rerank_k1();
  o.k2 = cfg.rerank_k2();
  o.lambda = cfg.rerank_lambda();
  o.chunk_rows = cfg.chunk_rows();
  o.memory_limit_mb = cfg.rerank_max_memory_mb();
  return o;
}

namespace {

EvalResult EvaluateWithTop(const RankingInput& in, dist::Communicator* comm, TopRequest* top) {
  EvalResult r = EvaluateRanking(in, comm);
  if (top != nullptr && (comm == nullptr || comm->rank() == 0)) {
    const std::vector<int64_t> queries =
        top->queries.empty() ? FirstValidQueries(in, top->first_valid) : top->queries;
    top->top = RankTop(in, queries, top->k);
  }
  return r;
}

}  // namespace

StatusOr<EvalResult> RunEvaluation(RankingInput in, const proto::EvalConfig& cfg, bool rerank,
                                   dist::Communicator* comm, TopRequest* top) {
  if (!rerank) return EvaluateWithTop(in, comm, top);
  const RerankOptions options = RerankOptionsFromConfig(cfg);
  Status s = CheckRerankMemory(in.query.size(0), in.gallery.size(0), in.query.size(1), options);
  if (comm != nullptr && comm->size() > 1) {
    // Each rank reads its own MemAvailable: agree, so that no rank enters a collective alone.
    torch::Tensor refused = torch::full({1}, s.ok() ? 0 : 1, torch::kInt64);
    comm->AllReduce(refused, dist::ReduceOp::kMax);
    if (s.ok() && refused.item<int64_t>() != 0) {
      s = Status::InvalidArgument("re-ranking would not fit in memory on another rank");
    }
  }
  REID_RETURN_IF_ERROR(s);
  std::shared_ptr<Reranker> reranker =
      Reranker::Build(in.query, in.gallery, in.feat_norm, options, comm);
  in.query = torch::Tensor();
  in.gallery = torch::Tensor();
  in.distance_rows = [reranker](int64_t begin, int64_t end) {
    return reranker->DistanceRows(begin, end);
  };
  return EvaluateWithTop(in, comm, top);
}

}  // namespace reid::trainer
