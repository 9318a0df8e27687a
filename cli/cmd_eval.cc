// `reid eval` (a checkpoint on its dataset, or features given as .npy + meta CSV files) and
// `reid extract` (a split's features and meta to PREFIX.npy / PREFIX.csv). Under mpirun the
// extraction and the ranking are sharded over ranks; rank 0 prints and writes.
#include <ATen/Parallel.h>
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "base/file_util.h"
#include "data/loader.h"
#include "data/options.h"
#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "cli/config_flags.h"
#include "trainer/distributed/stop_signal.h"
#include "trainer/eval/eval_run.h"
#include "formats/features_io.h"
#include "trainer/eval/retrieval_grid.h"

DECLARE_string(data_root);
DEFINE_string(out, "",
              "Output file: extract, embed: PREFIX of PREFIX.npy and PREFIX.csv; export: the "
              ".pth / .onnx file (folders are --output_dir)");
DEFINE_string(checkpoint, "", "Checkpoint directory, or a run directory for its newest valid one");
DEFINE_bool(rerank, false, "k-reciprocal re-ranking (eval.rerank_k1/k2/lambda); also eval.rerank");
DEFINE_string(out_json, "", "Write the result as one JSON object to this file");
DEFINE_string(query_features, "", "Query features: float32 (N, D) .npy (feature-file mode)");
DEFINE_string(gallery_features, "", "Gallery features: float32 (N, D) .npy (feature-file mode)");
DEFINE_string(query_meta, "", "Query meta CSV with the header path,pid,camid (feature-file mode)");
DEFINE_string(gallery_meta, "", "Gallery meta CSV with the header path,pid,camid");
DEFINE_string(split, "", "extract: query, gallery or train");
DEFINE_int32(visualize, 0, "Retrieval grid of the first N valid queries and their top-10 matches");
DEFINE_string(visualize_out, "",
              "The retrieval grid's JPEG file (with --visualize or "
              "--visualize_queries)");
DEFINE_string(visualize_queries, "", "Comma-separated query indices (0-based) for the grid");

namespace reid::trainer {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<data::Sample> ToSamples(const std::vector<formats::MetaRow>& rows) {
  std::vector<data::Sample> out;
  for (const formats::MetaRow& r : rows) {
    out.push_back({r.path, static_cast<int>(r.pid), static_cast<int>(r.camid)});
  }
  return out;
}

// Features and meta of one side (feature-file mode).
Status LoadSide(const std::string& features, const std::string& meta, const char* side,
                torch::Tensor* f, std::vector<data::Sample>* samples) {
  if (features.empty() || meta.empty()) {
    return Status::InvalidArgument(std::string("--") + side + "_features and --" + side +
                                   "_meta are both required in feature-file mode");
  }
  StatusOr<std::vector<formats::MetaRow>> rows = formats::ReadMetaCsv(meta);
  if (!rows.ok()) return rows.status();
  for (const formats::MetaRow& r : *rows) {
    if (r.pid < INT32_MIN || r.pid > INT32_MAX || r.camid < INT32_MIN || r.camid > INT32_MAX)
      return Status::InvalidArgument(meta + ": pid or camid out of the 32-bit range");
  }
  if (rows->empty()) {
    return Status::InvalidArgument(meta + ": no rows (an empty " + std::string(side) + " set)");
  }
  StatusOr<torch::Tensor> t = formats::ReadFeatures(features, static_cast<int64_t>(rows->size()), meta);
  if (!t.ok()) return t.status();
  *f = *t;
  *samples = ToSamples(*rows);
  return Status::Ok();
}

// The grid request of --visualize / --visualize_queries (null when none); InvalidArgument for
// a bad index list.
StatusOr<std::unique_ptr<TopRequest>> GridRequest(int64_t num_query) {
  if (FLAGS_visualize <= 0 && FLAGS_visualize_queries.empty()) {
    return std::unique_ptr<TopRequest>();
  }
  if (FLAGS_visualize_out.empty()) {
    return Status::InvalidArgument("--visualize_out=F.jpg is needed for the retrieval grid");
  }
  auto request = std::make_unique<TopRequest>();
  request->first_valid = FLAGS_visualize;
  std::stringstream list(FLAGS_visualize_queries);
  std::string item;
  while (std::getline(list, item, ',')) {
    char* end = nullptr;
    const long long q = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || q < 0 || q >= num_query) {
      return Status::InvalidArgument("--visualize_queries: '" + item +
                                     "' is not a query index in [0, " + std::to_string(num_query) +
                                     ")");
    }
    request->queries.push_back(q);
  }
  return request;
}

