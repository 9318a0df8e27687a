// `reid import`: a CLIP-ReID state dict (the authors' released checkpoints, the files trackers
// distribute, or our own `reid export --format=clipreid`) turned into a checkpoint of this tool,
// which `reid eval`, `embed`, `export` and `train --resume` take. The config gives what the file
// cannot say (stride, input size, neck feature, prompt, SIE scale); every key and shape of the
// file is checked against the model the config builds.
#include <gflags/gflags.h>

#include <iostream>

#include "trainer/checkpoint.h"
#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "cli/config_flags.h"
#include "trainer/model/reid_model.h"

DECLARE_string(weights);
DECLARE_string(output_dir);

namespace reid::trainer {
namespace {

// Classes and cameras of a CLIP-ReID state dict (classifier rows, cv_embed rows).
Status CountsOf(const model::StateDict& sd, const std::string& path, int64_t* classes,
                int64_t* cameras) {
  auto it = sd.find("classifier.weight");
  if (it == sd.end() || it->second.dim() != 2) {
    return Status::InvalidArgument(path +
                                   ": no 2-d tensor 'classifier.weight' (not a CLIP-ReID "
                                   "state dict?)");
  }
  *classes = it->second.size(0);
  auto cv = sd.find("cv_embed");
  *cameras = (cv != sd.end() && cv->second.dim() == 2) ? cv->second.size(0) : 0;
  return Status::Ok();
}

Status Import(proto::ReidConfig cfg) {
  if (FLAGS_weights.empty()) return Status::InvalidArgument("--weights=F.pth is required");
  if (FLAGS_output_dir.empty()) return Status::InvalidArgument("--output_dir=DIR is required");
  if (cfg.context_adjust().enabled() || cfg.cross_attention().enabled()) {
    return Status::InvalidArgument(
        "the config enables context_adjust or cross_attention, which a CLIP-ReID state dict "
        "does not hold: import with a CLIP-ReID config (e.g. "
        "configs/market1501_clipreid.textproto)");
  }
  REID_ASSIGN_OR_RETURN(const model::StateDict sd, model::ReadStateDict(FLAGS_weights));
  int64_t classes = 0, cameras = 0;
  REID_RETURN_IF_ERROR(CountsOf(sd, FLAGS_weights, &classes, &cameras));
  if (cfg.model().sie_camera() != (cameras > 0)) {
    return Status::InvalidArgument(FLAGS_weights +
                                   (cameras > 0 ? " has cv_embed (SIE) but model.sie_camera is off"
                                                : " has no cv_embed but model.sie_camera is on"));
  }
  proto::ReidConfig build = cfg;
  build.mutable_model()->set_weights(FLAGS_weights);
  REID_ASSIGN_OR_RETURN(model::ReidModel m, model::BuildReidModel(build, classes, cameras));
  const model::StateDict state = model::ModuleStateDict(*m);
  CheckpointFiles files;
  REID_ASSIGN_OR_RETURN(std::string model_bytes,
                        SerializeTensors(NamedTensors(state.begin(), state.end())));
  files.emplace_back("model.pt", std::move(model_bytes));
  proto::CheckpointMeta meta;
  meta.set_stage(2);
  meta.set_epoch(0);
  meta.set_world_size(1);
  meta.mutable_sampler()->set_seed(cfg.seed());
  meta.mutable_sampler()->set_epoch(1);
  meta.mutable_sampler()->set_step(0);
  *meta.mutable_config() = cfg;
  StampBuildAndTime(&meta);
  CheckpointStore store(FLAGS_output_dir + "/checkpoints");
  const std::string name = CheckpointName(2, 1, 0);
  REID_RETURN_IF_ERROR(store.Commit(name, meta, files, 1, false));
  std::cout << "imported " << FLAGS_weights << " (" << sd.size() << " tensors, " << classes
            << " classes" << (cameras ? ", " + std::to_string(cameras) + " cameras" : "") << ") as "
            << store.dir() << "/" << name << "\n";
  return Status::Ok();
}

}  // namespace

int RunImport(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  StatusOr<proto::ReidConfig> cfg = LoadConfigFromFlags(set_overrides);
  const Status s = cfg.ok() ? Import(*cfg) : cfg.status();
  return s.ok() ? kExitOk : Fail("import", s);
}

}  // namespace reid::trainer
