// history.jsonl reader for `reid report` (see history_reader.h).
#include "monitoring/report/history_reader.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <memory>
#include <set>

#include "base/file_util.h"

namespace reid::report {
namespace {

constexpr uint64_t kMaxHistoryBytes = uint64_t{4} << 30;

// Reads the next line into *line without its '\n' (and a trailing '\r'). A line longer than
// max_bytes is consumed to its end, but only its first max_bytes are kept and *too_long is set.
// False at the end of the input.
bool NextLine(std::streambuf* in, size_t max_bytes, std::string* line, bool* too_long) {
  line->clear();
  *too_long = false;
  bool any = false;
  for (int c = in->sbumpc(); c != std::char_traits<char>::eof(); c = in->sbumpc()) {
    any = true;
    if (c == '\n') break;
    if (line->size() < max_bytes) {
      line->push_back(static_cast<char>(c));
    } else {
      *too_long = true;
    }
  }
  if (!line->empty() && line->back() == '\r') line->pop_back();
  return any;
}

bool IsBlank(const std::string& line) { return line.find_first_not_of(" \t") == std::string::npos; }

// Appends `r` to `kept`, which holds every `*stride`-th record of its kind: when `kept` reaches
// 2 * cap, every other record is dropped and the stride doubles. `seen` counts records offered.
void Keep(proto::HistoryRecord&& r, size_t cap, int64_t seen, int64_t* stride,
          std::vector<proto::HistoryRecord>* kept) {
  if (seen % *stride != 0) {
    return;
  }
  kept->push_back(std::move(r));
  if (kept->size() < 2 * cap) return;
  size_t out = 0;
  for (size_t i = 0; i < kept->size(); i += 2) (*kept)[out++] = std::move((*kept)[i]);
  kept->resize(out);
  *stride *= 2;
}

class Parser {
 public:
  Parser(const std::string& name, const HistoryLimits& limits) : name_(name), limits_(limits) {}

  void Warn(int64_t line, const std::string& why) {
    if (history_.warnings.size() < limits_.max_warnings) {
      history_.warnings.push_back(name_ + ":" + std::to_string(line) + ": " + why);
    } else {
      ++history_.warnings_dropped;
    }
  }

  // One non-blank line of at most max_line_bytes.
  void Line(int64_t number, const std::string& text) {
    proto::HistoryRecord r;
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    const auto status = google::protobuf::util::JsonStringToMessage(text, &r, options);
    if (!status.ok()) {
      ++history_.bad_lines;
      Warn(number, "not a HistoryRecord JSON object (" +
                       PrintableOneLine(std::string(status.message()), 200) + "), skipped");
      return;
    }
    if (!r.has_kind()) {
      ++history_.bad_lines;
      Warn(number, "no \"kind\" (STEP or EVAL), skipped");
      return;
    }
    DropExtraLosses(number, &r);
    if (r.kind() == proto::HistoryRecord::EVAL) {
      Keep(std::move(r), limits_.max_kept_records, history_.eval_records++, &eval_stride_,
           &history_.evals);
    } else {
      last_step_ = r;
      Keep(std::move(r), limits_.max_kept_records, history_.step_records++, &step_stride_,
           &history_.steps);
    }
  }

  History Finish() {
    // The newest STEP record always ends the list, even when thinning skipped it.
    if (history_.step_records > 0 && (history_.step_records - 1) % step_stride_ != 0) {
      history_.steps.push_back(last_step_);
    }
    return std::move(history_);
  }

  History* history() { return &history_; }

 private:
  // Loss names beyond the first max_loss_components distinct ones are dropped.
  void DropExtraLosses(int64_t number, proto::HistoryRecord* r) {
    std::vector<std::string> extra;
    for (const auto& [loss, value] : r->losses()) {
      if (loss_names_.count(loss)) continue;
      if (loss_names_.size() < limits_.max_loss_components && loss.size() <= 64) {
        loss_names_.insert(loss);
      } else {
        extra.push_back(loss);
      }
    }
    for (const std::string& loss : extra) r->mutable_losses()->erase(loss);
    if (!extra.empty()) {
      Warn(number, std::to_string(extra.size()) + " loss name(s) beyond the first " +
                       std::to_string(limits_.max_loss_components) + " (or over 64 bytes) ignored");
    }
  }

  const std::string name_;
  const HistoryLimits limits_;
  History history_;
  int64_t step_stride_ = 1, eval_stride_ = 1;
  proto::HistoryRecord last_step_;
  std::set<std::string> loss_names_;
};

}  // namespace

std::string PrintableOneLine(const std::string& text, size_t max_chars) {
  std::string out;
  for (char c : text.substr(0, max_chars)) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

History ParseHistory(std::istream& in, const std::string& name, const HistoryLimits& limits) {
  Parser parser(name, limits);
  History* h = parser.history();
  std::string line;
  bool too_long = false;
  std::streambuf* buf = in.rdbuf();
  while (buf != nullptr && NextLine(buf, limits.max_line_bytes, &line, &too_long)) {
    if (h->lines >= limits.max_lines) {
      h->truncated = true;
      parser.Warn(h->lines + 1, "more than " + std::to_string(limits.max_lines) +
                                    " lines: the rest of the file is not read");
      break;
    }
    const int64_t number = ++h->lines;
    if (too_long) {
      ++h->bad_lines;
      parser.Warn(number,
                  "longer than " + std::to_string(limits.max_line_bytes) + " bytes, skipped");
    } else if (!IsBlank(line)) {
      parser.Line(number, line);
    }
  }
  return parser.Finish();
}

StatusOr<History> ReadHistory(const std::string& path, const HistoryLimits& limits) {
  // Through the bounded regular-file reader: a FIFO or a device is refused before it is read,
  // and a file larger than kMaxHistoryBytes is refused (10 million lines of 400 bytes fit).
  StatusOr<std::unique_ptr<std::istream>> in =
      base::OpenRegularFileStream(path, kMaxHistoryBytes, "a history file");
  if (!in.ok()) {
    if (in.status().code() == Status::Code::kNotFound) {
      return Status::NotFound(path + ": not found (a run writes it from its first log interval)");
    }
    return in.status();
  }
  return ParseHistory(**in, path, limits);
}

}  // namespace reid::report
