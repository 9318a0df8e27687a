// CLIP's byte-level BPE tokenizer. Pre-tokenisation regex and order of the vocabulary as in
// clip/simple_tokenizer.py; Unicode letter/number classes through PCRE2 (UTF + UCP).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "trainer/model/tokenizer.h"

#include <glog/logging.h>
#include <locale.h>
#include <pcre2.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cwctype>
#include <limits>
#include <queue>
#include <sstream>

#include "base/file_util.h"

namespace reid::model {
namespace {

constexpr int64_t kNumMerges = 49152 - 256 - 2;  // lines 1..48894 of the merges file
constexpr const char* kPattern =
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|"
    "[^\\s\\p{L}\\p{N}]+";

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// UTF-8 -> code points; an invalid byte becomes U+FFFD (as Python's errors="replace").
std::u32string DecodeUtf8(const std::string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    const int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    bool ok = n >= 0 && i + n < s.size();
    char32_t cp = ok ? (n == 0 ? c : (c & (0x3F >> n))) : 0;
    for (int k = 1; ok && k <= n; ++k) {
      const unsigned char d = s[i + k];
      ok = (d & 0xC0) == 0x80;
      cp = (cp << 6) | (d & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid too (PCRE2 rejects them);
    // each byte of such a sequence becomes U+FFFD, as Python's decoder does.
    static constexpr char32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    ok = ok && cp >= kMin[n] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    out.push_back(ok ? cp : 0xFFFD);
    i += ok ? n + 1 : 1;
  }
  return out;
}

std::string EncodeUtf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) AppendUtf8(c, &out);
  return out;
}

locale_t Utf8Locale() {
  static locale_t loc = [] {
    locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
    if (l == static_cast<locale_t>(0))
      l = newlocale(LC_CTYPE_MASK, "C.utf8", static_cast<locale_t>(0));
    return l;
  }();
  return loc;
}

bool IsSpace(char32_t c) {
  if (c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x1F) || c == 0x85) return true;
  locale_t loc = Utf8Locale();
  return c > 127 && loc != static_cast<locale_t>(0) && iswspace_l(static_cast<wint_t>(c), loc);
}

char32_t ToLower(char32_t c) {
  if (c < 128) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  locale_t loc = Utf8Locale();
  if (loc == static_cast<locale_t>(0)) return c;
  return static_cast<char32_t>(towlower_l(static_cast<wint_t>(c), loc));
}

// Reads a gzip (or plain) text file whole: opened through the bounded regular-file reader (a FIFO
// blocked gzopen before), at most kMaxMergesFileBytes on disk and kMaxMergesTextBytes of text
// (CLIP's file: 1.4 MB, 2.0 MB of text; a small gzip can inflate to gigabytes).
constexpr uint64_t kMaxMergesFileBytes = uint64_t{64} << 20;
constexpr size_t kMaxMergesTextBytes = size_t{256} << 20;

StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  StatusOr<int> fd = base::OpenRegularFile(path, kMaxMergesFileBytes, "a BPE merges file");
  if (!fd.ok()) {
    if (fd.status().code() == Status::Code::kNotFound) {
      return Status::NotFound("cannot open BPE merges file '" + path + "'");
    }
    return fd.status();
  }
  gzFile f = gzdopen(*fd, "rb");  // owns the descriptor from here (gzclose closes it)
  if (f == nullptr) {
    close(*fd);
    return Status::Internal("cannot read BPE merges file '" + path + "': out of memory");
  }
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) {
    out.append(buf, n);
    if (out.size() > kMaxMergesTextBytes) {
      gzclose(f);
      return Status::InvalidArgument("BPE merges file '" + path + "': more than " +
                                     base::FormatLimit(kMaxMergesTextBytes) +
                                     " of text; not a merges file");
    }
  }
  // gzread returns 0 at a truncated stream's end too: only gzerror tells (Z_BUF_ERROR).
  int zerr = Z_OK;
  const char* why = gzerror(f, &zerr);
  const bool ok = n == 0 && (zerr == Z_OK || zerr == Z_STREAM_END);
  const std::string reason = why ? why : "read error";  // owned by f: copied before gzclose
  gzclose(f);
  if (!ok) {
    return Status::DataLoss("cannot read BPE merges file '" + path + "': " + reason +
                            " (truncated or corrupt gzip?)");
  }
  return out;
}

}  // namespace

std::string Utf8FromCodePoint(char32_t c) {
  std::string s;
  AppendUtf8(c, &s);
  return s;
}

struct Tokenizer::Regexes {
  pcre2_code* pattern = nullptr;
  ~Regexes() { pcre2_code_free(pattern); }
};

Tokenizer::Tokenizer() : re_(std::make_unique<Regexes>()) {}
Tokenizer::~Tokenizer() = default;

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const std::string& merges_path) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  std::vector<std::pair<std::string, std::string>> merges;
  if (!merges_path.empty()) {
    REID_ASSIGN_OR_RETURN(const std::string text, ReadMaybeGzip(merges_path));
    std::istringstream in(text);
    std::string line;
    std::getline(in, line);  // the version header
    while (static_cast<int64_t>(merges.size()) < kNumMerges && std::getline(in, line)) {
      std::istringstream fields(line);
      std::string a, b, extra;
      if (!(fields >> a >> b) || (fields >> extra)) {
        return Status::DataLoss("BPE merges file '" + merges_path + "' line " +
                                std::to_string(merges.size() + 2) +
                                ": expected two symbols, got '" + line + "'");
      }
      merges.emplace_back(a, b);
    }
    if (merges.empty())
      return Status::DataLoss("BPE merges file '" + merges_path + "' has no merges");
  }
  t->BuildVocab(merges);
  int code = 0;
  PCRE2_SIZE offset = 0;
  t->re_->pattern = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &code, &offset, nullptr);
  CHECK(t->re_->pattern != nullptr) << "PCRE2 could not compile the tokenizer pattern: " << code;
  return t;
}

