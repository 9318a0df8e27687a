// The torch.save writer: bit-exact round trips through our reader, Python's torch.load with
// weights_only=True as the consumer (skipped without /usr/bin/python3 + torch), and atomic file
// writes that leave nothing behind on failure.
#include "formats/torch_save_writer.h"

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "base/status_test_util.h"
#include "formats/torch_save_reader.h"

namespace reid::formats {
namespace {

namespace fs = std::filesystem;
using Named = std::vector<std::pair<std::string, torch::Tensor>>;

// The raw bytes of a tensor's contiguous CPU copy (bit patterns, so NaN == NaN).
std::string Bytes(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

// Random values of `dtype` and `shape` (floats with specials: NaN, +-inf, -0, a subnormal).
torch::Tensor Random(c10::ScalarType dtype, std::vector<int64_t> shape) {
  if (dtype == torch::kBool) return torch::randint(0, 2, shape).to(torch::kBool);
  if (c10::isFloatingType(dtype)) {
    torch::Tensor t = torch::randn(shape, torch::kDouble).to(dtype);
    if (t.numel() >= 5) {
      auto flat = t.view({-1});
      flat[0] = std::numeric_limits<double>::quiet_NaN();
      flat[1] = std::numeric_limits<double>::infinity();
      flat[2] = -std::numeric_limits<double>::infinity();
      flat[3] = -0.0;
      flat[4] = dtype == torch::kDouble ? 5e-324 : 1e-40;  // subnormal in float/double
    }
    return t;
  }
  const double lo = dtype == torch::kByte ? 0 : -120, hi = 120;
  torch::Tensor t = torch::randint(static_cast<int64_t>(lo), static_cast<int64_t>(hi), shape,
                                   torch::TensorOptions().dtype(dtype));
  if (dtype == torch::kLong && t.numel() >= 2) {
    t.view({-1})[0] = std::numeric_limits<int64_t>::min();
    t.view({-1})[1] = std::numeric_limits<int64_t>::max();
  }
  if (dtype == torch::kInt && t.numel() >= 2) {
    t.view({-1})[0] = std::numeric_limits<int32_t>::min();
    t.view({-1})[1] = std::numeric_limits<int32_t>::max();
  }
  return t;
}

// Every supported dtype in several shapes, and the layouts a state dict can hold: a transposed
// (non-contiguous) view, a slice with a storage offset, 0-dim, empty, more than 3 dimensions, a
// size over 65535 (BININT) and an empty tensor whose stride needs LONG1 (> 2^31).
Named Sample() {
  torch::manual_seed(7);
  const std::vector<c10::ScalarType> dtypes = {
      torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16, torch::kLong,
      torch::kInt,   torch::kShort,  torch::kChar, torch::kByte,     torch::kBool};
  Named out;
  for (c10::ScalarType d : dtypes) {
    const std::string n = c10::toString(d);
    out.emplace_back(n + ".matrix", Random(d, {3, 5}));
    out.emplace_back(n + ".scalar", Random(d, {}));
    out.emplace_back(n + ".empty", Random(d, {0, 4}));
    out.emplace_back(n + ".transposed", Random(d, {4, 6}).t());
    out.emplace_back(n + ".sliced", Random(d, {10}).slice(0, 3, 9, 2));
    out.emplace_back(n + ".rank5", Random(d, {2, 1, 3, 2, 2}));
  }
  out.emplace_back("large", Random(torch::kFloat, {70001}));
  out.emplace_back("huge_stride", torch::empty({0, int64_t{3000000000}}));
  out.emplace_back("name with üñíçødé", torch::arange(3));
  return out;
}

void ExpectSame(const torch::Tensor& got, const torch::Tensor& want, const std::string& name) {
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
  EXPECT_EQ(got.sizes(), want.sizes()) << name;
  EXPECT_TRUE(Bytes(got) == Bytes(want)) << name << ": values differ";
}

TEST(TorchSaveWriter, RoundTripsThroughOurReaderBitExact) {
  const Named tensors = Sample();
  StatusOr<std::string> zip = SerializeTorchSave(tensors);
  ASSERT_OK(zip);
  std::istringstream in(*zip);
  StatusOr<StateDict> back = ReadTorchSaveZip(&in);
  ASSERT_OK(back);
  ASSERT_EQ(back->size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_EQ(back->count(name), 1u) << name;
    ExpectSame(back->at(name), t, name);
  }
}

TEST(TorchSaveWriter, ArchiveLayoutIsPythons) {
  StatusOr<std::string> zip = SerializeTorchSave({{"w", torch::ones({2})}});
  ASSERT_OK(zip);
  // The records live under "archive/" (names appear in the zip's headers as plain text).
  for (const char* record :
       {"archive/data.pkl", "archive/data/0", "archive/version", "archive/byteorder"}) {
    EXPECT_NE(zip->find(record), std::string::npos) << record;
  }
  std::istringstream in(*zip);
  caffe2::serialize::PyTorchStreamReader reader(&in);
  auto [ptr, size] = reader.getRecord("byteorder");
  EXPECT_EQ(std::string(static_cast<const char*>(ptr.get()), size), "little");
  // An empty state dict is a valid file too.
  StatusOr<std::string> empty = SerializeTorchSave({});
  ASSERT_OK(empty);
  std::istringstream empty_in(*empty);
  StatusOr<StateDict> back = ReadTorchSaveZip(&empty_in);
  ASSERT_OK(back);
  EXPECT_TRUE(back->empty());
}

TEST(TorchSaveWriter, RejectsWhatTorchSaveCannotHoldHere) {
  auto expect_invalid = [](const Named& tensors, const std::string& text) {
    StatusOr<std::string> zip = SerializeTorchSave(tensors);
    ASSERT_FALSE(zip.ok()) << text;
    EXPECT_EQ(zip.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(zip.status().message().find(text), std::string::npos) << zip.status().message();
  };
  expect_invalid({{"a", torch::ones({1})}, {"a", torch::ones({1})}}, "tensor 'a': repeated name");
  expect_invalid({{"c", torch::ones({2}, torch::kComplexFloat)}}, "tensor 'c': dtype");
  expect_invalid({{"u", torch::Tensor()}}, "tensor 'u': undefined");
  expect_invalid({{"s", torch::eye(3).to_sparse()}}, "tensor 's': only dense");
  expect_invalid({{std::string("bad\xff", 4), torch::ones({1})}}, "not valid UTF-8");
  expect_invalid({{std::string("\xc0\x80", 2), torch::ones({1})}}, "not valid UTF-8");
}

// --- Python's torch.load as the consumer ---------------------------------------------------

constexpr char kPython[] = "/usr/bin/python3";

// Loads argv[1] with torch.load(weights_only=True) and checks it against argv[2] (lines of
// name \t dtype \t shape \t hex of the contiguous bytes): keys in order, dtypes, shapes, values,
// contiguous strides. Also checks the zip layout, that data.pkl uses only opcodes and globals of
// the restricted unpickler, and that the restricted unpickler is really in effect (it refuses a
// pickled module, which weights_only=False would load).
constexpr char kConsumerScript[] = R"PY(
import collections, io, pickletools, sys, zipfile
import torch
import torch._weights_only_unpickler as restricted

path, expect_path, scratch = sys.argv[1], sys.argv[2], sys.argv[3]

def load(f):
    return torch.load(f, map_location='cpu', weights_only=True)

# The restricted unpickler is in effect: it refuses what a full unpickler would load.
torch.save({'module': torch.nn.Identity()}, scratch)
try:
    load(scratch)
    sys.exit('weights_only=True loaded a pickled module: not the restricted unpickler')
except Exception:
    pass

zf = zipfile.ZipFile(path)
names = zf.namelist()
assert all(n.startswith('archive/') for n in names), names
for n in ('archive/data.pkl', 'archive/version', 'archive/byteorder'):
    assert n in names, (n, names)
assert zf.read('archive/byteorder') == b'little'
allowed_ops = {'PROTO', 'GLOBAL', 'EMPTY_TUPLE', 'REDUCE', 'MARK', 'BINUNICODE', 'BININT1',
               'BININT2', 'BININT', 'LONG1', 'TUPLE', 'TUPLE1', 'TUPLE2', 'TUPLE3', 'NEWFALSE',
               'BINPERSID', 'SETITEM', 'SETITEMS', 'STOP'}
allowed_globals = restricted._get_allowed_globals()
for op, arg, _ in pickletools.genops(zf.read('archive/data.pkl')):
    assert op.name in allowed_ops, op.name
    if op.name == 'GLOBAL':
        assert arg.replace(' ', '.') in allowed_globals, arg

sd = load(path)
assert type(sd) is collections.OrderedDict, type(sd)
expected = [line.rstrip('\n').split('\t') for line in open(expect_path, encoding='utf-8')]
assert list(sd.keys()) == [e[0] for e in expected], (list(sd.keys()), [e[0] for e in expected])
assert len(names) == 3 + len(expected), names
for name, dtype, shape, hexbytes in expected:
    t = sd[name]
    assert type(t) is torch.Tensor, (name, type(t))
    assert str(t.dtype) == dtype, (name, t.dtype, dtype)
    assert list(t.shape) == [int(s) for s in shape.split(',') if s], (name, t.shape, shape)
    assert not t.requires_grad and t.storage_offset() == 0, name
    assert t.is_contiguous(), (name, t.stride())
    got = t.reshape(-1).view(torch.uint8).numpy().tobytes().hex()
    assert got == hexbytes, (name, got[:64], hexbytes[:64])
print('checked', len(expected), 'tensors')
)PY";

std::string PythonDtype(c10::ScalarType d) {
  switch (d) {
    case torch::kFloat:
      return "torch.float32";
    case torch::kDouble:
      return "torch.float64";
    case torch::kHalf:
      return "torch.float16";
    case torch::kBFloat16:
      return "torch.bfloat16";
    case torch::kLong:
      return "torch.int64";
    case torch::kInt:
      return "torch.int32";
    case torch::kShort:
      return "torch.int16";
    case torch::kChar:
      return "torch.int8";
    case torch::kByte:
      return "torch.uint8";
    case torch::kBool:
      return "torch.bool";
    default:
      return "?";
  }
}

std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "reid_torch_save_writer_XXXXXX").string();
    CHECK(mkdtemp(tmpl.data()) != nullptr) << "mkdtemp " << tmpl;
    path_ = tmpl;
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::set<std::string> Listing() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.insert(e.path().filename());
    return names;
  }

