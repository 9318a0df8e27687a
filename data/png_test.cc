// PNG decoding: every colour type and bit depth to 8-bit RGB, interlaced or not, through
// DecodePng and through the JPEG decoder's dispatch; truncated, corrupt and oversize files. The
// PNGs are written here with libpng, so each case states its exact samples.
#include "data/png.h"

#include <gtest/gtest.h>
#include <png.h>
#include <zlib.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/status_test_util.h"
#include "data/jpeg.h"

namespace reid::data {
namespace {

// What to write: width x height samples of `channels` per pixel (values < 2^bit_depth), with a
// palette (RGB triples) for PNG_COLOR_TYPE_PALETTE and optional tRNS.
struct PngSpec {
  int width = 0, height = 0, color_type = PNG_COLOR_TYPE_RGB, bit_depth = 8;
  bool interlaced = false;
  std::vector<int> samples;      // row-major, channels per pixel
  std::vector<uint8_t> palette;  // RGB triples
  std::vector<uint8_t> trans;    // palette alphas (tRNS)
  bool trans_colour = false;     // a tRNS colour (gray or RGB): the first pixel's
};

int Channels(int color_type) {
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
    case PNG_COLOR_TYPE_PALETTE:
      return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      return 2;
    case PNG_COLOR_TYPE_RGB:
      return 3;
    default:
      return 4;
  }
}

void WriteCallback(png_structp png, png_bytep data, size_t n) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}
void FlushCallback(png_structp) {}

