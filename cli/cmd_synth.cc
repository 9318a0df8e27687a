// `reid synth`: writes the synthetic Market-1501-layout dataset (data/synth.h) to --output_dir. Its
// values are the config's data.synthetic block; the flags --ids ... --width are shortcuts written
// into those fields and validated by the config's own validator (same rules, same messages).
#include <gflags/gflags.h>
#include <sys/stat.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "data/options.h"
#include "data/synth.h"
#include "proto/config.h"
#include "cli/commands.h"
#include "cli/config_flags.h"

DECLARE_string(output_dir);
DEFINE_int32(ids, 64, "Shortcut for data.synthetic.ids: identities in train (and as many in test)");
DEFINE_int32(cameras, 4, "Shortcut for data.synthetic.cameras: cameras, 2..9");
DEFINE_int32(images_per_id, 8, "Shortcut for data.synthetic.images_per_id");
DEFINE_uint64(seed, 7, "Shortcut for data.synthetic.seed: the same seed writes the same files");
DEFINE_int32(height, 128, "Shortcut for data.synthetic.height (pixels)");
DEFINE_int32(width, 64, "Shortcut for data.synthetic.width (pixels)");

namespace reid::trainer {
namespace {

bool Given(const char* flag) {
  gflags::CommandLineFlagInfo info;
  return gflags::GetCommandLineFlagInfo(flag, &info) && !info.is_default;
}

// The flags given on the command line, as a --set override of data.synthetic.
std::string FlagsAsOverride() {
  std::string text;
  auto add = [&](const char* flag, const std::string& value) {
    if (Given(flag)) text += std::string(" ") + flag + ": " + value;
  };
  add("ids", std::to_string(FLAGS_ids));
  add("cameras", std::to_string(FLAGS_cameras));
  add("images_per_id", std::to_string(FLAGS_images_per_id));
  add("seed", std::to_string(FLAGS_seed));
  add("height", std::to_string(FLAGS_height));
  add("width", std::to_string(FLAGS_width));
  return text.empty() ? "" : "data { synthetic {" + text + " } }";
}

}  // namespace

int RunSynth(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  if (FLAGS_output_dir.empty()) {
    return Fail("synth", Status::InvalidArgument("--output_dir is required"));
  }
  struct stat st;
  if (stat(FLAGS_output_dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    return Fail("synth", Status::InvalidArgument("--output_dir '" + FLAGS_output_dir +
                                                 "' exists and is not a directory"));
  }
  const std::string shortcut = FlagsAsOverride();
  std::vector<std::string> overrides = set_overrides;
  if (!shortcut.empty()) overrides.push_back(shortcut);  // after any --set, so flags win
  const StatusOr<proto::ReidConfig> cfg = LoadConfigFromFlags(overrides);
  if (!cfg.ok()) return Fail("synth", cfg.status());
  data::SynthOptions opt = data::SynthOptionsFromConfig(cfg->data());
  opt.threads = std::max(1u, std::thread::hardware_concurrency());
  const auto start = std::chrono::steady_clock::now();
  const StatusOr<data::SynthSummary> written = data::GenerateSynthetic(opt, FLAGS_output_dir);
  if (!written.ok()) return Fail("synth", written.status());
  const data::SynthSummary& s = *written;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t total = s.train_images + s.query_images + s.gallery_images + s.distractors + s.junk;
  std::cout << "wrote " << total << " JPEGs (" << opt.height << "x" << opt.width << ") to "
            << FLAGS_output_dir << ": train " << s.train_images << ", query " << s.query_images
            << ", gallery " << s.gallery_images << " + " << s.distractors << " distractors + "
            << s.junk << " junk, in " << secs << " s\n";
  return kExitOk;
}

}  // namespace reid::trainer