 private:
  std::string path_;
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(TorchSaveWriter, PythonTorchLoadWeightsOnlyReadsIt) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << kPython << " cannot import torch: the consumer check needs python3-torch";
  }
  // The check is meaningful only with the restricted unpickler.
  const std::string script_text = kConsumerScript;
  ASSERT_NE(script_text.find("weights_only=True"), std::string::npos);
  ASSERT_EQ(script_text.find("weights_only=False"), std::string::npos);

  TempDir dir;
  const Named tensors = Sample();
  const std::string weights = dir.path() + "/model.pth";
  ASSERT_OK(WriteTorchSaveFile(weights, tensors));
  const std::string expect = dir.path() + "/expected.tsv";
  {
    std::ofstream out(expect);
    for (const auto& [name, t] : tensors) {
      std::string shape;
      for (int64_t s : t.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(s);
      out << name << '\t' << PythonDtype(t.scalar_type()) << '\t' << shape << '\t' << Hex(Bytes(t))
          << '\n';
    }
  }
  const std::string script = dir.path() + "/consumer.py";
  std::ofstream(script) << script_text;
  const std::string log = dir.path() + "/log.txt";
  const std::string cmd = std::string(kPython) + " " + script + " " + weights + " " + expect + " " +
                          dir.path() + "/scratch.pth > " + log + " 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << cmd << "\n" << ReadText(log);
  EXPECT_NE(ReadText(log).find("checked " + std::to_string(tensors.size()) + " tensors"),
            std::string::npos)
      << ReadText(log);
}

