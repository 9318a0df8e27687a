// The `reid` command: parses flags and dispatches to a subcommand from a plain table.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "base/init.h"
#include "cli/commands.h"
#include "trainer/distributed/ranks.h"

namespace reid::trainer {
namespace {

// An old spelling of a flag, kept for one release: renamed to `now` with a one-line warning.
struct DeprecatedFlag {
  const char* old;
  const char* now;
};

struct Subcommand {
  const char* name;
  const char* summary;
  std::vector<const char*> flags;  // the flags this subcommand reads (shown by --help)
  int (*run)(int argc, char** argv, const std::vector<std::string>& set_overrides);
  std::vector<DeprecatedFlag> deprecated = {};  // old spellings of `flags` (also shown by --help)
};

const std::vector<Subcommand>& Table() {
  static const std::vector<Subcommand> table = {
      {"train",
       "train both stages (one process, or N ranks under mpirun); checkpoints, resume, eval",
       {"config", "set", "weights", "bpe_vocab", "output_dir", "data_root", "resume",
        "start_stage", "device"},
       RunTrain},
      {"eval",
       "evaluate a checkpoint on any dataset, or .npy features + meta CSVs (mAP, CMC, re-ranking)",
       {"config", "set", "checkpoint", "dataset", "data_root", "device", "rerank", "out_json", "query_features",
        "gallery_features", "query_meta", "gallery_meta", "visualize", "visualize_out",
        "visualize_queries"},
       RunEval},
      {"extract",
       "write a split's inference features (PREFIX.npy) and meta (PREFIX.csv) of a checkpoint",
       {"config", "set", "checkpoint", "dataset", "data_root", "split", "out", "device"},
       RunExtract},
      {"embed",
       "embeddings of any person crops (a folder or a list of JPEG/PNG files) as PREFIX.npy/.csv",
       {"checkpoint", "images", "out", "flip", "camid", "config", "set", "device"},
       RunEmbed},
      {"export",
       "a checkpoint as CLIP-ReID's state dict (--format=clipreid, .pth) or ONNX (--format=onnx)",
       {"checkpoint", "format", "out", "config", "set"},
       RunExport},
      {"import",
       "a CLIP-ReID state dict (.pth) as a checkpoint (eval, embed, export, --resume take it)",
       {"weights", "config", "set", "output_dir"},
       RunImport},
      {"ckpt", "checkpoint tools: show DIR | verify DIR | diff A B", {}, RunCkpt},
      {"print-config",
       "print the effective config (schema defaults, --config, --set)",
       {"config", "set"},
       RunPrintConfig},
      {"report",
       "write RUN_DIR/report.html: plots of history.jsonl, the last evaluation, the config",
       {"run_dir"},
       RunReport},
      {"version",
       "print version, git sha, LibTorch, BLAS, CUDA/NCCL and MPI availability",
       {},
       RunVersion},
      {"dataset-stats",
       "parse a dataset and print ids/images/cameras per split",
       {"dataset", "data_root", "json"},
       RunDatasetStats},
      {"synth",
       "write the synthetic Market-1501-layout dataset of JPEGs",
       {"config", "set", "output_dir", "ids", "cameras", "images_per_id", "seed", "height",
        "width"},
       RunSynth,
       {{"out", "output_dir"}}},
      {"tokenize",
       "print CLIP token ids of each stdin line (start/end tokens, no padding)",
       {"bpe_vocab", "context_length", "truncate"},
       RunTokenize},
      {"clip-encode",
       "CLIP image/text features of a checkpoint as .npy (as OpenAI's encode_*)",
       {"weights", "bpe_vocab", "images_npy", "image_size", "texts_file", "output_dir"},
       RunClipEncode,
       {{"out_dir", "output_dir"}}},
  };
  return table;
}

void PrintUsage(std::ostream& out) {
  out << "usage: reid <subcommand> [--flags]   (reid <subcommand> --help for its flags)\n\n";
  for (const Subcommand& s : Table()) {
    out << "  " << s.name << std::string(16 - std::min<size_t>(15, strlen(s.name)), ' ')
        << s.summary << "\n";
  }
}

void PrintSubcommandHelp(const Subcommand& s) {
  std::cout << "usage: reid " << s.name << " [--flags]\n" << s.summary << "\n\nflags:\n";
  for (const char* name : s.flags) {
    if (std::string(name) == "set") {
      std::cout << "  --set=TEXT  text-format override merged after --config; repeated fields "
                   "given here replace the list; may be given several times\n";
      continue;
    }
    gflags::CommandLineFlagInfo info;
    CHECK(gflags::GetCommandLineFlagInfo(name, &info))
        << "the subcommand table lists --" << name << " for " << s.name
        << ", but no such flag is defined";
    std::cout << "  --" << info.name << "  " << info.description << " (" << info.type
              << ", default \"" << info.default_value << "\")\n";
  }
  if (s.flags.empty()) std::cout << "  (none)\n";
  for (const DeprecatedFlag& d : s.deprecated) {
    std::cout << "  --" << d.old << "  deprecated spelling of --" << d.now
              << " (accepted with a warning; removed in the next release)\n";
  }
}

// Flag spellings are one per meaning across subcommands: --output_dir=DIR for every output
// folder, --out=FILE|PREFIX for file outputs, --run_dir=DIR for a run directory that is read.
// Old spellings are renamed here, per subcommand, with a warning; not gflags alias flags, because
// flags are global and --out still names a file in extract/embed/export while synth's old --out
// was a folder. `storage` holds the rewritten arguments.
void RenameDeprecatedFlags(const Subcommand& s, std::vector<char*>* args,
                           std::deque<std::string>* storage) {
  for (size_t i = 1; i < args->size(); ++i) {
    const std::string a = (*args)[i];
    if (a == "--") break;
    if (a.rfind("-", 0) != 0) continue;
    const size_t start = a.find_first_not_of('-');
    if (start == std::string::npos) continue;
    const size_t eq = a.find('=');
    const std::string name = a.substr(start, eq == std::string::npos ? eq : eq - start);
    for (const DeprecatedFlag& d : s.deprecated) {
      if (name != d.old) continue;
      std::cerr << "warning: reid " << s.name << ": --" << d.old << " is deprecated, use --"
                << d.now << " (the old spelling is removed in the next release)\n";
      storage->push_back(a.substr(0, start) + d.now +
                         (eq == std::string::npos ? "" : a.substr(eq)));
      (*args)[i] = storage->back().data();
    }
  }
}

// LibTorch defaults to one intra-op thread here: give this process its share of the CPUs of its
// affinity mask (divided among the ranks that share it when a launcher started us). The trainer
// applies dist.intra_op_threads once it has read the config.
void SetIntraOpThreads() {
  const dist::Ranks ranks = dist::RanksFromEnv([](const char* name) { return std::getenv(name); });
  at::set_num_threads(dist::IntraOpThreads(0, ranks));
}

// Takes every --set=TEXT / --set TEXT out of the arguments (gflags would keep only the last).
StatusOr<std::vector<std::string>> ExtractSetOverrides(std::vector<char*>* args) {
  std::vector<std::string> overrides;
  std::vector<char*> kept;
  for (size_t i = 0; i < args->size(); ++i) {
    const std::string a = (*args)[i];
    if (a.rfind("--set=", 0) == 0) {
      overrides.push_back(a.substr(6));
    } else if (a == "--set") {
      if (i + 1 >= args->size()) return Status::InvalidArgument("--set needs a value");
      overrides.push_back((*args)[++i]);
    } else {
      kept.push_back((*args)[i]);
    }
  }
  *args = kept;
  return overrides;
}

// A flag given on the command line that the subcommand does not read is a user error.
Status CheckFlagsBelongTo(const Subcommand& s, const std::vector<char*>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "--") break;
    if (a.rfind("-", 0) != 0) continue;
    a.erase(0, a.find_first_not_of('-'));
    a = a.substr(0, a.find('='));
    bool known = false;
    for (const char* f : s.flags) known |= (a == f || a == std::string("no") + f);
    if (!known) {
      return Status::InvalidArgument(std::string("does not take --") + a + " (see reid " + s.name +
                                     " --help)");
    }
  }
  return Status::Ok();
}

