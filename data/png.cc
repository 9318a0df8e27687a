// PNG decoding through libpng's progressive-free read API from memory. libpng reports errors by
// longjmp: the functions that call setjmp hold no C++ objects (nothing whose destructor a jump
// could skip), and every libpng allocation is released by png_destroy_read_struct afterwards.
#include "data/png.h"

#include <png.h>

#include <csetjmp>
#include <cstring>
#include <string>
#include <vector>

namespace reid::data {
namespace {

constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

// The read state libpng's callbacks see (plain data: it crosses longjmp).
struct Source {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char error[256];  // libpng's error message
};

void ReadCallback(png_structp png, png_bytep out, size_t length) {
  Source* src = static_cast<Source*>(png_get_io_ptr(png));
  if (length > src->size - src->pos) png_error(png, "truncated file (read past the end)");
  std::memcpy(out, src->data + src->pos, length);
  src->pos += length;
}

[[noreturn]] void ErrorCallback(png_structp png, png_const_charp message) {
  Source* src = static_cast<Source*>(png_get_error_ptr(png));
  std::strncpy(src->error, message ? message : "libpng error", sizeof(src->error) - 1);
  src->error[sizeof(src->error) - 1] = '\0';
  png_longjmp(png, 1);
}

// Warnings (an unknown sRGB profile, a bad ancillary chunk) are not failures: PIL ignores them.
void WarningCallback(png_structp, png_const_charp) {}

// Reads the header and sets the transforms to 8-bit RGB. False (src->error set) on a libpng error.
bool ReadHeader(png_structp png, png_infop info, png_uint_32* width, png_uint_32* height) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(png, info, width, height, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  if (bit_depth == 16) png_set_strip_16(png);  // the high byte
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA)
    png_set_gray_to_rgb(png);
  // Palette expansion turns tRNS into an alpha channel; drop it like a real one.
  if ((color_type & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
    png_set_strip_alpha(png);
  if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(png);
  return true;
}

// Applies the transforms (after the caller's size check). False on a libpng error.
bool UpdateInfo(png_structp png, png_infop info, size_t* row_bytes, int* channels) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_update_info(png, info);
  *row_bytes = png_get_rowbytes(png, info);
  *channels = png_get_channels(png, info);
  return true;
}

// Decodes every row (every pass when interlaced) and the chunks after the image data up to IEND.
bool ReadRows(png_structp png, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  return true;
}

void WriteCallback(png_structp png, png_bytep data, size_t length) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + length);
}
void FlushCallback(png_structp) {}

// Writes `rows` (8-bit RGB) as a PNG into `out`. False (error set) on a libpng error.
bool WriteRows(png_structp png, png_infop info, png_uint_32 width, png_uint_32 height,
               png_bytepp rows, std::vector<uint8_t>* out) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_write_fn(png, out, WriteCallback, FlushCallback);
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}

// Owns libpng's read and info structures.
class PngReadStruct {
 public:
  explicit PngReadStruct(Source* src)
      : png_(png_create_read_struct(PNG_LIBPNG_VER_STRING, src, ErrorCallback, WarningCallback)),
        info_(png_ ? png_create_info_struct(png_) : nullptr) {}
  ~PngReadStruct() {
    if (png_) png_destroy_read_struct(&png_, info_ ? &info_ : nullptr, nullptr);
  }
  PngReadStruct(const PngReadStruct&) = delete;
  PngReadStruct& operator=(const PngReadStruct&) = delete;
  png_structp png() const { return png_; }
  png_infop info() const { return info_; }

 private:
  png_structp png_;
  png_infop info_;
};

}  // namespace

bool IsPng(const uint8_t* data, size_t size) {
  return size >= sizeof(kSignature) && std::memcmp(data, kSignature, sizeof(kSignature)) == 0;
}

StatusOr<Image> DecodePng(const uint8_t* data, size_t size, int64_t max_pixels) {
  if (!IsPng(data, size)) return Status::DataLoss("not a PNG");
  Source src{data, size, 0, {}};
  PngReadStruct s(&src);
  if (s.png() == nullptr || s.info() == nullptr) {
    return Status::Internal("cannot create a libpng decoder");
  }
  png_set_read_fn(s.png(), &src, ReadCallback);
  // Ancillary chunks (text, ICC profiles) are not image data: bound what libpng may hold of them.
  png_set_chunk_malloc_max(s.png(), 1 << 20);
  png_set_chunk_cache_max(s.png(), 128);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  // The fuzz build ignores CRC and Adler-32 checks, so that mutated inputs reach the decoder.
  png_set_crc_action(s.png(), PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
#ifdef PNG_IGNORE_ADLER32
  png_set_option(s.png(), PNG_IGNORE_ADLER32, PNG_OPTION_ON);
#endif
#endif
  png_uint_32 width = 0, height = 0;
  if (!ReadHeader(s.png(), s.info(), &width, &height)) {
    return Status::DataLoss(std::string("cannot decode PNG: ") + src.error);
  }
  // The header's size is the file's claim (a 100-byte PNG may declare 2^31 x 2^31): refuse before
  // libpng allocates its row buffers or we allocate the image.
  if (width == 0 || height == 0 || int64_t{width} * int64_t{height} > max_pixels) {
    return Status::DataLoss("image of " + std::to_string(width) + "x" + std::to_string(height) +
                            " pixels (at most " + std::to_string(max_pixels) + ")");
  }
  size_t row_bytes = 0;
  int channels = 0;
  if (!UpdateInfo(s.png(), s.info(), &row_bytes, &channels)) {
    return Status::DataLoss(std::string("cannot decode PNG: ") + src.error);
  }
  if (channels != 3 || row_bytes != size_t{width} * 3) {
    return Status::Internal("PNG transforms gave " + std::to_string(channels) + " channels and " +
                            std::to_string(row_bytes) + " bytes per row");
  }
  Image out;
  out.Resize(static_cast<int>(height), static_cast<int>(width));
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = out.row(static_cast<int>(y));
  if (!ReadRows(s.png(), rows.data())) {
    return Status::DataLoss(std::string("cannot decode PNG: ") + src.error);
  }
  return out;
}

StatusOr<std::vector<uint8_t>> EncodePng(const Image& image) {
  if (image.height <= 0 || image.width <= 0)
    return Status::Internal("cannot encode an empty image");
  Source err{nullptr, 0, 0, {}};  // only its error message is used
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, ErrorCallback, WarningCallback);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  std::vector<png_bytep> rows(image.height);
  for (int y = 0; y < image.height; ++y) rows[y] = const_cast<png_bytep>(image.row(y));
  std::vector<uint8_t> out;
  const bool ok =
      info != nullptr && WriteRows(png, info, image.width, image.height, rows.data(), &out);
  png_destroy_write_struct(png ? &png : nullptr, info ? &info : nullptr);
  if (!ok) return Status::Internal(std::string("cannot encode PNG: ") + err.error);
  return out;
}

}  // namespace reid::data
