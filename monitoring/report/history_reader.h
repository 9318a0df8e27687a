// Reads OUTPUT_DIR/history.jsonl (one reid.proto.HistoryRecord as JSON per line, written by rank
// 0 during training) for `reid report`. The file is untrusted: lines are bounded in length and in
// number, a bad line is skipped with a warning naming its line number, and memory stays bounded
// however long the file is (a long history is thinned evenly, the last record always kept).
#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "base/status.h"
#include "proto/history.pb.h"

namespace reid::report {

struct HistoryLimits {
  size_t max_line_bytes = 64 * 1024;  // a longer line is skipped (and reported)
  int64_t max_lines = 10'000'000;     // lines after this many are not read (and reported)
  size_t max_kept_records = 20'000;  // per kind; above it every other record is dropped, repeatedly
  size_t max_warnings = 50;          // warnings kept (the rest are only counted)
  size_t max_loss_components = 16;   // distinct loss names; others are dropped (and reported)
};

struct History {
  std::vector<proto::HistoryRecord> steps;  // STEP records in file order (thinned when long)
  std::vector<proto::HistoryRecord> evals;  // EVAL records in file order (thinned when long)
  int64_t step_records = 0;                 // STEP lines read (before thinning)
  int64_t eval_records = 0;                 // EVAL lines read
  int64_t lines = 0;                        // lines read, blank ones included
  int64_t bad_lines = 0;                    // lines skipped as unreadable
  bool truncated = false;                   // stopped at max_lines
  std::vector<std::string> warnings;        // "NAME:LINE: why", the first max_warnings of them
  int64_t warnings_dropped = 0;             // warnings beyond max_warnings
};

// Parses history.jsonl text from `in`; `name` prefixes the warnings ("run/history.jsonl:12: ...").
// Never fails: what cannot be read is reported in History::warnings.
History ParseHistory(std::istream& in, const std::string& name, const HistoryLimits& limits = {});

// The first max_chars bytes of `text` on one line: control and non-ASCII bytes become single
// spaces (parser messages quote the untrusted input, and end up on a terminal or in a log).
std::string PrintableOneLine(const std::string& text, size_t max_chars);

// Reads the file at `path`: NotFound when it does not exist, InvalidArgument when it is not a
// regular file or cannot be opened.
StatusOr<History> ReadHistory(const std::string& path, const HistoryLimits& limits = {});

}  // namespace reid::report