// gflags exits 1 by itself on a bad value (--ids=abc, --json=2, a bare --config); a bad value is
// a user error (exit 2), so each one is tried first on a saved copy of the flags.
Status CheckFlagValues(const std::vector<char*>& args) {
  gflags::FlagSaver saver;  // restores every flag on return
  for (size_t i = 1; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "--") break;
    if (a.rfind("-", 0) != 0) continue;
    a.erase(0, a.find_first_not_of('-'));
    const size_t eq = a.find('=');
    std::string name = a.substr(0, eq);
    gflags::CommandLineFlagInfo info;
    if (!gflags::GetCommandLineFlagInfo(name.c_str(), &info)) continue;  // --nofoo

    std::string value;
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else if (info.type == "bool") {
      value = "true";
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return Status::InvalidArgument("--" + name + " needs a value (" + info.type + ")");
    }
    if (gflags::SetCommandLineOption(name.c_str(), value.c_str()).empty()) {
      return Status::InvalidArgument("--" + name + " = '" + value.substr(0, 40) +
                                     (value.size() > 40 ? "..." : "") + "': not a valid " +
                                     info.type + (info.type == "bool" ? " (true or false)" : ""));
    }
  }
  return Status::Ok();
}

// Only `ckpt` takes positional arguments; elsewhere one is a mistake (`reid tokenize file.txt`
// would otherwise wait on stdin). `argv` holds what gflags left.
Status CheckPositionalArguments(const Subcommand& s, int argc, char** argv) {
  if (argc <= 1 || std::string(s.name) == "ckpt") return Status::Ok();
  return Status::InvalidArgument("takes no positional argument, got '" +
                                 std::string(argv[1]).substr(0, 100) + "' (see reid " + s.name +
                                 " --help)");
}