// Encodes `spec` with libpng (samples packed per the bit depth, big-endian at 16 bits).
std::vector<uint8_t> WritePng(const PngSpec& spec) {
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  const int ch = Channels(spec.color_type);
  const size_t row_bytes = (size_t{static_cast<size_t>(spec.width)} * ch * spec.bit_depth + 7) / 8;
  std::vector<std::vector<uint8_t>> rows(spec.height, std::vector<uint8_t>(row_bytes, 0));
  for (int y = 0; y < spec.height; ++y) {
    for (int i = 0; i < spec.width * ch; ++i) {
      const int v = spec.samples[static_cast<size_t>(y) * spec.width * ch + i];
      uint8_t* row = rows[y].data();
      if (spec.bit_depth == 16) {
        row[2 * i] = static_cast<uint8_t>(v >> 8);
        row[2 * i + 1] = static_cast<uint8_t>(v & 255);
      } else if (spec.bit_depth == 8) {
        row[i] = static_cast<uint8_t>(v);
      } else {  // 1, 2 or 4 bits, most significant first
        const int per_byte = 8 / spec.bit_depth;
        const int shift = 8 - spec.bit_depth * (i % per_byte + 1);
        row[i / per_byte] |= static_cast<uint8_t>(v << shift);
      }
    }
  }
  std::vector<png_bytep> ptrs;
  for (auto& r : rows) ptrs.push_back(r.data());
  if (setjmp(png_jmpbuf(png))) {
    ADD_FAILURE() << "libpng could not write the test PNG";
    png_destroy_write_struct(&png, &info);
    return {};
  }
  png_set_write_fn(png, &out, WriteCallback, FlushCallback);
  png_set_IHDR(png, info, spec.width, spec.height, spec.bit_depth, spec.color_type,
               spec.interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  std::vector<png_color> palette;
  for (size_t i = 0; i + 2 < spec.palette.size(); i += 3) {
    palette.push_back({spec.palette[i], spec.palette[i + 1], spec.palette[i + 2]});
  }
  if (!palette.empty()) png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  std::vector<uint8_t> trans = spec.trans;
  if (!trans.empty()) {
    png_set_tRNS(png, info, trans.data(), static_cast<int>(trans.size()), nullptr);
  }
  if (spec.trans_colour) {
    png_color_16 c{};
    const int* v = spec.samples.data();
    c.gray = static_cast<png_uint_16>(v[0]);
    if (ch >= 3) {
      c.red = static_cast<png_uint_16>(v[0]);
      c.green = static_cast<png_uint_16>(v[1]);
      c.blue = static_cast<png_uint_16>(v[2]);
    }
    png_set_tRNS(png, info, nullptr, 0, &c);
  }
  png_write_info(png, info);
  png_write_image(png, ptrs.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

// Random samples below 2^bit_depth (below `levels` when given: palette indices).
PngSpec Random(int width, int height, int color_type, int bit_depth, int levels = 0) {
  PngSpec s;
  s.width = width;
  s.height = height;
  s.color_type = color_type;
  s.bit_depth = bit_depth;
  std::mt19937 rng(width * 131 + height * 7 + color_type * 3 + bit_depth);
  std::uniform_int_distribution<int> dist(0, (levels ? levels : 1 << bit_depth) - 1);
  s.samples.resize(static_cast<size_t>(width) * height * Channels(color_type));
  for (int& v : s.samples) v = dist(rng);
  return s;
}

// The RGB a decoder should give for `s`: 16 bits keep the high byte, 1/2/4-bit gray scales to
// 0..255 (x 255, 85, 17), gray repeats in R, G and B, palette indices look up, alpha is dropped.
std::vector<uint8_t> ExpectedRgb(const PngSpec& s) {
  const int ch = Channels(s.color_type);
  std::vector<uint8_t> rgb;
  for (size_t p = 0; p < static_cast<size_t>(s.width) * s.height; ++p) {
    const int* v = &s.samples[p * ch];
    auto to8 = [&](int x) {
      if (s.bit_depth == 16) return x >> 8;
      return s.bit_depth == 8 ? x : x * (255 / ((1 << s.bit_depth) - 1));
    };
    if (s.color_type == PNG_COLOR_TYPE_PALETTE) {
      for (int c = 0; c < 3; ++c) rgb.push_back(s.palette[3 * v[0] + c]);
    } else if (ch <= 2) {
      for (int c = 0; c < 3; ++c) rgb.push_back(static_cast<uint8_t>(to8(v[0])));
    } else {
      for (int c = 0; c < 3; ++c) rgb.push_back(static_cast<uint8_t>(to8(v[c])));
    }
  }
  return rgb;
}

void ExpectDecodes(const PngSpec& spec, const std::string& what) {
  const std::vector<uint8_t> png = WritePng(spec);
  ASSERT_TRUE(IsPng(png.data(), png.size())) << what;
  StatusOr<Image> img = DecodePng(png.data(), png.size(), kMaxImagePixels);
  ASSERT_OK(img) << what;
  EXPECT_EQ(img->height, spec.height) << what;
  EXPECT_EQ(img->width, spec.width) << what;
  EXPECT_EQ(img->pixels, ExpectedRgb(spec)) << what;
}

TEST(Png, EveryColourTypeAndDepthDecodesToRgb) {
  for (bool interlaced : {false, true}) {
    const std::string mode = interlaced ? " interlaced" : "";
    for (int depth : {1, 2, 4, 8, 16}) {
      PngSpec s = Random(13, 9, PNG_COLOR_TYPE_GRAY, depth);
      s.interlaced = interlaced;
      ExpectDecodes(s, "gray " + std::to_string(depth) + mode);
      s.trans_colour = true;  // a transparent gray level: its colour, no alpha
      ExpectDecodes(s, "gray with tRNS " + std::to_string(depth) + mode);
    }
    for (int type : {PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA}) {
      for (int depth : {8, 16}) {
        PngSpec s = Random(11, 17, type, depth);
        s.interlaced = interlaced;
        ExpectDecodes(s, "type " + std::to_string(type) + " depth " + std::to_string(depth) + mode);
        if (type == PNG_COLOR_TYPE_RGB) {
          s.trans_colour = true;
          ExpectDecodes(s, "RGB with tRNS " + std::to_string(depth) + mode);
        }
      }
    }
    for (int depth : {1, 2, 4, 8}) {
      const int colours = std::min(1 << depth, 5);
      PngSpec s = Random(10, 6, PNG_COLOR_TYPE_PALETTE, depth, colours);
      s.interlaced = interlaced;
      for (int i = 0; i < colours; ++i) {
        s.palette.insert(s.palette.end(),
                         {static_cast<uint8_t>(40 * i), static_cast<uint8_t>(255 - 30 * i),
                          static_cast<uint8_t>(7 * i + 1)});
      }
      ExpectDecodes(s, "palette " + std::to_string(depth) + mode);
      // Transparent palette entries: their colour, alpha dropped.
      s.trans = {0, 128};
      ExpectDecodes(s, "palette with tRNS " + std::to_string(depth) + mode);
    }
  }
}

TEST(Png, TheJpegDecoderDispatchesOnTheSignature) {
  const PngSpec spec = Random(40, 20, PNG_COLOR_TYPE_RGB, 8);
  const std::vector<uint8_t> png = WritePng(spec);
  ImageDecoder decoder;
  // PNG has no scaled decoding: min_height / min_width give the full image.
  StatusOr<Image> img = decoder.Decode(png.data(), png.size(), 5, 5);
  ASSERT_OK(img);
  EXPECT_EQ(img->width, 40);
  EXPECT_EQ(img->pixels, ExpectedRgb(spec));
  const std::string gif = "GIF89a....";
  img = decoder.Decode(reinterpret_cast<const uint8_t*>(gif.data()), gif.size(), 0, 0);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().code(), Status::Code::kDataLoss);
  EXPECT_EQ(img.status().message(), "not a JPEG or PNG image (it starts with 47 49 46 38)");
}

TEST(Png, TruncatedFilesFailWithAMessage) {
  const std::vector<uint8_t> png = WritePng(Random(64, 48, PNG_COLOR_TYPE_RGB_ALPHA, 8));
  // Every cut: inside the signature, the header, the image data, the IEND chunk.
  for (size_t cut = 0; cut < png.size(); cut += (cut < 64 || cut + 16 > png.size()) ? 1 : 97) {
    const StatusOr<Image> img = DecodePng(png.data(), cut, kMaxImagePixels);
    ASSERT_FALSE(img.ok()) << "cut at " << cut << " of " << png.size();
    EXPECT_EQ(img.status().code(), Status::Code::kDataLoss) << cut;
  }
  ImageDecoder decoder;
  const StatusOr<Image> img = decoder.Decode(png.data(), png.size() / 2, 0, 0);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().message().rfind("cannot decode PNG: ", 0), 0u) << img.status().message();
  EXPECT_EQ(img.status().exit_code(), 2);
}

// Offset of the first chunk of `type` in a PNG (its length field), or npos.
size_t FindChunk(const std::vector<uint8_t>& png, const char* type) {
  for (size_t pos = 8; pos + 8 <= png.size();) {
    const uint32_t len =
        (uint32_t{png[pos]} << 24) | (png[pos + 1] << 16) | (png[pos + 2] << 8) | png[pos + 3];
    if (std::memcmp(&png[pos + 4], type, 4) == 0) return pos;
    pos += 12 + static_cast<size_t>(len);
  }
  return std::string::npos;
}

void PutU32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

TEST(Png, CorruptDataAndBadCrcsFail) {
  std::vector<uint8_t> png = WritePng(Random(32, 32, PNG_COLOR_TYPE_RGB, 8));
  const size_t idat = FindChunk(png, "IDAT");
  ASSERT_NE(idat, std::string::npos);
  const uint32_t idat_len =
      (uint32_t{png[idat]} << 24) | (png[idat + 1] << 16) | (png[idat + 2] << 8) | png[idat + 3];
  std::vector<uint8_t> bad_crc = png;
  bad_crc[idat + 8 + idat_len] ^= 0x55;  // the chunk's CRC field
  StatusOr<Image> img = DecodePng(bad_crc.data(), bad_crc.size(), kMaxImagePixels);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().message(), "cannot decode PNG: IDAT: CRC error");
  // A flipped byte of the compressed data: zlib (or the CRC) refuses it.
  std::vector<uint8_t> bad_data = png;
  bad_data[idat + 8 + 5] ^= 0x55;
  img = DecodePng(bad_data.data(), bad_data.size(), kMaxImagePixels);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().code(), Status::Code::kDataLoss);
  // Garbage after the signature.
  std::vector<uint8_t> garbage(png.begin(), png.begin() + 8);
  garbage.resize(200, 0xab);
  img = DecodePng(garbage.data(), garbage.size(), kMaxImagePixels);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().code(), Status::Code::kDataLoss);
}

TEST(Png, OversizeHeadersAreRefusedBeforeAllocating) {
  std::vector<uint8_t> png = WritePng(Random(8, 8, PNG_COLOR_TYPE_RGB, 8));
  const size_t ihdr = FindChunk(png, "IHDR");
  ASSERT_EQ(ihdr, 8u);
  // Claim 20000 x 20000 (4e8 pixels: 1.2 GB of RGB) with a valid CRC.
  PutU32(&png[ihdr + 8], 20000);
  PutU32(&png[ihdr + 12], 20000);
  PutU32(&png[ihdr + 8 + 13], static_cast<uint32_t>(crc32(0, &png[ihdr + 4], 17)));
  const StatusOr<Image> img = DecodePng(png.data(), png.size(), kMaxImagePixels);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().message(), "image of 20000x20000 pixels (at most 67108864)");
  // Within a caller's smaller bound too.
  const std::vector<uint8_t> small = WritePng(Random(8, 8, PNG_COLOR_TYPE_RGB, 8));
  EXPECT_FALSE(DecodePng(small.data(), small.size(), 63).ok());
  EXPECT_OK(DecodePng(small.data(), small.size(), 64));
}

}  // namespace
}  // namespace reid::data
