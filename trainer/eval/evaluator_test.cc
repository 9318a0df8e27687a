// The evaluation protocol against the test vector of docs/design.md 10.1 and a
// brute-force re-statement of eval_func on random data.
#include "trainer/eval/evaluator.h"

#include <ATen/Parallel.h>
#include <dirent.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "trainer/eval/eval_run.h"
#include "trainer/eval/rerank.h"

namespace reid::trainer {
namespace {

// The reference's distmat, realised by features: q_i = e_i and g_j with q_i . g_j = -d_ij / 2 and
// equal norms (a 4th coordinate), so |q_i - g_j|^2 = const + d_ij ranks as the distmat does.
TEST(EvaluatorTest, ReferenceTestVector) {
  const std::vector<std::vector<float>> distmat = {{.4f, .1f, .2f, .9f, .3f, .7f},
                                                   {.8f, .2f, .4f, .1f, .6f, .3f},
                                                   {.5f, .4f, .3f, .2f, .1f, .6f}};
  torch::Tensor q = torch::eye(3);
  torch::Tensor g = torch::zeros({6, 3});
  for (int j = 0; j < 6; ++j) {
    for (int i = 0; i < 3; ++i) g[j][i] = -distmat[i][j] / 2.0f;
  }
  torch::Tensor norms = g.pow(2).sum(1);
  torch::Tensor extra = (norms.max() - norms + 1e-3).sqrt().unsqueeze(1);
  RankingInput in = RankingInputFromConfig(proto::EvalConfig());  // schema defaults
  in.query = torch::cat({q, torch::zeros({3, 1})}, 1);
  in.gallery = torch::cat({g, extra}, 1);
  in.q_pids = {1, 2, 3};
  in.q_cams = {0, 0, 1};
  in.g_pids = {1, 2, 1, 2, 3, 1};
  in.g_cams = {0, 1, 1, 0, 1, 2};
  in.max_rank = 5;
  in.feat_norm = false;
  EvalResult r = EvaluateRanking(in, nullptr);
  ASSERT_EQ(r.cmc.size(), 5u);
  EXPECT_NEAR(r.cmc[0], 0.5, 1e-9);
  for (int k = 1; k < 5; ++k) EXPECT_NEAR(r.cmc[k], 1.0, 1e-9);
  EXPECT_NEAR(r.mAP, 0.75, 1e-9);
  EXPECT_EQ(r.num_valid_queries, 2);
}

// eval_func re-stated plainly: full sort, drop junk, AP and CMC.
EvalResult BruteForce(const RankingInput& in) {
  torch::Tensor q = in.feat_norm ? torch::nn::functional::normalize(in.query) : in.query;
  torch::Tensor g = in.feat_norm ? torch::nn::functional::normalize(in.gallery) : in.gallery;
  torch::Tensor d = (q.unsqueeze(1) - g.unsqueeze(0)).pow(2).sum(2);  // (Q, G), exact for integers
  const int64_t ng = g.size(0);
  const int max_rank = std::min<int64_t>(in.max_rank, ng);
  EvalResult r;
  r.cmc.assign(max_rank, 0);
  double ap_sum = 0;
  for (int64_t i = 0; i < q.size(0); ++i) {
    std::vector<int64_t> order(ng);
    std::iota(order.begin(), order.end(), 0);
    auto row = d[i];
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return row[a].item<float>() < row[b].item<float>();
    });
    std::vector<int> matches;
    for (int64_t j : order) {
      if (in.g_pids[j] == in.q_pids[i] && in.g_cams[j] == in.q_cams[i]) continue;
      matches.push_back(in.g_pids[j] == in.q_pids[i]);
    }
    int hits = 0;
    double prec = 0;
    int first = -1;
    for (size_t k = 0; k < matches.size(); ++k) {
      if (!matches[k]) continue;
      ++hits;
      if (first < 0) first = static_cast<int>(k);
      prec += static_cast<double>(hits) / (k + 1);
    }
    if (hits == 0) continue;
    ++r.num_valid_queries;
    ap_sum += prec / hits;
    for (int k = first; k < max_rank; ++k) r.cmc[k] += 1;
  }
  r.mAP = ap_sum / r.num_valid_queries;
  for (double& c : r.cmc) c /= r.num_valid_queries;
  return r;
}

