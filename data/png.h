// PNG decoding with libpng, to the same 8-bit RGB Image as JPEG decoding: any bit depth and colour
// type (gray, gray + alpha, palette, RGB, RGBA; 1..16 bits), interlaced or not. Alpha is dropped
// (not composited), as PIL's Image.convert("RGB") does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/status.h"
#include "data/image.h"

namespace reid::data {

// True when `data` starts with the 8-byte PNG signature.
bool IsPng(const uint8_t* data, size_t size);

// Decodes a PNG to RGB. 16-bit samples keep their high byte (PIL's 16-bit RGB reading; its 16-bit
// gray clips instead, which we do not copy); gamma and colour profiles are ignored, as PIL does.
// The header's width x height must be at most `max_pixels`, checked before the image is
// allocated. Corrupt or truncated data (a missing IEND included) and bad CRCs of critical chunks
// are DataLoss with libpng's message; the message does not name the file (the caller knows it).
// Thread-safe: each call has its own libpng state.
StatusOr<Image> DecodePng(const uint8_t* data, size_t size, int64_t max_pixels);

// Encodes RGB to an 8-bit RGB PNG (lossless; zlib level 6). Internal when libpng fails.
StatusOr<std::vector<uint8_t>> EncodePng(const Image& image);

}  // namespace reid::data
