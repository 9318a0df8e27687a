// `reid synth`: writes the synthetic Market-1501-layout dataset (data/synth.h) to --out.
#include <gflags/gflags.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "data/synth.h"
#include "trainer/commands.h"

DEFINE_string(out, "", "Output folder of the synthetic dataset (created)");
DEFINE_int32(ids, 64, "Identities in train (and as many other ones in query/gallery)");
DEFINE_int32(cameras, 4, "Cameras, 2..9");
DEFINE_int32(images_per_id, 8, "Images per identity and split");
DEFINE_uint64(seed, 7, "Generator seed: the same seed writes the same files");
DEFINE_int32(height, 128, "Image height (pixels)");
DEFINE_int32(width, 64, "Image width (pixels)");

namespace reid::trainer {

int RunSynth(int /*argc*/, char** /*argv*/) {
  if (FLAGS_out.empty()) {
    std::cerr << "error: --out is required\n";
    return kExitUsage;
  }
  data::SynthOptions opt;
  opt.ids = FLAGS_ids;
  opt.cameras = FLAGS_cameras;
  opt.images_per_id = FLAGS_images_per_id;
  opt.seed = FLAGS_seed;
  opt.height = FLAGS_height;
  opt.width = FLAGS_width;
  opt.threads = std::max(1u, std::thread::hardware_concurrency());
  std::string err = data::ValidateSynthOptions(opt);
  if (!err.empty()) {
    std::cerr << "error: " << err << "\n";
    return kExitUsage;
  }
  const auto start = std::chrono::steady_clock::now();
  data::SynthSummary s;
  err = data::GenerateSynthetic(opt, FLAGS_out, &s);
  if (!err.empty()) {
    std::cerr << "error: " << err << "\n";
    return kExitFailure;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t total = s.train_images + s.query_images + s.gallery_images + s.distractors + s.junk;
  std::cout << "wrote " << total << " JPEGs (" << opt.height << "x" << opt.width << ") to "
            << FLAGS_out << ": train " << s.train_images << ", query " << s.query_images
            << ", gallery " << s.gallery_images << " + " << s.distractors << " distractors + "
            << s.junk << " junk, in " << secs << " s\n";
  return kExitOk;
}

}  // namespace reid::trainer
