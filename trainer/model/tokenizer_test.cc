// CLIP tokenizer: OpenAI's ids on the shared cases (../shared/clip/tokenizer_cases.tsv with the
// real merges file beside it), the byte-level fallback, truncation and text cleaning.
#include "trainer/model/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "base/status_test_util.h"

namespace reid::model {
namespace {

const char kSharedDir[] = "../shared/clip/";

// Decodes a JSON string literal (with \n, \t, \", \\, \uXXXX incl. surrogate pairs) to UTF-8.
std::string JsonString(const std::string& s) {
  std::string out;
  for (size_t i = 1; i + 1 < s.size(); ++i) {
    if (s[i] != '\\') {
      out.push_back(s[i]);
      continue;
    }
    const char c = s[++i];
    if (c == 'n')
      out.push_back('\n');
    else if (c == 't')
      out.push_back('\t');
    else if (c == 'r')
      out.push_back('\r');
    else if (c == 'u') {
      char32_t cp = std::stoul(s.substr(i + 1, 4), nullptr, 16);
      i += 4;
      if (cp >= 0xD800 && cp < 0xDC00 && s.compare(i + 1, 2, "\\u") == 0) {
        cp = 0x10000 + ((cp - 0xD800) << 10) +
             (std::stoul(s.substr(i + 3, 4), nullptr, 16) - 0xDC00);
        i += 6;
      }
      out += Utf8FromCodePoint(cp);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

TEST(Tokenizer, MatchesOpenAiOnSharedCases) {
  const std::string merges = std::string(kSharedDir) + "bpe_simple_vocab_16e6.txt.gz";
  std::ifstream cases(std::string(kSharedDir) + "tokenizer_cases.tsv");
  if (!cases || !std::ifstream(merges)) {
    GTEST_SKIP() << "no " << kSharedDir << "tokenizer_cases.tsv or merges file beside it";
  }
  StatusOr<std::unique_ptr<Tokenizer>> created = Tokenizer::Create(merges);
  ASSERT_OK(created);
  const Tokenizer* tok = created->get();
  EXPECT_EQ(tok->vocab_size(), 49408);
  int checked = 0;
  for (std::string line; std::getline(cases, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos) << line;
    const std::string text = JsonString(line.substr(0, tab));
    std::vector<int64_t> want;
    std::istringstream ids(line.substr(tab + 1));
    for (int64_t id; ids >> id;) want.push_back(id);
    StatusOr<std::vector<int64_t>> got = tok->Tokenize(text, 1 << 20, false);
    ASSERT_OK(got);
    EXPECT_EQ(*got, want) << "text: " << text;
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

TEST(Tokenizer, ByteLevelFallbackHas514Ids) {
  StatusOr<std::unique_ptr<Tokenizer>> created = Tokenizer::Create("");
  ASSERT_OK(created);
  const Tokenizer* tok = created->get();
  EXPECT_EQ(tok->vocab_size(), 514);
  EXPECT_EQ(tok->sot(), 512);
  EXPECT_EQ(tok->eot(), 513);
  // 'x</w>' = 256 + (120 - 33) = 343 in both vocabularies; "ab" = 'a', 'b</w>'.
  EXPECT_EQ(tok->Encode("X"), (std::vector<int64_t>{343}));
  EXPECT_EQ(tok->Encode("ab."), (std::vector<int64_t>{64, 256 + 65, 256 + 13}));
}

TEST(Tokenizer, InvalidUtf8BecomesReplacementCharacters) {
  StatusOr<std::unique_ptr<Tokenizer>> created = Tokenizer::Create("");
  ASSERT_OK(created);
  const Tokenizer* tok = created->get();
  // A UTF-8-encoded surrogate, an overlong NUL and a lead byte past U+10FFFF: each byte becomes
  // U+FFFD (as Python's errors="replace"), and the text after them is still tokenized.
  const std::string fffd = "\xEF\xBF\xBD";
  for (const std::string bad : {"\xED\xA0\x80", "\xC0\x80", "\xF5\x80\x80"}) {
    std::string replaced;
    for (size_t i = 0; i < bad.size(); ++i) replaced += fffd;
    const auto ids = tok->Encode(bad + " x");
    EXPECT_EQ(ids, tok->Encode(replaced + " x")) << "bytes " << bad.size();
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.back(), 343) << "'x</w>' after the invalid bytes";
  }
}

TEST(Tokenizer, TruncatesToContextWithEndToken) {
  StatusOr<std::unique_ptr<Tokenizer>> created = Tokenizer::Create("");
  ASSERT_OK(created);
  const Tokenizer* tok = created->get();
  StatusOr<std::vector<int64_t>> ids = tok->Tokenize("a b c d e f", 5, false);
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().exit_code(), 2);
  EXPECT_NE(ids.status().message().find("more than context length 5"), std::string::npos)
      << ids.status().message();
  ids = tok->Tokenize("a b c d e f", 5, true);
  ASSERT_OK(ids);
  EXPECT_EQ(ids->size(), 5u);
  EXPECT_EQ(ids->front(), 512);
  EXPECT_EQ(ids->back(), 513);
}

TEST(Tokenizer, CleaningUnescapesCollapsesAndLowers) {
  EXPECT_EQ(CleanText("  A&amp;amp;B \t\n C&#x41;&#65;&lt;  "), "a&b caa<");
  EXPECT_EQ(CleanText("ÜBER Ελληνικά"), "über ελληνικά");
  EXPECT_EQ(HtmlUnescape("&copy; &#150; &bogus;"), "\u00a9 \u2013 &bogus;");
}

// clip/simple_tokenizer.py's bpe(), as written there: the lowest-ranked adjacent pair, all of its
// occurrences merged left to right, until no pair has a rank. Quadratic; the reference.
std::vector<std::string> PythonBpe(
    const std::string& word, const std::map<std::pair<std::string, std::string>, int>& ranks) {
  std::vector<std::string> w;
  for (char c : word) w.push_back(std::string(1, c));
  w.back() += "</w>";
  while (w.size() > 1) {
    int best = -1;
    std::pair<std::string, std::string> pair;
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      auto it = ranks.find({w[i], w[i + 1]});
      if (it != ranks.end() && (best < 0 || it->second < best)) {
        best = it->second;
        pair = it->first;
      }
    }
    if (best < 0) break;
    std::vector<std::string> merged;
    for (size_t i = 0; i < w.size();) {
      if (i + 1 < w.size() && w[i] == pair.first && w[i + 1] == pair.second) {
        merged.push_back(w[i] + w[i + 1]);
        i += 2;
      } else {
        merged.push_back(w[i++]);
      }
    }
    w.swap(merged);
  }
  return w;
}

// Issue 12: BPE is O(n log n) (a heap) instead of Python's rescans; it must still give Python's
// merges, also for merge lists whose ranks are shuffled (a pair ranked before its parts exist).
TEST(Tokenizer, HeapBpeMatchesPythonsMergeOrder) {
  std::mt19937 rng(12);
  std::vector<std::string> symbols = {"a", "b", "c", "a</w>", "b</w>", "c</w>"};
  std::vector<std::pair<std::string, std::string>> merges;
  std::set<std::string> made(symbols.begin(), symbols.end());
  while (merges.size() < 60) {
    std::string x = symbols[rng() % symbols.size()], y = symbols[rng() % symbols.size()];
    if (x.find("</w>") != std::string::npos || made.count(x + y)) continue;
    merges.emplace_back(x, y);
    made.insert(x + y);
    symbols.push_back(x + y);
  }
  std::shuffle(merges.begin() + 20, merges.end(), rng);
  char path[] = "/tmp/tokenizer_test_merges_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream out(path);
  out << "#version: test\n";
  std::map<std::pair<std::string, std::string>, int> ranks;
  for (size_t r = 0; r < merges.size(); ++r) {
    out << merges[r].first << " " << merges[r].second << "\n";
    ranks[merges[r]] = static_cast<int>(r);
  }
  out.close();
  StatusOr<std::unique_ptr<Tokenizer>> created = Tokenizer::Create(path);
  std::remove(path);
  ASSERT_OK(created);
  const Tokenizer* tok = created->get();
  // Ids: byte symbols in bytes_to_unicode order ('a' = 64, 'a</w>' = 256 + 64), merges 512 + rank.
  auto id_of = [&](const std::string& sym) -> int64_t {
    for (size_t r = 0; r < merges.size(); ++r)
      if (merges[r].first + merges[r].second == sym) return 512 + static_cast<int64_t>(r);
    const bool end = sym.size() > 1;
    return (end ? 256 : 0) + (sym[0] - 33);
  };
  for (int n = 0; n < 300; ++n) {
    std::string word;
    const int len = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) word.push_back("abc"[rng() % 3]);
    std::vector<int64_t> want;
    for (const std::string& sym : PythonBpe(word, ranks)) want.push_back(id_of(sym));
    EXPECT_EQ(tok->Encode(word), want) << word;
  }
  // A 1 MB word (minutes in Python) takes well under a few seconds.
  const auto start = std::chrono::steady_clock::now();
  std::string big;
  for (int i = 0; i < 1000000; ++i) big.push_back("abc"[rng() % 3]);
  StatusOr<std::vector<int64_t>> ids = tok->Tokenize(big, 77, /*truncate=*/true);
  ASSERT_OK(ids);
  EXPECT_EQ(ids->size(), 77u);
  EXPECT_FALSE(tok->Encode(big).empty());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);
}

TEST(Tokenizer, MissingMergesFileIsAnError) {
  StatusOr<std::unique_ptr<Tokenizer>> created = Tokenizer::Create("/nonexistent/bpe.txt.gz");
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.status().exit_code(), 2);
  EXPECT_NE(created.status().message().find("/nonexistent/bpe.txt.gz"), std::string::npos);
}

}  // namespace
}  // namespace reid::model
