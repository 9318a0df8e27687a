// Fuzzes CLIP's tokenizer (text cleaning, HTML unescaping, UTF-8 decoding, PCRE2 pre-tokenising,
// BPE) on arbitrary bytes, with and without truncation, through the byte-level vocabulary.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto* tokenizer = reid::model::Tokenizer::Create("").value().release();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const bool truncate = size > 0 && (data[0] & 1);
  const reid::StatusOr<std::vector<int64_t>> ids = tokenizer->Tokenize(text, 77, truncate);
  if (ids.ok()) {
    if (ids->size() > 77 || ids->front() != tokenizer->sot() || ids->back() != tokenizer->eot())
      __builtin_trap();  // the contract of Tokenize
    for (int64_t id : *ids)
      if (id < 0 || id >= tokenizer->vocab_size()) __builtin_trap();
  }
  return 0;
}