TEST(EvaluatorTest, MatchesBruteForceAndIgnoresChunking) {
  torch::manual_seed(11);
  RankingInput in = RankingInputFromConfig(proto::EvalConfig());  // schema defaults
  in.query = torch::randn({37, 8});
  in.gallery = torch::randn({90, 8});
  for (int i = 0; i < 37; ++i) {
    in.q_pids.push_back(i % 9);
    in.q_cams.push_back(i % 3);
  }
  for (int j = 0; j < 90; ++j) {
    in.g_pids.push_back(j % 11);
    in.g_cams.push_back(j % 4);
  }
  in.max_rank = 20;
  const EvalResult want = BruteForce(in);
  // Blocks of 1, 5 or all queries; tiles of 7, 16 or all gallery items (each identity's items
  // then spread over several tiles); the gallery put in order once or a tile at a time (the same
  // bits either way).
  for (int64_t ordered_max : {int64_t{-1}, int64_t{0}}) {
    in.ordered_gallery_max_bytes = ordered_max;
    for (int64_t chunk : {1, 5, 1024}) {
      for (int64_t tile : {7, 16, 0}) {
        in.chunk_rows = chunk;
        in.tile_cols = tile;
        const EvalResult got = EvaluateRanking(in, nullptr);
        EXPECT_EQ(got.num_valid_queries, want.num_valid_queries);
        EXPECT_NEAR(got.mAP, want.mAP, 1e-12) << chunk << " " << tile << " " << ordered_max;
        ASSERT_EQ(got.cmc.size(), want.cmc.size());
        for (size_t k = 0; k < got.cmc.size(); ++k) EXPECT_NEAR(got.cmc[k], want.cmc[k], 1e-12);
        in.ordered_gallery_max_bytes = 0;
        const EvalResult tiled = EvaluateRanking(in, nullptr);
        in.ordered_gallery_max_bytes = ordered_max;
        EXPECT_EQ(tiled.mAP, got.mAP);
        EXPECT_EQ(tiled.cmc, got.cmc);
      }
    }
  }
  in.ordered_gallery_max_bytes = -1;
  // The same bits on 1 and 3 threads (tiles taken in any order).
  in.chunk_rows = 5;
  in.tile_cols = 7;
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const EvalResult one = EvaluateRanking(in, nullptr);
  at::set_num_threads(3);
  const EvalResult three = EvaluateRanking(in, nullptr);
  at::set_num_threads(threads);
  EXPECT_EQ(one.mAP, three.mAP);
  EXPECT_EQ(one.cmc, three.cmc);
  // Shards summed in any split give the same sums as the whole.
  RankingSums whole = RankQueries(in, 0, 37), a = RankQueries(in, 0, 20),
              b = RankQueries(in, 20, 37);
  EXPECT_EQ(whole.valid, a.valid + b.valid);
  EXPECT_NEAR(whole.ap_sum, a.ap_sum + b.ap_sum, 1e-12);
}

// Exact ties in distance (duplicated gallery features, coarse values) rank by gallery index, as
// the brute force does, whatever the chunking; per-query AP sums do not depend on the split.
TEST(EvaluatorTest, TiesRankByGalleryIndex) {
  torch::manual_seed(5);
  RankingInput in = RankingInputFromConfig(proto::EvalConfig());  // schema defaults
  in.query = torch::randint(0, 3, {23, 4}).to(torch::kFloat32) + 1;
  torch::Tensor g = torch::randint(0, 3, {30, 4}).to(torch::kFloat32) + 1;
  in.gallery = torch::cat({g, g.slice(0, 0, 10)});
  for (int i = 0; i < 23; ++i) {
    in.q_pids.push_back(i % 5);
    in.q_cams.push_back(i % 2);
  }
  for (int j = 0; j < 40; ++j) {
    in.g_pids.push_back(j % 7);
    in.g_cams.push_back(j % 3);
  }
  in.max_rank = 10;
  in.feat_norm = false;  // integer features: every distance exact, ties exact
  const EvalResult want = BruteForce(in);
  for (int64_t chunk : {1, 7}) {
    for (int64_t tile : {3, 8, 0}) {
      in.chunk_rows = chunk;
      in.tile_cols = tile;
      const EvalResult got = EvaluateRanking(in, nullptr);
      EXPECT_EQ(got.num_valid_queries, want.num_valid_queries);
      EXPECT_NEAR(got.mAP, want.mAP, 1e-12) << chunk << " " << tile;
      for (size_t k = 0; k < got.cmc.size(); ++k) EXPECT_NEAR(got.cmc[k], want.cmc[k], 1e-12);
    }
  }
}

