// Synthetic person re-id dataset in the Market-1501 layout: identity-specific clothing colours
// and patterns under camera-specific light and colour cast, pose shift and scale, occluders and
// noise, so identities are learnable but not trivially. Deterministic from the seed.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "data/image.h"

namespace reid::data {

// Built by SynthOptionsFromConfig (data/options.h) from data.synthetic, whose validation in
// proto/config.cc is the one source of the ranges.
struct SynthOptions {
  int ids = 0;            // identities in train and (other ones) in test: 2..4999
  int cameras = 0;        // 2..9 (Market-1501 names cameras with one digit)
  int images_per_id = 0;  // per identity and split: 2..1000
  uint64_t seed = 0;
  int height = 0;  // 32..4096
  int width = 0;   // 16..4096
  int threads = 2;
};

struct SynthSummary {
  int64_t train_images = 0, query_images = 0, gallery_images = 0, distractors = 0, junk = 0;
};

// OK if the options meet the generator's preconditions, else InvalidArgument (the config
// validation in proto/config.cc is what users see).
Status ValidateSynthOptions(const SynthOptions& opt);

// Writes out_dir/{bounding_box_train,query,bounding_box_test}/<pid>_c<cam>s1_<n>_00.jpg, with
// <cam> = 1..C in the names (one digit, as Market-1501's) for the 0-based cameras 0..C-1.
// Train uses pids 1..ids, test pids ids+1..2*ids; each test identity has one query image (on
// camera (id mod C)) and images_per_id - 1 gallery images on other cameras first; the gallery
// also holds ids/2 distractors (pid 0) and a few junk images (pid -1). Returns what it wrote, or
// InvalidArgument for options out of range and Internal when a folder or file cannot be written
// (the message names it).
StatusOr<SynthSummary> GenerateSynthetic(const SynthOptions& opt, const std::string& out_dir);

// One rendered image of identity `pid` seen by camera `cam` (0-based), variant `n` (exposed for
// tests).
Image RenderPerson(const SynthOptions& opt, int pid, int cam, int n);

}  // namespace reid::data
