// `reid embed`: embeddings of arbitrary person crops (a folder walked in sorted order, or a list
// file) with a checkpoint's inference model and the test transforms of evaluation. Writes
// PREFIX.npy (float32 (N, D), not L2-normalised, as `reid extract` and the ONNX export give them)
// and PREFIX.csv (header `path`, one row per embedded image, in row order). Images that cannot be
// read are listed on stderr and in PREFIX.unreadable.txt and skipped.
#include <gflags/gflags.h>

#include <algorithm>
#include <fstream>
#include <iostream>

#include "data/image_list.h"
#include "data/loader.h"
#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "trainer/distributed/stop_signal.h"
#include "formats/features_io.h"

DECLARE_string(out);
DEFINE_string(images, "",
              "embed: a folder of .jpg/.jpeg/.png crops (walked, sorted) or a list "
              "file of image paths (relative to the list's folder)");
DEFINE_bool(flip, false, "embed: mean with the horizontally mirrored crop's feature");
DEFINE_int32(camid, -1, "embed: 0-based camera id of every crop (required by SIE models)");

namespace reid::trainer {
namespace {

// The readable images of --images as samples (pid = row, so that no image stands in for
// another); the unreadable ones in *bad.
StatusOr<std::vector<data::Sample>> ReadableImages(const proto::ReidConfig& cfg,
                                                   std::vector<std::string>* bad) {
  REID_ASSIGN_OR_RETURN(const std::vector<std::string> paths, data::ListImages(FLAGS_images));
  std::vector<data::Sample> all;
  for (size_t i = 0; i < paths.size(); ++i) {
    all.push_back({paths[i], static_cast<int>(i), std::max(0, FLAGS_camid)});
  }
  REID_RETURN_IF_ERROR(
      data::CheckReadable("--images", all, 1.0, std::max(1, cfg.data().num_workers()), bad));
  std::vector<data::Sample> good;
  std::sort(bad->begin(), bad->end());
  for (const data::Sample& s : all) {
    if (!std::binary_search(bad->begin(), bad->end(), s.path)) good.push_back(s);
  }
  if (good.empty()) {
    return Status::InvalidArgument("--images=" + FLAGS_images + ": none of the " +
                                   std::to_string(all.size()) + " images is readable");
  }
  return good;
}

Status WriteOutputs(const torch::Tensor& f, const std::vector<data::Sample>& samples,
                    const std::vector<std::string>& bad) {
  REID_RETURN_IF_ERROR(formats::WriteFeatures(FLAGS_out + ".npy", f));
  const std::string csv = FLAGS_out + ".csv", csv_tmp = csv + ".tmp";
  {
    std::ofstream out(csv_tmp, std::ios::trunc);
    out << "path\n";
    for (const data::Sample& s : samples) out << s.path << "\n";
    if (!out.good()) return Status::InvalidArgument(csv_tmp + ": cannot write");
  }
  if (std::rename(csv_tmp.c_str(), csv.c_str()) != 0)
    return Status::InvalidArgument(csv + ": cannot write");
  const std::string list = FLAGS_out + ".unreadable.txt";
  if (bad.empty()) {
    std::remove(list.c_str());
    return Status::Ok();
  }
  std::ofstream out(list, std::ios::trunc);
  for (const std::string& p : bad) out << p << "\n";
  return out.good() ? Status::Ok() : Status::InvalidArgument(list + ": cannot write");
}

}  // namespace

int RunEmbed(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  if (FLAGS_images.empty() || FLAGS_out.empty()) {
    return Fail("embed", Status::InvalidArgument("needs --checkpoint, --images=DIR|LIST.txt and "
                                                 "--out=PREFIX"));
  }
  StatusOr<InferenceCheckpoint> c = OpenCheckpointFromFlags(set_overrides);
  if (!c.ok()) return Fail("embed", c.status());
  StatusOr<InferenceModel> model =
      BuildInferenceModel(c->tensors, c->config, c->path + "/model.pt");
  if (!model.ok()) return Fail("embed", model.status());
  if ((*model)->num_cameras() > 0 && (FLAGS_camid < 0 || FLAGS_camid >= (*model)->num_cameras())) {
    return Fail("embed", Status::InvalidArgument("the model has a camera embedding (SIE) of " +
                                                 std::to_string((*model)->num_cameras()) +
                                                 " cameras: pass --camid in [0, " +
                                                 std::to_string((*model)->num_cameras()) + ")"));
  }
  std::vector<std::string> bad;
  StatusOr<std::vector<data::Sample>> samples = ReadableImages(c->config, &bad);
  if (!samples.ok()) return Fail("embed", samples.status());
  dist::InstallStopSignalHandlers();
  Job job(c->config);
  const int rank = job.ranks.rank;
  if (rank == 0) {
    for (const std::string& p : bad) std::cerr << "warning: unreadable, skipped: " << p << "\n";
  }
  StatusOr<torch::Device> device = DeviceFromFlag(job.ranks);
  if (!device.ok()) return Fail("embed", device.status(), rank);
  (*model)->to(*device);
  auto stop = [&](int64_t) { return dist::StopRequestedOnAnyRank(job.comm->host()); };
  const torch::Tensor f = ExtractInferenceFeatures(*model, c->config, *samples, FLAGS_flip,
                                                   job.comm.get(), *device, stop);
  if (!f.defined()) return Fail("embed", Status::Internal("stopped by a signal"), rank);
  if (rank != 0) return kExitOk;
  const Status s = WriteOutputs(f, *samples, bad);
  if (!s.ok()) return Fail("embed", s, rank);
  std::cout << "wrote " << FLAGS_out << ".npy (" << f.size(0) << " x " << f.size(1) << ") and "
            << FLAGS_out << ".csv"
            << (bad.empty() ? ""
                            : "; " + std::to_string(bad.size()) + " unreadable images skipped (" +
                                  FLAGS_out + ".unreadable.txt)")
            << "\n";
  return kExitOk;
}

}  // namespace reid::trainer