// Identities and cameras of a small tied case: 6 queries, 20 gallery items.
RankingInput TiedCase(torch::Tensor query, torch::Tensor gallery) {
  RankingInput in = RankingInputFromConfig(proto::EvalConfig());  // schema defaults
  in.query = std::move(query);
  in.gallery = std::move(gallery);
  for (int i = 0; i < in.query.size(0); ++i) {
    in.q_pids.push_back(i % 3);
    in.q_cams.push_back(0);
  }
  for (int j = 0; j < in.gallery.size(0); ++j) {
    in.g_pids.push_back(j % 4);
    in.g_cams.push_back(1 + j % 2);
  }
  in.max_rank = 10;
  return in;
}

// NaN distances rank last (numpy's argsort order), so AP stays in [0, 1]: a row of NaN is a row
// of ties in gallery order. Compared as NaN, every match counted as ranked first before (mAP 3).
TEST(EvaluatorTest, NanDistancesRankLast) {
  RankingInput in = TiedCase(torch::ones({6, 4}), torch::ones({20, 4}));
  const EvalResult ties = EvaluateRanking(in, nullptr);
  in.distance_rows = [](int64_t begin, int64_t end) {
    return torch::full({end - begin, 20}, NAN, torch::kFloat32);
  };
  const EvalResult nan = EvaluateRanking(in, nullptr);
  EXPECT_GE(nan.mAP, 0.0);
  EXPECT_LE(nan.mAP, 1.0);
  EXPECT_NEAR(nan.mAP, ties.mAP, 1e-12);
  // One NaN in a row: that item goes after every finite one.
  in.distance_rows = [](int64_t begin, int64_t end) {
    torch::Tensor d = torch::arange(20, torch::kFloat32).repeat({end - begin, 1});
    d.select(1, 0).fill_(NAN);  // item 0 (pid 0) ranks last, not first
    return d;
  };
  in.q_pids = {0, 0, 0, 0, 0, 0};
  const EvalResult one = EvaluateRanking(in, nullptr);
  EXPECT_EQ(one.cmc[0], 0.0);  // items 1, 2, 3 are other pids; item 4 is the first match
  EXPECT_LE(one.mAP, 1.0);
}

// A query of NaN features (every distance NaN) ranks the gallery in index order in the tiles too,
// as given NaN distances do.
TEST(EvaluatorTest, NanFeaturesRankInIndexOrder) {
  torch::manual_seed(2);
  RankingInput in = TiedCase(torch::randn({6, 4}), torch::randn({20, 4}));
  in.query[2].fill_(NAN);
  in.tile_cols = 6;
  const std::vector<QueryRanking> tiled = RankEachQuery(in, 0, 6);
  in.distance_rows = [](int64_t begin, int64_t end) {
    return torch::full({end - begin, 20}, NAN, torch::kFloat32);
  };
  const std::vector<QueryRanking> given = RankEachQuery(in, 2, 3);
  EXPECT_EQ(tiled[2].ap, given[0].ap);
  EXPECT_EQ(tiled[2].first_hit, given[0].first_hit);
  EXPECT_GE(tiled[2].ap, 0.0);
  EXPECT_LE(tiled[2].ap, 1.0);
}

