// Config -> data pipeline options.
#include "data/options.h"

#include <glog/logging.h>

#include "proto/config.h"

namespace reid::data {

DatasetKind DatasetKindFromConfig(const proto::DataConfig& data) {
  switch (data.dataset()) {
    case proto::DataConfig::DUKEMTMCREID:
      return DatasetKind::kDukeMtmc;
    case proto::DataConfig::MSMT17:
      return DatasetKind::kMsmt17;
    case proto::DataConfig::CSV:
      return DatasetKind::kCsv;
    default:  // MARKET1501, SYNTHETIC
      return DatasetKind::kMarket1501;
  }
}

TransformOptions TransformOptionsFromConfig(const proto::InputConfig& config_input, bool train) {
  // Empty pixel lists mean the schema's documented values, which FillListDefaults owns (a loaded
  // config has them filled already).
  proto::ReidConfig filled;
  *filled.mutable_input() = config_input;
  config::FillListDefaults(&filled);
  const proto::InputConfig& input = filled.input();
  TransformOptions t;
  const proto::ImageSize& size = train ? input.size_train() : input.size_test();
  t.height = size.height();
  t.width = size.width();
  t.train = train;
  t.flip_prob = input.flip_prob();
  t.padding = input.padding();
  t.erasing_prob = input.erasing_prob();
  CHECK(input.pixel_mean_size() == 3 && input.pixel_std_size() == 3)
      << "input.pixel_mean / pixel_std: config validation admits 3 values only";
  for (int c = 0; c < 3; ++c) {
    t.mean[c] = input.pixel_mean(c);
    t.std[c] = input.pixel_std(c);
  }
  t.dct_scaling = input.jpeg_dct_scaling();
  return t;
}

LoaderOptions LoaderOptionsFromConfig(const proto::ReidConfig& cfg) {
  LoaderOptions o;
  o.num_workers = cfg.data().num_workers();
  o.prefetch_batches = cfg.data().prefetch_batches();
  o.cache_budget_bytes = cfg.data().cache_budget_mb() << 20;
  o.seed = cfg.seed();
  return o;
}

SynthOptions SynthOptionsFromConfig(const proto::DataConfig& data) {
  const proto::SyntheticDataConfig& c = data.synthetic();
  SynthOptions o;
  o.ids = c.ids();
  o.cameras = c.cameras();
  o.images_per_id = c.images_per_id();
  o.seed = c.seed();
  o.height = c.height();
  o.width = c.width();
  return o;
}

}  // namespace reid::data