int Dispatch(int argc, char** argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help") ||
      !strcmp(argv[1], "-h")) {
    PrintUsage(std::cout);
    return argc < 2 ? kExitUsage : kExitOk;
  }
  const Subcommand* sub = nullptr;
  for (const Subcommand& s : Table()) {
    if (s.name == std::string(argv[1])) sub = &s;
  }
  if (sub == nullptr) {
    std::cerr << "error: unknown subcommand '" << argv[1] << "'\n";
    PrintUsage(std::cerr);
    return kExitUsage;
  }
  std::string program = std::string("reid ") + sub->name;
  std::vector<char*> args = {program.data()};
  for (int i = 2; i < argc; ++i) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      PrintSubcommandHelp(*sub);
      return kExitOk;
    }
    args.push_back(argv[i]);
  }
  std::deque<std::string> renamed;  // the renamed arguments, which args points into
  RenameDeprecatedFlags(*sub, &args, &renamed);
  // Before --set is taken out, so that a subcommand which reads no config rejects it too.
  if (Status s = CheckFlagsBelongTo(*sub, args); !s.ok()) return Fail(sub->name, s);
  StatusOr<std::vector<std::string>> set_overrides = ExtractSetOverrides(&args);
  if (!set_overrides.ok()) return Fail(sub->name, set_overrides.status());
  if (Status s = CheckFlagValues(args); !s.ok()) return Fail(sub->name, s);
  int sub_argc = static_cast<int>(args.size());
  char** sub_argv = args.data();
  gflags::ParseCommandLineNonHelpFlags(&sub_argc, &sub_argv, /*remove_flags=*/true);
  if (Status s = CheckPositionalArguments(*sub, sub_argc, sub_argv); !s.ok()) {
    return Fail(sub->name, s);
  }
  base::GlobalInit(argv[0]);
  SetIntraOpThreads();
  return sub->run(sub_argc, sub_argv, *set_overrides);
}

}  // namespace
}  // namespace reid::trainer

namespace {

// One line for an exception that reached main (c10 messages can hold a backtrace after it).
std::string Describe(const std::exception_ptr& error) {
  std::string what;
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    what = std::string("LibTorch: ") + e.what_without_backtrace();
  } catch (const std::bad_alloc&) {
    what = "out of memory (std::bad_alloc)";
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "an exception of unknown type";
  }
  return what.substr(0, what.find('\n'));
}

}  // namespace

int main(int argc, char** argv) {
  // Training's matrix products run in OpenBLAS's threads beside LibTorch's OpenMP ones: idle
  // OpenMP workers must sleep rather than spin (base/init.h).
  // Its steps free and allocate the same memory each time: keep it (base/init.h).
  if (argc > 1 && std::string(argv[1]) == "train") {
    reid::base::ReexecWithPassiveOpenMP(argv);
    reid::base::KeepFreedMemory();
  }
  // Exceptions that escape another thread (or a noexcept function): exit 1 with one line, as
  // those that reach the catch below, never SIGABRT.
  static const std::string program = std::string("reid ") + (argc > 1 ? argv[1] : "");
  reid::base::InstallTerminateHandler(program.c_str());
  try {
    return reid::trainer::Dispatch(argc, argv);
  } catch (...) {
    std::cerr << "error: " << program << ": " << Describe(std::current_exception()) << "\n";
  }
  return reid::trainer::kExitFailure;
}
