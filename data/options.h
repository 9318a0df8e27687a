// The data pipeline's options from the config schema (proto/reid_config.proto): dataset kind,
// transforms (train and test) and loader settings. These builders are how the option structs get
// their values: the structs restate none of the schema's defaults.
#pragma once

#include "data/dataset.h"
#include "data/loader.h"
#include "data/synth.h"
#include "data/transforms.h"
#include "proto/reid_config.pb.h"

namespace reid::data {

// SYNTHETIC datasets use the Market-1501 layout that `reid synth` writes.
DatasetKind DatasetKindFromConfig(const proto::DataConfig& data);

// Train (input.size_train, bicubic, augmentation) or test (input.size_test, bilinear) transforms.
// Empty pixel_mean / pixel_std lists take the schema's documented values (config::FillListDefaults).
TransformOptions TransformOptionsFromConfig(const proto::InputConfig& input, bool train);

// Workers, prefetch, cache budget (MiB -> bytes) and the run's seed.
LoaderOptions LoaderOptionsFromConfig(const proto::ReidConfig& cfg);

// data.synthetic (what `reid synth` takes as flags).
SynthOptions SynthOptionsFromConfig(const proto::DataConfig& data);

}  // namespace reid::data
