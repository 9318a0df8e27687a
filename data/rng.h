// Counter-based randomness for the data pipeline: every stream is a pure function of
// (seed, epoch, key), so augmentation and sampling do not depend on threads, ranks or timing.
#pragma once

#include <cmath>
#include <cstdint>

namespace reid::data {

// Streams keep the sampler's and the augmentations' randomness apart for the same (seed, epoch).
enum class RngStream : uint64_t {
  kAugment = 1,
  kPkSampler = 2,
  kStage1 = 3,
  kReplace = 4,
  kSynth = 5
};

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// xoshiro256** seeded by hashing (seed, epoch, key, stream).
class Rng {
 public:
  Rng(uint64_t seed, uint64_t epoch, uint64_t key, RngStream stream) {
    uint64_t h = SplitMix64(
        seed ^ SplitMix64(epoch ^ SplitMix64(key ^ SplitMix64(static_cast<uint64_t>(stream)))));
    for (uint64_t& s : s_) s = h = SplitMix64(h);
  }

  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }

  // Uniform integer in [lo, hi], both inclusive (hi >= lo).
  int64_t UniformInt(int64_t lo, int64_t hi) {
    const uint64_t range = static_cast<uint64_t>(hi - lo) + 1;
    return lo + static_cast<int64_t>(static_cast<unsigned __int128>(Next()) * range >> 64);
  }

  // Standard normal (Box-Muller; the second value of each pair is kept for the next call).
  float Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - Uniform();  // (0, 1]
    const double u2 = Uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(2.0 * M_PI * u2));
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
  float spare_ = 0.f;
  bool has_spare_ = false;
};

}  // namespace reid::data
