// The retrieval grid of the paper's figure 4: each row a query followed by its top gallery
// matches (junk removed, as the protocol ranks them), a green border for a correct match and red
// for a wrong one, the rank and distance under each image; written as JPEG (libjpeg-turbo).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace reid::trainer {

// One row of the grid: a query and its ranked gallery items.
struct GridRow {
  std::string query_path;
  std::vector<std::string> gallery_paths;  // best first
  std::vector<float> distances;
  std::vector<bool> correct;
};

// Geometry of a cell: the image (kCellHeight x kCellWidth) inside a kBorder border, a label strip
// of kLabelHeight under it; cells kGap apart. Row r, column c (0 = the query) starts at
// (kGap + r * (kCellTotalHeight + kGap), kGap + c * (kCellTotalWidth + kGap)).
inline constexpr int kCellHeight = 128, kCellWidth = 64, kBorder = 4, kLabelHeight = 9, kGap = 4;
inline constexpr int kCellTotalHeight = kCellHeight + 2 * kBorder + kLabelHeight;
inline constexpr int kCellTotalWidth = kCellWidth + 2 * kBorder;

// Draws the rows (columns: the query, then up to the longest row's matches) and writes a JPEG.
// An image that cannot be read is drawn grey (and counted in *unreadable when not null).
Status WriteRetrievalGrid(const std::vector<GridRow>& rows, const std::string& out_path,
                          int* unreadable);

}  // namespace reid::trainer