Status WriteGrid(const TopRequest& request, const std::vector<data::Sample>& q,
                 const std::vector<data::Sample>& g) {
  std::vector<GridRow> rows;
  for (const TopMatches& t : request.top) {
    GridRow row;
    row.query_path = q[t.query].path;
    for (size_t i = 0; i < t.gallery.size(); ++i) {
      const data::Sample& s = g[t.gallery[i]];
      row.gallery_paths.push_back(s.path);
      row.distances.push_back(t.distance[i]);
      row.correct.push_back(s.pid == q[t.query].pid);
    }
    rows.push_back(std::move(row));
  }
  int unreadable = 0;
  REID_RETURN_IF_ERROR(WriteRetrievalGrid(rows, FLAGS_visualize_out, &unreadable));
  std::cout << "retrieval grid: " << FLAGS_visualize_out << " (" << rows.size() << " queries"
            << (unreadable ? ", " + std::to_string(unreadable) + " images unreadable (grey)" : "")
            << ")\n";
  return Status::Ok();
}

// Prints the result (rank 0) and writes --out_json.
Status Report(const EvalResult& r, bool rerank, double seconds, int rank) {
  if (rank != 0) return Status::Ok();
  std::cout << "eval | " << FormatEvalResult(r) << (rerank ? " | re-ranked" : "") << " | "
            << r.num_gallery << " gallery | " << seconds << " s\n";
  if (FLAGS_out_json.empty()) return Status::Ok();
  return base::WriteFileAtomically(
      FLAGS_out_json,
      EvalResultJson(r, std::string("\"rerank\":") + (rerank ? "true" : "false")) + "\n");
}

// --out_json and --visualize_out before any work: a FIFO there blocked the write at the end, a
// directory failed it after the evaluation's minutes.
Status CheckOutputFlags() {
  if (!FLAGS_out_json.empty()) {
    REID_RETURN_IF_ERROR(base::CheckOutputFile(FLAGS_out_json).Annotate("--out_json"));
  }
  if (!FLAGS_visualize_out.empty()) {
    REID_RETURN_IF_ERROR(base::CheckOutputFile(FLAGS_visualize_out).Annotate("--visualize_out"));
  }
  return Status::Ok();
}

int EvalFeatureFiles(const proto::ReidConfig& cfg, Job& job, bool rerank) {
  const int rank = job.ranks.rank;
  torch::Tensor qf, gf;
  std::vector<data::Sample> q, g;
  Status s = LoadSide(FLAGS_query_features, FLAGS_query_meta, "query", &qf, &q);
  if (s.ok()) s = LoadSide(FLAGS_gallery_features, FLAGS_gallery_meta, "gallery", &gf, &g);
  if (s.ok() && qf.size(1) != gf.size(1)) {
    s = Status::InvalidArgument(FLAGS_query_features + " has " + std::to_string(qf.size(1)) +
                                " columns but " + FLAGS_gallery_features + " has " +
                                std::to_string(gf.size(1)) + ": feature widths differ");
  }
  if (!s.ok()) return Fail("eval", s, rank);
  StatusOr<std::unique_ptr<TopRequest>> grid = GridRequest(qf.size(0));
  if (!grid.ok()) return Fail("eval", grid.status(), rank);
  const double start = Now();
  StatusOr<EvalResult> r = RunEvaluation(MakeRankingInput(cfg.eval(), qf, gf, q, g), cfg.eval(),
                                         rerank, job.comm.get(), grid->get());
  if (!r.ok()) return Fail("eval", r.status(), rank);
  s = Report(*r, rerank, Now() - start, rank);
  if (s.ok() && *grid && rank == 0) s = WriteGrid(**grid, q, g);
  return s.ok() ? kExitOk : Fail("eval", s, rank);
}