void Tokenizer::BuildVocab(const std::vector<std::pair<std::string, std::string>>& merges) {
  // bytes_to_unicode(): printable bytes map to themselves, the others to 256 + n, in byte order.
  std::vector<int> order;
  byte_encoder_.assign(256, "");
  for (int b = 0; b < 256; ++b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
      order.push_back(b);
      AppendUtf8(static_cast<char32_t>(b), &byte_encoder_[b]);
    }
  }
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (byte_encoder_[b].empty()) {
      order.push_back(b);
      AppendUtf8(static_cast<char32_t>(256 + n++), &byte_encoder_[b]);
    }
  }
  int64_t id = 0;
  for (int b : order) encoder_[byte_encoder_[b]] = id++;
  for (int b : order) encoder_[byte_encoder_[b] + "</w>"] = id++;
  for (size_t r = 0; r < merges.size(); ++r) {
    encoder_[merges[r].first + merges[r].second] = id++;
    bpe_ranks_[merges[r].first + " " + merges[r].second] = static_cast<int64_t>(r);
  }
  sot_ = id;
  encoder_["<|startoftext|>"] = id++;
  eot_ = id;
  encoder_["<|endoftext|>"] = id++;
}

// BPE as clip/simple_tokenizer.py's bpe(): repeatedly take the lowest-ranked adjacent pair and
// merge all its occurrences, left to right. Python rescans the whole word per merge (quadratic,
// minutes for a 1 MB word); here a heap of candidate pairs over a linked list of symbols gives the
// same merges in O(n log n): all entries of the lowest rank are taken as one batch in position
// order (a rank names one pair, and merging it cannot create another occurrence of that pair).
void Tokenizer::Bpe(const std::string& token, std::vector<int64_t>* out) const {
  if (token == "<|startoftext|>" || token == "<|endoftext|>") {
    out->push_back(encoder_.at(token));
    return;
  }
  const int n = static_cast<int>(token.size());
  std::vector<std::string> sym(n);
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    sym[i] = byte_encoder_[static_cast<unsigned char>(token[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  sym[n - 1] += "</w>";
  using Entry = std::pair<int64_t, int>;  // (rank, left symbol index)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto rank_of = [&](int left) -> int64_t {
    if (left < 0 || next[left] < 0) return -1;
    auto it = bpe_ranks_.find(sym[left] + " " + sym[next[left]]);
    return it == bpe_ranks_.end() ? -1 : it->second;
  };
  auto push = [&](int left) {
    const int64_t r = rank_of(left);
    if (r >= 0) heap.push({r, left});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> alive(n, true);
  std::vector<int> batch;
  while (!heap.empty()) {
    const int64_t rank = heap.top().first;
    batch.clear();
    while (!heap.empty() && heap.top().first == rank) {
      batch.push_back(heap.top().second);
      heap.pop();
    }
    std::sort(batch.begin(), batch.end());
    for (int left : batch) {
      if (!alive[left] || rank_of(left) != rank) continue;  // stale: a neighbour changed
      const int right = next[left];
      sym[left] += sym[right];
      alive[right] = false;
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      push(prev[left]);
      push(left);
    }
  }
  for (int i = 0; i >= 0; i = next[i]) out->push_back(encoder_.at(sym[i]));
}

std::vector<int64_t> Tokenizer::Encode(const std::string& text) const {
  return EncodeUpTo(text, std::numeric_limits<size_t>::max());
}

// Stops once `max_ids` ids exist (a context that is already full needs no more).
std::vector<int64_t> Tokenizer::EncodeUpTo(const std::string& text, size_t max_ids) const {
  // CleanText decodes and re-encodes the text, so `clean` is valid UTF-8: PCRE2 need not check
  // it again on each match (which made tokenising a long line quadratic).
  const std::string clean = CleanText(text);
  std::vector<int64_t> ids;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re_->pattern, nullptr);
  PCRE2_SIZE start = 0;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(clean.data());
  while (start < clean.size() && ids.size() < max_ids) {
    const int rc =
        pcre2_match(re_->pattern, subject, clean.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;  // only whitespace is left
    CHECK_GE(rc, 0) << "tokenizer: pcre2_match failed with code " << rc << " at byte " << start;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] == ov[0]) break;  // the pattern has no empty alternative
    Bpe(clean.substr(ov[0], ov[1] - ov[0]), &ids);
    start = ov[1];
  }
  pcre2_match_data_free(md);
  return ids;
}

StatusOr<std::vector<int64_t>> Tokenizer::Tokenize(const std::string& text, int64_t context_length,
                                                   bool truncate) const {
  std::vector<int64_t> ids = {sot_};
  // One id past the context is enough to know the text does not fit.
  const size_t room = static_cast<size_t>(std::max<int64_t>(context_length, 1));
  for (int64_t id : EncodeUpTo(text, room)) ids.push_back(id);
  ids.push_back(eot_);
  if (static_cast<int64_t>(ids.size()) > context_length) {
    if (!truncate) {
      return Status::InvalidArgument("text has more than context length " +
                                     std::to_string(context_length) + " tokens: '" +
                                     text.substr(0, 60) + "'");
    }
    ids.resize(context_length);
    ids.back() = eot_;
  }
  return ids;
}

std::string CleanText(const std::string& text) {
  std::u32string s = DecodeUtf8(HtmlUnescape(HtmlUnescape(text)));
  std::u32string out;
  bool pending_space = false;
  for (char32_t c : s) {
    if (IsSpace(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(ToLower(c));
  }
  return EncodeUtf8(out);
}

}  // namespace reid::model
