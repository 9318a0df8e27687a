// The synthetic dataset generator (`reid synth`).
#include "data/synth.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "data/jpeg.h"
#include "data/rng.h"

namespace fs = std::filesystem;

namespace reid::data {
namespace {

struct Rgb {
  float r, g, b;
};

// A saturated-ish random colour from a small palette of hues, so distinct identities may share
// a colour (not trivially separable by one feature).
Rgb PaletteColour(Rng* rng) {
  const double hue = rng->UniformInt(0, 11) / 12.0 + rng->Uniform(-0.02, 0.02);
  const double sat = rng->Uniform(0.3, 0.9), val = rng->Uniform(0.25, 0.95);
  const double h6 = (hue - std::floor(hue)) * 6.0;
  const double c = val * sat, x = c * (1 - std::fabs(std::fmod(h6, 2.0) - 1)), m = val - c;
  double r = 0, g = 0, b = 0;
  switch (static_cast<int>(h6) % 6) {
    case 0:
      r = c, g = x;
      break;
    case 1:
      r = x, g = c;
      break;
    case 2:
      g = c, b = x;
      break;
    case 3:
      g = x, b = c;
      break;
    case 4:
      r = x, b = c;
      break;
    default:
      r = c, b = x;
      break;
  }
  return {static_cast<float>((r + m) * 255), static_cast<float>((g + m) * 255),
          static_cast<float>((b + m) * 255)};
}

struct Identity {
  Rgb upper, lower, pattern, skin, hair, shoes, bag;
  int pattern_kind;  // 0 plain, 1 horizontal stripes, 2 vertical stripes, 3 checks
  int stripe;        // pattern period (pixels at 128 high)
  bool has_bag;
  float build;  // body width factor
};

Identity MakeIdentity(uint64_t seed, int pid) {
  Rng rng(seed, 0, static_cast<uint64_t>(pid), RngStream::kSynth);
  Identity id;
  id.upper = PaletteColour(&rng);
  id.lower = PaletteColour(&rng);
  id.pattern = PaletteColour(&rng);
  const float tone = static_cast<float>(rng.Uniform(0.35, 0.95));
  id.skin = {235 * tone, 190 * tone, 160 * tone};
  const float hair = static_cast<float>(rng.Uniform(10, 120));
  id.hair = {hair, hair * 0.8f, hair * 0.6f};
  id.shoes = PaletteColour(&rng);
  id.bag = PaletteColour(&rng);
  id.pattern_kind = static_cast<int>(rng.UniformInt(0, 3));
  id.stripe = static_cast<int>(rng.UniformInt(4, 10));
  id.has_bag = rng.Uniform() < 0.4;
  id.build = static_cast<float>(rng.Uniform(0.85, 1.15));
  return id;
}

struct Camera {
  Rgb gain;  // colour cast x illumination
  Rgb background;
  float gradient;  // vertical background gradient strength
};

Camera MakeCamera(uint64_t seed, int cam) {
  Rng rng(seed, 1, static_cast<uint64_t>(cam), RngStream::kSynth);
  const float light = static_cast<float>(rng.Uniform(0.8, 1.2));
  Camera c;
  c.gain = {light * static_cast<float>(rng.Uniform(0.9, 1.1)),
            light * static_cast<float>(rng.Uniform(0.9, 1.1)),
            light * static_cast<float>(rng.Uniform(0.9, 1.1))};
  c.background = PaletteColour(&rng);
  c.gradient = static_cast<float>(rng.Uniform(-60, 60));
  return c;
}

// 65536 standard normal values: pixel noise by table look-up (exact normality does not matter).
const std::vector<float>& NormalTable() {
  static const std::vector<float> table = [] {
    std::vector<float> t(1 << 16);
    Rng rng(0, 0, 0, RngStream::kSynth);
    for (float& v : t) v = rng.Normal();
    return t;
  }();
  return table;
}

// Linear-light RGB before the camera's gain and the sensor noise, (H, W).
struct Canvas {
  int height, width;
  std::vector<Rgb> px;
};

void FillRect(Canvas* c, float x0, float y0, float x1, float y1,
              const std::function<Rgb(int, int)>& colour) {
  const int xa = std::max(0, static_cast<int>(x0)), xb = std::min(c->width, static_cast<int>(x1));
  const int ya = std::max(0, static_cast<int>(y0)), yb = std::min(c->height, static_cast<int>(y1));
  for (int y = ya; y < yb; ++y) {
    for (int x = xa; x < xb; ++x) c->px[y * c->width + x] = colour(x, y);
  }
}

void FillBackground(const Camera& camera, Canvas* c) {
  for (int y = 0; y < c->height; ++y) {
    const float t = camera.gradient * (static_cast<float>(y) / c->height - 0.5f);
    for (int x = 0; x < c->width; ++x) {
      c->px[y * c->width + x] = {camera.background.r + t, camera.background.g + t,
                                 camera.background.b + t};
    }
  }
}

// The person: hair, face, patterned torso and arms, legs, shoes, maybe a bag; the pose (shift,
// scale, stride) is drawn from `rng`; the bag's side depends on the view (variant n).
void DrawPerson(const Identity& id, int pid, int n, Rng* rng, Canvas* c) {
  const int H = c->height, W = c->width;
  const float s = static_cast<float>(rng->Uniform(0.8, 1.0)) * H / 128.0f;
  const float cx = W / 2.0f + static_cast<float>(rng->Uniform(-0.12, 0.12)) * W;
  const float top = static_cast<float>(rng->Uniform(0.02, 0.12)) * H;
  const float bw = 13 * s * id.build;  // half body width
  const float stride = static_cast<float>(rng->Uniform(-4, 4)) * s;
  const int period = std::max(2, static_cast<int>(id.stripe * s));
  auto solid = [](Rgb colour) { return [colour](int, int) { return colour; }; };
  auto upper = [&](int x, int y) {
    const bool alt = id.pattern_kind == 1   ? (y / period) % 2
                     : id.pattern_kind == 2 ? (x / period) % 2
                     : id.pattern_kind == 3 ? ((x / period) + (y / period)) % 2
                                            : 0;
    return alt ? id.pattern : id.upper;
  };
  const float head = 9 * s, neck = top + 2 * head, waist = neck + 42 * s, feet = waist + 48 * s;
  FillRect(c, cx - head * 0.8f, top, cx + head * 0.8f, top + head * 0.7f, solid(id.hair));
  FillRect(c, cx - head * 0.7f, top + head * 0.7f, cx + head * 0.7f, neck, solid(id.skin));
  FillRect(c, cx - bw, neck, cx + bw, waist, upper);                          // torso
  FillRect(c, cx - bw - 5 * s, neck + 2 * s, cx - bw, waist - 4 * s, upper);  // arms
  FillRect(c, cx + bw, neck + 2 * s, cx + bw + 5 * s, waist - 4 * s, upper);
  FillRect(c, cx - bw + stride, waist, cx - 1, feet - 5 * s, solid(id.lower));  // legs
  FillRect(c, cx + 1, waist, cx + bw - stride, feet - 5 * s, solid(id.lower));
  FillRect(c, cx - bw + stride, feet - 5 * s, cx + bw - stride, feet, solid(id.shoes));
  if (id.has_bag) {
    const float side = (pid % 2 ? 1.f : -1.f) * (n % 3 == 0 ? -1.f : 1.f);
    FillRect(c, cx + side * bw - 6 * s, neck + 12 * s, cx + side * bw + 6 * s, neck + 30 * s,
             solid(id.bag));
  }
}

// Camera gain and colour cast, then per-pixel sensor noise, to 8-bit RGB.
Image Expose(const Canvas& c, const Camera& camera, float noise, Rng* rng) {
  Image img;
  img.Resize(c.height, c.width);
  const std::vector<float>& normals = NormalTable();
  for (size_t i = 0; i < c.px.size(); ++i) {
    const Rgb p = c.px[i];
    const float v[3] = {p.r * camera.gain.r, p.g * camera.gain.g, p.b * camera.gain.b};
    const uint64_t bits = rng->Next();  // three 16-bit draws from the normal table
    for (int ch = 0; ch < 3; ++ch) {
      const float q = v[ch] + noise * normals[(bits >> (16 * ch)) & 0xFFFF];
      img.pixels[3 * i + ch] = static_cast<uint8_t>(std::clamp(q, 0.f, 255.f));
    }
  }
  return img;
}

}  // namespace

Image RenderPerson(const SynthOptions& opt, int pid, int cam, int n) {
  const Identity id = MakeIdentity(opt.seed, pid);
  const Camera camera = MakeCamera(opt.seed, cam);
  Rng rng(opt.seed, 2 + static_cast<uint64_t>(cam), static_cast<uint64_t>(pid) * 1000 + n,
          RngStream::kSynth);
  Canvas canvas{opt.height, opt.width,
                std::vector<Rgb>(static_cast<size_t>(opt.height) * opt.width)};
  FillBackground(camera, &canvas);
  DrawPerson(id, pid, n, &rng, &canvas);
  if (rng.Uniform() < 0.15) {  // occluder: a block entering from one side, from below
    const float ow = static_cast<float>(rng.Uniform(0.2, 0.5)) * opt.width;
    const float oy = static_cast<float>(rng.Uniform(0.3, 0.8)) * opt.height;
    const float ox = rng.Uniform() < 0.5 ? 0.f : opt.width - ow;
    Rng colour_rng(opt.seed, 3, static_cast<uint64_t>(pid) * 1000 + n, RngStream::kSynth);
    const Rgb colour = PaletteColour(&colour_rng);
    FillRect(&canvas, ox, oy, ox + ow, opt.height, [colour](int, int) { return colour; });
  }
  const float noise = static_cast<float>(rng.Uniform(4, 12));
  return Expose(canvas, camera, noise, &rng);
}

Status ValidateSynthOptions(const SynthOptions& opt) {
  // The user-facing rules and messages are proto/config.cc's (data.synthetic); this only guards
  // the generator's own preconditions for callers that bypass the config.
  const bool ok = opt.ids >= 2 && opt.ids <= 4999 && opt.cameras >= 2 && opt.cameras <= 9 &&
                  opt.images_per_id >= 2 && opt.images_per_id <= 1000 && opt.height >= 32 &&
                  opt.width >= 16 && opt.height <= 4096 && opt.width <= 4096;
  if (ok) return Status::Ok();
  return Status::InvalidArgument(
      "synthetic options out of range (see data.synthetic in reid_config.proto)");
}

namespace {

struct Job {
  std::string path;
  int pid, render_pid, cam, n;
};

// The files to write: (folder, pid in the name, identity rendered, camera, variant).
std::vector<Job> PlanJobs(const SynthOptions& opt, const fs::path& out, SynthSummary* sum) {
  std::vector<Job> jobs;
  auto add = [&](const char* dir, int pid, int render_pid, int cam, int n) {
    char name[64];
    std::snprintf(name, sizeof(name), "%04d_c%ds1_%06d_00.jpg", pid, cam + 1, n);
    if (pid < 0) std::snprintf(name, sizeof(name), "-1_c%ds1_%06d_00.jpg", cam + 1, n);
    jobs.push_back({(out / dir / name).string(), pid, render_pid, cam, n});
  };
  const int C = opt.cameras, K = opt.images_per_id;
  for (int id = 1; id <= opt.ids; ++id) {
    for (int n = 0; n < K; ++n) add("bounding_box_train", id, id, (id + n) % C, n);
    sum->train_images += K;
  }
  for (int id = opt.ids + 1; id <= 2 * opt.ids; ++id) {
    add("query", id, id, id % C, 0);  // the query camera; the gallery starts on the others
    for (int n = 1; n < K; ++n) add("bounding_box_test", id, id, (id + n) % C, n);
    sum->query_images += 1;
    sum->gallery_images += K - 1;
  }
  // Distractors: people seen nowhere else (rendered from pids past the test range).
  for (int d = 0; d < std::max(1, opt.ids / 2); ++d) {
    add("bounding_box_test", 0, 2 * opt.ids + 1 + d, d % C, d);
    ++sum->distractors;
  }
  for (int j = 0; j < 2; ++j) {  // junk (pid -1): dropped by every parser
    add("bounding_box_test", -1, 3 * opt.ids + 1 + j, j % C, j);
    ++sum->junk;
  }
  return jobs;
}

}  // namespace

StatusOr<SynthSummary> GenerateSynthetic(const SynthOptions& opt, const std::string& out_dir) {
  REID_RETURN_IF_ERROR(ValidateSynthOptions(opt));
  SynthSummary summary;
  const fs::path out(out_dir);
  std::error_code ec;
  for (const char* dir : {"bounding_box_train", "query", "bounding_box_test"}) {
    fs::create_directories(out / dir, ec);
    if (ec) return Status::Internal((out / dir).string() + ": cannot create: " + ec.message());
  }
  const std::vector<Job> jobs = PlanJobs(opt, out, &summary);
  std::atomic<size_t> next{0};
  std::mutex err_mu;
  Status first_error;  // guarded by err_mu
  auto work = [&] {
    for (size_t i; (i = next++) < jobs.size();) {
      const Job& j = jobs[i];
      const Image img = RenderPerson(opt, j.render_pid, j.cam, j.n);
      StatusOr<std::vector<uint8_t>> bytes = EncodeJpeg(img, 90);
      Status s = bytes.status();
      if (s.ok()) {
        std::ofstream f(j.path, std::ios::binary);
        f.write(reinterpret_cast<const char*>(bytes->data()), bytes->size());
        if (!f) s = Status::Internal("cannot write");
      }
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(err_mu);
        if (first_error.ok()) first_error = s.Annotate(j.path);
        next = jobs.size();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, opt.threads); ++t) pool.emplace_back(work);
  for (std::thread& t : pool) t.join();
  if (!first_error.ok()) return first_error;
  return summary;
}

}  // namespace reid::data
