// All-reduce benchmark, run under mpirun (2 ranks): bus bandwidth (nccl-tests' formula,
// busbw = S/t * 2(n-1)/n) of our MPI backend vs raw MPI_Allreduce on the same reused buffer,
// 4 KB..256 MB; then GradSync on a ViT-B/16-sized parameter set: step time with and without sync,
// communication alone, and the fraction of it hidden behind backward. --json: one JSON object whose
// `ratio` is the smallest ours/raw busbw ratio over the sizes from 1 MB up. Usage:
//   mpirun -np 2 bench_allreduce [--json] [--max_bytes=N] [--rows=N] [--steps=N] [--chunk_bytes=N]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_flags.h"
#include "proto/reid_config.pb.h"
#include "trainer/distributed/grad_sync.h"
#include "trainer/distributed/mpi_comm.h"

DEFINE_bool(json, false, "print one JSON object (with a `ratio` field) instead of a table");
DEFINE_int64(max_bytes, int64_t{256} << 20, "largest all-reduce size in bytes (from 4 KB up)");
DEFINE_int32(rows, 64, "rows of the GradSync step's activations");
DEFINE_int32(steps, 7, "GradSync steps per measurement");
DEFINE_int64(chunk_bytes, static_cast<int64_t>(reid::dist::MpiCommOptions().chunk_bytes),
             "the MPI backend's chunk size in bytes");

