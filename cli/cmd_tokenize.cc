// `reid tokenize`: CLIP token ids of each line of stdin (start and end tokens, no padding).
#include <gflags/gflags.h>

#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "trainer/model/tokenizer.h"

DEFINE_string(
    bpe_vocab, "",
    "CLIP merges file (bpe_simple_vocab_16e6.txt.gz); empty = byte-level fallback (514 ids); "
    "reid train: replaces model.bpe_vocab");
DEFINE_int32(context_length, 77, "Most tokens per text, start and end included");
DEFINE_bool(truncate, false,
            "Cut texts longer than --context_length (last id = end token) "
            "instead of failing");

namespace reid::trainer {

int RunTokenize(int /*argc*/, char** /*argv*/, const std::vector<std::string>& /*set_overrides*/) {
  if (FLAGS_context_length < 2) {
    return Fail("tokenize", Status::InvalidArgument(
                                "--context_length = " + std::to_string(FLAGS_context_length) +
                                ": must be at least 2"));
  }
  StatusOr<std::unique_ptr<model::Tokenizer>> tokenizer = model::Tokenizer::Create(FLAGS_bpe_vocab);
  if (!tokenizer.ok()) {
    return Fail("tokenize",
                Status::InvalidArgument("--bpe_vocab: " + tokenizer.status().message()));
  }
  std::string line;
  for (int64_t n = 1; std::getline(std::cin, line); ++n) {
    StatusOr<std::vector<int64_t>> ids =
        (*tokenizer)->Tokenize(line, FLAGS_context_length, FLAGS_truncate);
    if (!ids.ok()) {
      return Fail("tokenize",
                  Status::InvalidArgument("stdin line " + std::to_string(n) + ": " +
                                          ids.status().message() + " (use --truncate)"));
    }
    for (size_t i = 0; i < ids->size(); ++i) std::cout << (i ? " " : "") << (*ids)[i];
    std::cout << "\n";
  }
  return kExitOk;
}

}  // namespace reid::trainer
