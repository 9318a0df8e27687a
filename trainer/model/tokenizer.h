// CLIP's byte-level BPE tokenizer (clip/simple_tokenizer.py) with identical ids: text cleaning,
// Unicode-aware pre-tokenisation through PCRE2, BPE merges, start/end tokens, context padding.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"

namespace reid::model {

class Tokenizer {
 public:
  // Reads CLIP's merges file (gzip or plain text, e.g. bpe_simple_vocab_16e6.txt.gz; 49,408 ids).
  // An empty path gives the byte-level fallback: 512 byte symbols + 2 specials (514 ids).
  // NotFound (naming the file) when it cannot be opened, DataLoss when it cannot be read or parsed.
  static StatusOr<std::unique_ptr<Tokenizer>> Create(const std::string& merges_path);
  ~Tokenizer();

  // Cleaned, pre-tokenised and BPE-encoded ids of `text`, without start/end tokens.
  std::vector<int64_t> Encode(const std::string& text) const;

  // [sot] + Encode(text) + [eot]. Longer than context_length: InvalidArgument unless `truncate`,
  // which cuts to context_length and makes the last id eot. No padding.
  StatusOr<std::vector<int64_t>> Tokenize(const std::string& text, int64_t context_length,
                                          bool truncate) const;

  int64_t sot() const { return sot_; }
  int64_t eot() const { return eot_; }
  int64_t vocab_size() const { return static_cast<int64_t>(encoder_.size()); }

 private:
  Tokenizer();
  void BuildVocab(const std::vector<std::pair<std::string, std::string>>& merges);
  void Bpe(const std::string& token, std::vector<int64_t>* out) const;
  std::vector<int64_t> EncodeUpTo(const std::string& text, size_t max_ids) const;

  std::vector<std::string> byte_encoder_;  // byte -> UTF-8 of its printable stand-in
  std::unordered_map<std::string, int64_t> encoder_;
  std::unordered_map<std::string, int64_t> bpe_ranks_;  // "a b" -> merge rank
  int64_t sot_ = 0, eot_ = 0;
  struct Regexes;
  std::unique_ptr<Regexes> re_;
};

// The cleaning CLIP applies before pre-tokenisation: HTML unescape twice, strip, runs of
// whitespace to one space, lower case. (ftfy.fix_text is not replicated: it changes only
// mis-encoded or non-NFC text.)
std::string CleanText(const std::string& text);

// Python's html.unescape for numeric references and the common named entities.
std::string HtmlUnescape(const std::string& text);

// One code point as UTF-8.
std::string Utf8FromCodePoint(char32_t c);

}  // namespace reid::model