namespace {

using reid::dist::Communicator;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Each of `fns` run `rounds` times, interleaved (so a burst of load on this shared machine hits
// all of them alike), each call between barriers; returns per fn the best round's time of the
// slowest rank (load from other processes only ever adds time). One warm-up call each first.
std::vector<double> BestTimes(int rounds, const std::vector<std::function<void()>>& fns) {
  for (const auto& fn : fns) fn();
  std::vector<double> t(fns.size() * rounds);
  for (int r = 0; r < rounds; ++r) {
    for (size_t f = 0; f < fns.size(); ++f) {
      MPI_Barrier(MPI_COMM_WORLD);
      double start = Now();
      fns[f]();
      t[f * rounds + r] = Now() - start;
    }
  }
  MPI_Allreduce(MPI_IN_PLACE, t.data(), static_cast<int>(t.size()), MPI_DOUBLE, MPI_MAX,
                MPI_COMM_WORLD);
  std::vector<double> best;
  for (size_t f = 0; f < fns.size(); ++f) {
    best.push_back(*std::min_element(t.begin() + f * rounds, t.begin() + (f + 1) * rounds));
  }
  return best;
}

struct SizeResult {
  size_t bytes;
  double ours_busbw, raw_busbw;
};

std::vector<SizeResult> BenchSizes(reid::dist::RawComm& ours, size_t max_bytes) {
  const int n = ours.size();
  std::vector<SizeResult> out;
  for (size_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
    size_t count = bytes / 4;
    std::vector<float> buf(count, 1.0f);  // allocated once, reused by both
    // Each timed call is `reps` back-to-back all-reduces (the skew a barrier leaves between
    // ranks on a loaded 2-core machine would otherwise swamp small sizes).
    const int reps =
        static_cast<int>(std::max<size_t>(1, std::min<size_t>(200, (16u << 20) / bytes)));
    const int rounds = bytes >= (64u << 20) ? 5 : 9;
    std::vector<double> t =
        BestTimes(rounds, {[&] {
                             for (int i = 0; i < reps; ++i) {
                               ours.AllReduce(buf.data(), count, reid::dist::DType::kFloat32,
                                              reid::dist::ReduceOp::kSum)
                                   ->Wait();
                             }
                           },
                           [&] {
                             for (int i = 0; i < reps; ++i) {
                               MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(count),
                                             MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                             }
                           }});
    for (double& x : t) x /= reps;
    double t_ours = t[0], t_raw = t[1];
    double factor = 2.0 * (n - 1) / n / 1e9;
    out.push_back({bytes, bytes / t_ours * factor, bytes / t_raw * factor});
  }
  return out;
}

// Linear layers with ViT-B/16's parameter shapes (12 blocks of qkv, proj, fc1, fc2, 2 LayerNorms;
// patch embedding, class and position embeddings, final norm, projection): 86 M parameters.
struct VitShapedImpl : torch::nn::Module {
  VitShapedImpl() {
    patch = register_module("patch", torch::nn::Linear(768, 768));
    pos = register_parameter("pos", torch::randn({197, 768}) * 0.02);
    for (int b = 0; b < 12; ++b) {
      std::string p = "block" + std::to_string(b) + "_";
      ln1.push_back(register_module(p + "ln1", torch::nn::LayerNorm(std::vector<int64_t>{768})));
      qkv.push_back(register_module(p + "qkv", torch::nn::Linear(768, 2304)));
      proj.push_back(register_module(p + "proj", torch::nn::Linear(768, 768)));
      ln2.push_back(register_module(p + "ln2", torch::nn::LayerNorm(std::vector<int64_t>{768})));
      fc1.push_back(register_module(p + "fc1", torch::nn::Linear(768, 3072)));
      fc2.push_back(register_module(p + "fc2", torch::nn::Linear(3072, 768)));
    }
    head = register_module("head", torch::nn::Linear(768, 512));
  }
  torch::Tensor forward(torch::Tensor x) {  // (T, 768) tokens -> (T, 512)
    x = patch(x) + pos.mean(0);
    for (size_t b = 0; b < qkv.size(); ++b) {
      torch::Tensor q = qkv[b](ln1[b](x)).view({x.size(0), 3, 768}).sum(1);
      x = x + proj[b](q);
      x = x + fc2[b](torch::gelu(fc1[b](ln2[b](x))));
    }
    return head(x);
  }
  torch::nn::Linear patch{nullptr}, head{nullptr};
  torch::Tensor pos;
  std::vector<torch::nn::LayerNorm> ln1, ln2;
  std::vector<torch::nn::Linear> qkv, proj, fc1, fc2;
};
TORCH_MODULE(VitShaped);

struct SyncResult {
  int64_t params = 0, bytes = 0, buckets = 0;
  double step_nosync = 0, step_sync = 0, step_deferred = 0, comm_alone = 0, hidden = 0;
};

SyncResult BenchGradSync(Communicator& comm, int rows, int steps) {
  torch::manual_seed(0);
  VitShaped net;
  reid::dist::NamedTensors params;
  for (const auto& p : net->named_parameters()) params.emplace_back(p.key(), p.value());
  std::unique_ptr<reid::dist::GradSync> sync =
      reid::dist::GradSync::Create(
          comm, params, {}, reid::dist::GradSyncOptions::FromConfig(reid::proto::DistConfig()))
          .value();  // the schema's bucket sizes
  SyncResult r;
  for (const auto& p : params) r.params += p.second.numel();
  r.bytes = sync->total_bytes();
  r.buckets = static_cast<int64_t>(sync->buckets().size());
  torch::Tensor x = torch::randn({rows, 768});
  auto step = [&] {
    net->zero_grad(/*set_to_none=*/false);  // fresh 345 MB of gradients per step would page-fault
    net->forward(x).pow(2).mean().backward();
  };
  std::vector<torch::Tensor> flats;  // the same buckets, all-reduced with nothing else running
  for (const auto& bucket : sync->buckets()) {
    int64_t numel = 0;
    for (size_t i : bucket) numel += params[i].second.numel();
    flats.push_back(torch::ones({numel}));
  }
  std::vector<double> t =
      BestTimes(steps, {[&] {
                          sync->set_sync(false);
                          step();
                        },
                        [&] {
                          sync->set_sync(true);
                          sync->set_overlap(true);
                          step();
                        },
                        [&] {
                          sync->set_sync(true);
                          sync->set_overlap(false);
                          step();
                        },
                        [&] {
                          std::vector<std::shared_ptr<reid::dist::Work>> work;
                          for (auto& f : flats)
                            work.push_back(comm.AllReduceAsync(f, reid::dist::ReduceOp::kSum));
                          for (auto& w : work) w->Wait();
                        }});
  r.step_nosync = t[0];
  r.step_sync = t[1];
  r.step_deferred = t[2];
  r.comm_alone = t[3];
  double overhead = std::max(0.0, r.step_sync - r.step_nosync);
  r.hidden = std::max(0.0, 1.0 - overhead / r.comm_alone);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  reid::bench::ParseBenchFlags(
      "usage: mpirun -np 2 bench_allreduce [--json] [--max_bytes=N] [--rows=N] [--steps=N] "
      "[--chunk_bytes=N]",
      &argc, &argv);
  if (FLAGS_max_bytes <= 0 || FLAGS_rows <= 0 || FLAGS_steps <= 0 || FLAGS_chunk_bytes <= 0) {
    std::fprintf(stderr, "error: --max_bytes, --rows, --steps and --chunk_bytes must be > 0\n");
    return 2;
  }
  const bool json = FLAGS_json;
  const size_t max_bytes = static_cast<size_t>(FLAGS_max_bytes);
  const int rows = FLAGS_rows, steps = FLAGS_steps;
  reid::dist::MpiCommOptions options;
  options.chunk_bytes = static_cast<size_t>(FLAGS_chunk_bytes);
  reid::dist::Ranks ranks = reid::dist::InitRanks();
  if (!ranks.mpi) {
    std::fprintf(stderr,
                 "bench_allreduce: run it under mpirun (source scripts/mpi_env.sh; "
                 "mpirun -np 2 %s)\n",
                 argv[0]);
    return 2;
  }
  torch::set_num_threads(1);
  {  // every communicator is gone before MPI_Finalize
    auto raw =
        std::shared_ptr<reid::dist::RawComm>(reid::dist::MakeMpiComm(MPI_COMM_WORLD, options));
    Communicator comm(raw);
    std::vector<SizeResult> sizes = BenchSizes(*raw, max_bytes);
    SyncResult gs = BenchGradSync(comm, rows, steps);
    double ratio = 1e9;
    for (const auto& s : sizes) {
      if (s.bytes >= (1u << 20)) ratio = std::min(ratio, s.ours_busbw / s.raw_busbw);
    }
    if (ranks.rank == 0) {
      const char* tunables = std::getenv("GLIBC_TUNABLES");
      std::string settings =
          std::string("ranks ") + std::to_string(ranks.world_size) + ", btl " +
          (std::getenv("OMPI_MCA_btl") ? std::getenv("OMPI_MCA_btl") : "default") +
          ", GLIBC_TUNABLES " + (tunables ? tunables : "unset");
      if (json) {
        std::printf(
            "{\"bench\": \"allreduce\", \"reference\": \"raw MPI_Allreduce\", \"settings\": "
            "\"%s\", \"sizes\": [",
            settings.c_str());
        for (size_t i = 0; i < sizes.size(); ++i) {
          std::printf(
              "%s{\"bytes\": %zu, \"ours_busbw_gbs\": %.3f, \"raw_busbw_gbs\": %.3f, \"ratio\": "
              "%.3f}",
              i ? ", " : "", sizes[i].bytes, sizes[i].ours_busbw, sizes[i].raw_busbw,
              sizes[i].ours_busbw / sizes[i].raw_busbw);
        }
        std::printf(
            "], \"gradsync\": {\"params\": %lld, \"bytes\": %lld, \"buckets\": %lld, "
            "\"rows\": %d, \"step_nosync_s\": %.4f, \"step_sync_s\": %.4f, "
            "\"step_sync_deferred_s\": %.4f, \"comm_alone_s\": %.4f, \"hidden_fraction\": %.3f}, "
            "\"ratio\": %.3f}\n",
            static_cast<long long>(gs.params), static_cast<long long>(gs.bytes),
            static_cast<long long>(gs.buckets), rows, gs.step_nosync, gs.step_sync,
            gs.step_deferred, gs.comm_alone, gs.hidden, ratio);
      } else {
        std::printf("all-reduce bus bandwidth (GB/s), %s\n%12s %10s %10s %8s\n", settings.c_str(),
                    "bytes", "ours", "raw MPI", "ratio");
        for (const auto& s : sizes) {
          std::printf("%12zu %10.3f %10.3f %8.2f\n", s.bytes, s.ours_busbw, s.raw_busbw,
                      s.ours_busbw / s.raw_busbw);
        }
        std::printf(
            "GradSync, ViT-B/16-sized: %lld params (%.0f MB) in %lld buckets, %d rows\n"
            "  step without sync %.3f s, with sync %.3f s (all-reduces after backward: "
            "%.3f s), communication alone %.3f s, hidden by overlap %.0f%%\n",
            static_cast<long long>(gs.params), gs.bytes / 1e6, static_cast<long long>(gs.buckets),
            rows, gs.step_nosync, gs.step_sync, gs.step_deferred, gs.comm_alone, 100 * gs.hidden);
        std::printf("ratio (smallest ours/raw busbw from 1 MB up): %.3f\n", ratio);
      }
    }
    comm.Barrier();
  }
  reid::dist::FinalizeRanks();
  return 0;
}