// Re-ranking with every feature identical: every distance is 0, so the reference's scaling by the
// row maximum was 0/0 (NaN) and the mAP came out at 300%. Now each row is a row of ties: the
// re-ranked result equals the plain one, which ranks ties by gallery index.
TEST(EvaluatorTest, RerankingOfIdenticalFeaturesIsARowOfTies) {
  // A one-hot row stays exact through the normalisation (every distance exactly 0), as does an
  // all-zero row (a dead model's output); a random row leaves equal rounding in every distance.
  torch::manual_seed(3);
  torch::Tensor one_hot = torch::zeros({1, 16});
  one_hot[0][3] = 2;
  for (const torch::Tensor& f : {one_hot, torch::zeros({1, 16}), torch::randn({1, 16})}) {
    RankingInput in = TiedCase(f.repeat({6, 1}), f.repeat({20, 1}));
    const EvalResult plain = EvaluateRanking(in, nullptr);
    for (int k2 : {1, 3}) {
      RerankOptions o = RerankOptionsFromConfig(proto::EvalConfig());  // schema defaults
      o.k1 = 5;
      o.k2 = k2;
      std::shared_ptr<Reranker> r(Reranker::Build(in.query, in.gallery, true, o, nullptr));
      const torch::Tensor d = r->DistanceRows(0, 6);
      EXPECT_TRUE(torch::isfinite(d).all().item<bool>()) << d;
      RankingInput re = in;
      re.distance_rows = [r](int64_t begin, int64_t end) { return r->DistanceRows(begin, end); };
      const EvalResult got = EvaluateRanking(re, nullptr);
      EXPECT_GE(got.mAP, 0.0);
      EXPECT_LE(got.mAP, 1.0);
      EXPECT_NEAR(got.mAP, plain.mAP, 1e-12) << "k2 " << k2 << "\n" << f;
      for (size_t k = 0; k < got.cmc.size(); ++k) EXPECT_NEAR(got.cmc[k], plain.cmc[k], 1e-12);
    }
  }
}

// The neighbour search's tiles (one, or many: each pair met once, in a tile above the diagonal)
// and the threads give the same re-ranked distances, bit for bit.
TEST(EvaluatorTest, RerankingIgnoresSearchTilesAndThreads) {
  torch::manual_seed(9);
  const torch::Tensor q = torch::randn({23, 12}), g = torch::randn({61, 12});
  // Coarse copies: exact ties between items, broken by index in every list.
  const torch::Tensor qt = q.round();
  const torch::Tensor gt = torch::cat({g.slice(0, 0, 30), g.slice(0, 0, 31)}).round();
  for (const auto& [query, gallery] : {std::pair{q, g}, std::pair{qt, gt}}) {
    RerankOptions o;
    o.k1 = 6;
    o.k2 = 3;
    const auto distances = [&] {
      return Reranker::Build(query, gallery, true, o, nullptr)->DistanceRows(0, 23).clone();
    };
    const torch::Tensor whole = distances();
    const int threads = at::get_num_threads();
    for (int64_t tile : {5, 16, 84}) {
      for (int t : {1, 3}) {
        at::set_num_threads(t);
        o.search_tile = tile;
        EXPECT_TRUE(torch::equal(distances(), whole)) << "tile " << tile << ", " << t << " threads";
      }
    }
    at::set_num_threads(threads);
  }
}

// A query that is a copy of a gallery item has the same expanded neighbourhood (k2 6) as it: the
// Jaccard distance is 0 up to the fp16 sums, which can pass 1 and make it slightly negative; that
// is still the pair's term (not "no shared neighbour", 1), so the re-ranked distance stays near 0
// (the reference's re_ranking gives at most 0.0041 on these features).
TEST(EvaluatorTest, RerankedCopiesStayClose) {
  torch::manual_seed(4);
  const torch::Tensor g = torch::randn({400, 24});
  const torch::Tensor q = g.slice(0, 0, 200);
  const auto reranker =
      Reranker::Build(q, g, true, RerankOptionsFromConfig(proto::EvalConfig()), nullptr);
  const torch::Tensor d = reranker->DistanceRows(0, 200);
  EXPECT_LT(d.diagonal().abs().max().item<float>(), 0.01f);
}

