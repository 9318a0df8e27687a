// The data pipeline's options built from the config schema: its defaults and fields, no second
// source of values.
#include "data/options.h"

#include <gtest/gtest.h>

namespace reid::data {
namespace {

TEST(Options, FromConfigUseTheSchemaValues) {
  proto::ReidConfig cfg;
  cfg.mutable_input()->mutable_size_test()->set_height(384);
  cfg.mutable_data()->set_cache_budget_mb(3);
  cfg.mutable_data()->set_dataset(proto::DataConfig::SYNTHETIC);
  const TransformOptions train = TransformOptionsFromConfig(cfg.input(), true);
  const TransformOptions test = TransformOptionsFromConfig(cfg.input(), false);
  EXPECT_TRUE(train.train);
  EXPECT_EQ(train.height, 256);
  EXPECT_EQ(train.width, 128);
  EXPECT_EQ(train.padding, 10);
  EXPECT_FLOAT_EQ(train.erasing_prob, 0.5f);
  EXPECT_FLOAT_EQ(train.mean[2], 0.5f);
  EXPECT_FALSE(test.train);
  EXPECT_EQ(test.height, 384);
  EXPECT_EQ(LoaderOptionsFromConfig(cfg).cache_budget_bytes, 3 << 20);
  EXPECT_EQ(LoaderOptionsFromConfig(cfg).seed, 1234u);
  EXPECT_EQ(DatasetKindFromConfig(cfg.data()), DatasetKind::kMarket1501);
  EXPECT_EQ(SynthOptionsFromConfig(cfg.data()).ids, 64);
  EXPECT_EQ(SynthOptionsFromConfig(cfg.data()).width, 64);
}

// Every loader and transform value comes from the config: the schema's defaults when unset (the
// structs restate none; LoaderOptions once said 2 decode threads where the schema says 8), the
// config's values when set.
TEST(Options, EveryValueFollowsTheConfig) {
  const proto::ReidConfig defaults;
  const LoaderOptions lo = LoaderOptionsFromConfig(defaults);
  EXPECT_EQ(lo.num_workers, defaults.data().num_workers());
  EXPECT_EQ(lo.num_workers, 8);
  EXPECT_EQ(lo.prefetch_batches, defaults.data().prefetch_batches());
  EXPECT_EQ(lo.cache_budget_bytes, 0);
  EXPECT_EQ(lo.seed, defaults.seed());
  const TransformOptions t = TransformOptionsFromConfig(defaults.input(), true);
  EXPECT_FLOAT_EQ(t.flip_prob, defaults.input().flip_prob());
  EXPECT_TRUE(t.dct_scaling);
  EXPECT_FLOAT_EQ(t.std[0], 0.5f);  // the schema's "empty = 0.5" for the pixel lists

  proto::ReidConfig cfg;
  cfg.set_seed(99);
  cfg.mutable_data()->set_num_workers(3);
  cfg.mutable_data()->set_prefetch_batches(5);
  cfg.mutable_input()->set_flip_prob(0.25f);
  cfg.mutable_input()->set_padding(2);
  cfg.mutable_input()->set_erasing_prob(0.75f);
  cfg.mutable_input()->set_jpeg_dct_scaling(false);
  cfg.mutable_input()->mutable_size_train()->set_width(96);
  for (float m : {0.1f, 0.2f, 0.3f}) cfg.mutable_input()->add_pixel_mean(m);
  for (float s : {0.4f, 0.5f, 0.6f}) cfg.mutable_input()->add_pixel_std(s);
  const LoaderOptions set = LoaderOptionsFromConfig(cfg);
  EXPECT_EQ(set.num_workers, 3);
  EXPECT_EQ(set.prefetch_batches, 5);
  EXPECT_EQ(set.seed, 99u);
  const TransformOptions train = TransformOptionsFromConfig(cfg.input(), true);
  EXPECT_EQ(train.width, 96);
  EXPECT_FLOAT_EQ(train.flip_prob, 0.25f);
  EXPECT_EQ(train.padding, 2);
  EXPECT_FLOAT_EQ(train.erasing_prob, 0.75f);
  EXPECT_FALSE(train.dct_scaling);
  EXPECT_FLOAT_EQ(train.mean[2], 0.3f);
  EXPECT_FLOAT_EQ(train.std[0], 0.4f);
}

}  // namespace
}  // namespace reid::data