// The query and gallery of the (possibly other) dataset that `cfg.data` names, checked readable.
StatusOr<data::Dataset> LoadTestSplits(const proto::ReidConfig& cfg) {
  const std::string& root = cfg.data().root();
  if (root.empty()) {
    return Status::InvalidArgument(
        "no dataset: pass --data_root (and --dataset for another "
        "layout than the checkpoint's)");
  }
  REID_ASSIGN_OR_RETURN(data::Dataset d,
                        data::LoadDataset(data::DatasetKindFromConfig(cfg.data()), root));
  if (d.query.empty() || d.gallery.empty()) {
    return Status::InvalidArgument(root + ": the query or gallery split is empty");
  }
  const int threads = std::max(1, cfg.data().num_workers());
  for (auto [name, split] : {std::pair{"query", &d.query}, {"gallery", &d.gallery}}) {
    std::vector<std::string> bad;
    REID_RETURN_IF_ERROR(
        data::CheckReadable(name, *split, cfg.data().max_unreadable_fraction(), threads, &bad));
  }
  return d;
}

// With SIE every camera id of `split` must have a row of cv_embed.
Status CheckCameras(const InferenceModel& model, const std::vector<data::Sample>& split,
                    const std::string& what) {
  if (model->num_cameras() == 0) return Status::Ok();
  for (const data::Sample& s : split) {
    if (s.camid < 0 || s.camid >= model->num_cameras()) {
      return Status::InvalidArgument(what + ": camera " + std::to_string(s.camid) + " of " +
                                     s.path +
                                     " but the model's "
                                     "camera embedding (SIE) has " +
                                     std::to_string(model->num_cameras()) + " cameras");
    }
  }
  return Status::Ok();
}

// A checkpoint's model with its device, ready for feature extraction on this job.
struct LoadedModel {
  InferenceCheckpoint checkpoint;
  InferenceModel model{nullptr};
  torch::Device device = torch::kCPU;
};

StatusOr<LoadedModel> LoadModel(InferenceCheckpoint c, const Job& job) {
  LoadedModel m;
  REID_ASSIGN_OR_RETURN(m.device, DeviceFromFlag(job.ranks));
  REID_ASSIGN_OR_RETURN(m.model, BuildInferenceModel(c.tensors, c.config, c.path + "/model.pt"));
  m.model->to(m.device);
  if (job.ranks.rank == 0) {
    std::cout << "model of " << c.path << " (stage " << c.meta.stage() << ", epoch "
              << c.meta.epoch() << ", feature " << m.model->feature_dim() << "-d)\n";
  }
  m.checkpoint = std::move(c);
  m.checkpoint.tensors.clear();
  return m;
}

// Features of `split`, sharded over the job's ranks; NotFound-free: Internal when a signal
// stopped it.
StatusOr<torch::Tensor> Features(LoadedModel& m, Job& job, const std::vector<data::Sample>& split) {
  auto stop = [&](int64_t) { return dist::StopRequestedOnAnyRank(job.comm->host()); };
  torch::Tensor f = ExtractInferenceFeatures(m.model, m.checkpoint.config, split,
                                             m.checkpoint.config.eval().flip_feature(),
                                             job.comm.get(), m.device, stop);
  if (!f.defined()) return Status::Internal("stopped by a signal");
  return f;
}

int EvalCheckpoint(InferenceCheckpoint c, Job& job, bool rerank) {
  const int rank = job.ranks.rank;
  StatusOr<data::Dataset> d = LoadTestSplits(c.config);
  if (!d.ok()) return Fail("eval", d.status(), rank);
  StatusOr<LoadedModel> m = LoadModel(std::move(c), job);
  Status s = m.ok() ? CheckCameras(m->model, d->query, "query") : m.status();
  if (s.ok()) s = CheckCameras(m->model, d->gallery, "gallery");
  if (!s.ok()) return Fail("eval", s, rank);
  const proto::ReidConfig& cfg = m->checkpoint.config;
  const double start = Now();
  StatusOr<torch::Tensor> qf = Features(*m, job, d->query);
  StatusOr<torch::Tensor> gf = qf.ok() ? Features(*m, job, d->gallery) : qf.status();
  if (!gf.ok()) return Fail("eval", gf.status(), rank);
  if (rank == 0) std::cout << "extracted features in " << Now() - start << " s\n";
  StatusOr<std::unique_ptr<TopRequest>> grid = GridRequest(qf->size(0));
  if (!grid.ok()) return Fail("eval", grid.status(), rank);
  const double ranking_start = Now();
  StatusOr<EvalResult> r =
      RunEvaluation(MakeRankingInput(cfg.eval(), *qf, *gf, d->query, d->gallery), cfg.eval(),
                    rerank, job.comm.get(), grid->get());
  if (!r.ok()) return Fail("eval", r.status(), rank);
  s = Report(*r, rerank, Now() - ranking_start, rank);
  if (s.ok() && *grid && rank == 0) s = WriteGrid(**grid, d->query, d->gallery);
  return s.ok() ? kExitOk : Fail("eval", s, rank);
}

}  // namespace

