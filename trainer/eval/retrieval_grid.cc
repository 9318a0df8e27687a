// Retrieval grid drawing: decode, resize (bilinear), borders, a 3x5 pixel font for the labels.
#include "trainer/eval/retrieval_grid.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "base/file_util.h"
#include "data/jpeg.h"
#include "data/transforms.h"

namespace reid::trainer {
namespace {

struct Rgb {
  uint8_t r, g, b;
};
constexpr Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0}, kGreen{0, 200, 0}, kRed{220, 0, 0},
    kQuery{40, 90, 220}, kGrey{128, 128, 128};

// 3x5 glyphs, one row per 3 bits (most significant = left).
int GlyphRow(char c, int y) {
  static const int kDigits[10][5] = {
      {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
      {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}};
  if (c >= '0' && c <= '9') return kDigits[c - '0'][y];
  if (c == '.') return y == 4 ? 2 : 0;
  if (c == '-') return y == 2 ? 7 : 0;
  static const int kQ[5] = {7, 5, 7, 1, 1};
  if (c == 'q') return kQ[y];
  return 0;
}

void Fill(data::Image* img, int y0, int x0, int h, int w, Rgb c) {
  for (int y = std::max(0, y0); y < std::min(img->height, y0 + h); ++y) {
    for (int x = std::max(0, x0); x < std::min(img->width, x0 + w); ++x) {
      uint8_t* p = img->row(y) + 3 * x;
      p[0] = c.r;
      p[1] = c.g;
      p[2] = c.b;
    }
  }
}

void Text(data::Image* img, int y0, int x0, const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    for (int y = 0; y < 5; ++y) {
      const int bits = GlyphRow(s[i], y);
      for (int x = 0; x < 3; ++x) {
        if (bits & (4 >> x)) Fill(img, y0 + y, x0 + static_cast<int>(i) * 4 + x, 1, 1, kBlack);
      }
    }
  }
}

// Decodes and resizes one image into its cell; false when it cannot be read.
bool DrawImage(const std::string& path, data::JpegDecoder* decoder, data::Image* canvas, int y0,
               int x0) {
  const StatusOr<std::vector<uint8_t>> bytes = data::ReadFileBytes(path);
  const StatusOr<data::Image> decoded =
      bytes.ok() ? decoder->Decode(bytes->data(), bytes->size(), kCellHeight, kCellWidth)
                 : StatusOr<data::Image>(bytes.status());
  if (!decoded.ok()) {
    Fill(canvas, y0, x0, kCellHeight, kCellWidth, kGrey);
    return false;
  }
  data::Image resized;
  data::ResizePil(*decoded, kCellHeight, kCellWidth, data::Interpolation::kBilinear, &resized);
  for (int y = 0; y < kCellHeight; ++y) {
    std::copy(resized.row(y), resized.row(y) + 3 * kCellWidth, canvas->row(y0 + y) + 3 * x0);
  }
  return true;
}

void DrawCell(const std::string& path, Rgb border, const std::string& label,
              data::JpegDecoder* decoder, data::Image* canvas, int y0, int x0, int* unreadable) {
  Fill(canvas, y0, x0, kCellHeight + 2 * kBorder, kCellWidth + 2 * kBorder, border);
  if (!DrawImage(path, decoder, canvas, y0 + kBorder, x0 + kBorder)) ++*unreadable;
  Text(canvas, y0 + kCellHeight + 2 * kBorder + 2, x0 + 1, label);
}

}  // namespace

Status WriteRetrievalGrid(const std::vector<GridRow>& rows, const std::string& out_path,
                          int* unreadable) {
  size_t columns = 1;
  for (const GridRow& r : rows) columns = std::max(columns, 1 + r.gallery_paths.size());
  data::Image canvas;
  canvas.Resize(kGap + static_cast<int>(rows.size()) * (kCellTotalHeight + kGap),
                kGap + static_cast<int>(columns) * (kCellTotalWidth + kGap));
  Fill(&canvas, 0, 0, canvas.height, canvas.width, kWhite);
  data::JpegDecoder decoder;
  int bad = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    const int y0 = kGap + static_cast<int>(r) * (kCellTotalHeight + kGap);
    DrawCell(rows[r].query_path, kQuery, "q", &decoder, &canvas, y0, kGap, &bad);
    for (size_t c = 0; c < rows[r].gallery_paths.size(); ++c) {
      char label[32];
      std::snprintf(label, sizeof(label), "%zu %.3f", c + 1, rows[r].distances[c]);
      DrawCell(rows[r].gallery_paths[c], rows[r].correct[c] ? kGreen : kRed, label, &decoder,
               &canvas, y0, kGap + static_cast<int>(c + 1) * (kCellTotalWidth + kGap), &bad);
    }
  }
  if (unreadable != nullptr) *unreadable = bad;
  const StatusOr<std::vector<uint8_t>> jpeg = data::EncodeJpeg(canvas, 92);
  if (!jpeg.ok()) return jpeg.status().Annotate(out_path);
  // Refuses a FIFO, device or directory in the way (opening a FIFO to write would block).
  REID_RETURN_IF_ERROR(base::CheckOutputFile(out_path));
  return base::WriteFileAtomically(out_path, std::string(jpeg->begin(), jpeg->end()));
}

}  // namespace reid::trainer