// --- Atomic file writes ----------------------------------------------------------------------

TEST(TorchSaveWriter, WritesFilesAtomicallyAndReplacesOldOnes) {
  TempDir dir;
  const std::string path = dir.path() + "/w.pth";
  std::ofstream(path) << "old content";
  const Named tensors = {{"a", torch::arange(6).view({2, 3})}, {"b", torch::ones({})}};
  ASSERT_OK(WriteTorchSaveFile(path, tensors));
  EXPECT_EQ(dir.Listing(), std::set<std::string>{"w.pth"});  // no temporary file left
  StatusOr<StateDict> back = ReadTorchSaveZip(path);
  ASSERT_OK(back);
  ExpectSame(back->at("a"), tensors[0].second, "a");
  ExpectSame(back->at("b"), tensors[1].second, "b");
}

TEST(TorchSaveWriter, FileErrorsNameThePathAndLeaveNothing) {
  TempDir dir;
  const Named tensors = {{"a", torch::ones({2})}};
  const std::set<std::string> before = dir.Listing();

  const Status onto_dir = WriteTorchSaveFile(dir.path(), tensors);
  ASSERT_FALSE(onto_dir.ok());
  EXPECT_EQ(onto_dir.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(onto_dir.message().find(dir.path()), std::string::npos) << onto_dir.message();
  EXPECT_EQ(dir.Listing(), before);
  // The temporary file would have been made in the directory's parent folder.
  const std::string tmp_prefix = "." + fs::path(dir.path()).filename().string() + ".tmp";
  for (const auto& e : fs::directory_iterator(fs::path(dir.path()).parent_path())) {
    EXPECT_NE(e.path().filename().string().rfind(tmp_prefix, 0), 0u) << e.path();
  }

  const std::string missing = dir.path() + "/no_such_folder/w.pth";
  const Status in_missing = WriteTorchSaveFile(missing, tensors);
  ASSERT_FALSE(in_missing.ok());
  EXPECT_EQ(in_missing.exit_code(), 2);  // a user error
  EXPECT_NE(in_missing.message().find(missing), std::string::npos) << in_missing.message();
  EXPECT_EQ(dir.Listing(), before);

  const std::string sub = dir.path() + "/sub";
  fs::create_directory(sub);
  const Status onto_sub = WriteTorchSaveFile(sub, tensors);
  EXPECT_EQ(onto_sub.code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(fs::is_empty(sub));

  const Status bad_tensor = WriteTorchSaveFile(sub + "/x.pth", {{"u", torch::Tensor()}});
  EXPECT_EQ(bad_tensor.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(bad_tensor.message().find(sub + "/x.pth"), std::string::npos) << bad_tensor.message();
  EXPECT_TRUE(fs::is_empty(sub));

  // A folder without write permission (root ignores permissions, so only checked as a user).
  if (::geteuid() != 0) {
    fs::permissions(sub, fs::perms::owner_read | fs::perms::owner_exec);
    const Status locked = WriteTorchSaveFile(sub + "/x.pth", tensors);
    fs::permissions(sub, fs::perms::owner_all);
    EXPECT_EQ(locked.code(), Status::Code::kInvalidArgument) << locked.message();
    EXPECT_NE(locked.message().find(sub + "/x.pth"), std::string::npos) << locked.message();
    EXPECT_TRUE(fs::is_empty(sub));
  }
}

}  // namespace
}  // namespace reid::formats