int RunEval(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  const bool file_mode = !FLAGS_query_features.empty() || !FLAGS_gallery_features.empty() ||
                         !FLAGS_query_meta.empty() || !FLAGS_gallery_meta.empty();
  if (file_mode == !FLAGS_checkpoint.empty()) {
    return Fail("eval", Status::InvalidArgument(
                            "give either --checkpoint (optionally with --config, --set, "
                            "--dataset, --data_root) or --query_features, --gallery_features, "
                            "--query_meta and --gallery_meta"));
  }
  if (const Status s = CheckOutputFlags(); !s.ok()) return Fail("eval", s);
  if (file_mode) {
    StatusOr<proto::ReidConfig> cfg = LoadConfigFromFlags(set_overrides);
    if (!cfg.ok()) return Fail("eval", cfg.status());
    Job job(*cfg);
    return EvalFeatureFiles(*cfg, job, FLAGS_rerank || cfg->eval().rerank());
  }
  StatusOr<InferenceCheckpoint> c = OpenCheckpointFromFlags(set_overrides);
  if (!c.ok()) return Fail("eval", c.status());
  const bool rerank = FLAGS_rerank || c->config.eval().rerank();
  dist::InstallStopSignalHandlers();
  Job job(c->config);
  return EvalCheckpoint(std::move(*c), job, rerank);
}

int RunExtract(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  if (FLAGS_checkpoint.empty() || FLAGS_out.empty() ||
      (FLAGS_split != "query" && FLAGS_split != "gallery" && FLAGS_split != "train")) {
    return Fail("extract", Status::InvalidArgument(
                               "needs --checkpoint, --out=PREFIX and --split=query|gallery|train"));
  }
  StatusOr<InferenceCheckpoint> c = OpenCheckpointFromFlags(set_overrides);
  if (!c.ok()) return Fail("extract", c.status());
  const proto::ReidConfig cfg = c->config;
  if (cfg.data().root().empty()) {
    return Fail("extract", Status::InvalidArgument("no dataset: pass --data_root"));
  }
  StatusOr<data::Dataset> d =
      data::LoadDataset(data::DatasetKindFromConfig(cfg.data()), cfg.data().root());
  if (!d.ok()) return Fail("extract", d.status());
  dist::InstallStopSignalHandlers();
  Job job(cfg);
  const int rank = job.ranks.rank;
  const std::vector<data::Sample>& split =
      FLAGS_split == "query" ? d->query : (FLAGS_split == "gallery" ? d->gallery : d->train);
  StatusOr<LoadedModel> m = LoadModel(std::move(*c), job);
  Status s = m.ok() ? CheckCameras(m->model, split, FLAGS_split) : m.status();
  if (!s.ok()) return Fail("extract", s, rank);
  StatusOr<torch::Tensor> f = Features(*m, job, split);
  if (!f.ok()) return Fail("extract", f.status(), rank);
  if (rank != 0) return kExitOk;
  std::vector<formats::MetaRow> rows;
  for (const data::Sample& x : split) rows.push_back({x.path, x.pid, x.camid});
  s = formats::WriteFeatures(FLAGS_out + ".npy", *f);
  if (s.ok()) s = formats::WriteMetaCsv(FLAGS_out + ".csv", rows);
  if (!s.ok()) return Fail("extract", s, rank);
  std::cout << "wrote " << FLAGS_out << ".npy (" << f->size(0) << " x " << f->size(1) << ") and "
            << FLAGS_out << ".csv\n";
  return kExitOk;
}

}  // namespace reid::trainer