TEST(EvaluatorTest, SmallGalleryShortensCmcAndJsonHasTheKeys) {
  RankingInput in = RankingInputFromConfig(proto::EvalConfig());  // schema defaults
  in.query = torch::eye(2);
  in.gallery = torch::eye(2);
  in.q_pids = {1, 2};
  in.q_cams = {0, 0};
  in.g_pids = {1, 2};
  in.g_cams = {1, 1};
  EvalResult r = EvaluateRanking(in, nullptr);
  EXPECT_EQ(r.cmc.size(), 2u);
  EXPECT_DOUBLE_EQ(r.mAP, 1.0);
  const std::string json = EvalResultJson(r, "\"stage\":2");
  for (const char* key : {"\"mAP\":1", "\"cmc\":[1,1]", "\"num_valid_queries\":2", "\"stage\":2"}) {
    EXPECT_NE(json.find(key), std::string::npos) << json;
  }
}

TEST(EvaluatorTest, HugePageBlocksAreKeptForTheNextRequest) {
  ReleaseKeptHugePages();  // what earlier tests left
  const size_t before = KeptHugePageBytes();
  ASSERT_EQ(before, 0u);
  constexpr size_t kMiB = size_t{1} << 20;
  void* first = nullptr;
  {
    const torch::Tensor t = HugePageEmpty({5 << 18});  // 5 MiB: a 6 MiB block
    first = t.data_ptr();
    t.fill_(1.0f);
  }
  EXPECT_EQ(KeptHugePageBytes(), before + 6 * kMiB);
  {
    const torch::Tensor small = HugePageEmpty({1 << 18});  // 1 MiB: 6 MiB is over twice 2 MiB
    EXPECT_NE(small.data_ptr(), first);
    const torch::Tensor same = HugePageEmpty({11 << 17});  // 5.5 MiB: takes it
    EXPECT_EQ(same.data_ptr(), first);
    EXPECT_EQ(same.numel(), 11 << 17);
    EXPECT_EQ(KeptHugePageBytes(), before);
  }
  EXPECT_EQ(KeptHugePageBytes(), before + 8 * kMiB);  // and the small one's fresh 2 MiB block
  // A block larger than what is kept in all goes back to the system.
  { const torch::Tensor big = HugePageEmpty({static_cast<int64_t>(kKeptHugePageBytes / 4 + 1)}); }
  EXPECT_EQ(KeptHugePageBytes(), before + 8 * kMiB);
  ReleaseKeptHugePages();
  EXPECT_EQ(KeptHugePageBytes(), 0u);
}

int ThreadsOfThisProcess() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (const dirent* e = readdir(dir)) n += e->d_name[0] != '.';
  closedir(dir);
  return n;
}

TEST(EvaluatorTest, OneBlasThreadEndsOpenBlasWorkersAndTheyComeBack) {
  if (dlsym(RTLD_DEFAULT, "blas_thread_shutdown_") == nullptr ||
      dlsym(RTLD_DEFAULT, "openblas_set_num_threads") == nullptr) {
    GTEST_SKIP() << "the BLAS behind LibTorch is not OpenBLAS (pthreads)";
  }
  at::parallel_for(0, 2, 1, [](int64_t, int64_t) {});  // the intra-op threads exist before counting
  torch::manual_seed(3);
  const torch::Tensor a = torch::randn({384, 256}), b = torch::randn({256, 320});
  torch::Tensor expected;
  {
    const ScopedBlasThreads one(1);
    expected = torch::mm(a, b);
  }
  int with_workers = 0;
  {
    const ScopedBlasThreads two(2);
    EXPECT_TRUE(torch::equal(torch::mm(a, b), expected));  // OpenBLAS splits rows, not depth
    with_workers = ThreadsOfThisProcess();
    {
      const ScopedBlasThreads one(1);
      EXPECT_LT(ThreadsOfThisProcess(), with_workers);  // the workers ended
      EXPECT_TRUE(torch::equal(torch::mm(a, b), expected));
    }
    EXPECT_TRUE(torch::equal(torch::mm(a, b), expected));  // started again
    EXPECT_EQ(ThreadsOfThisProcess(), with_workers);
  }
}

}  // namespace
}  // namespace reid::trainer
