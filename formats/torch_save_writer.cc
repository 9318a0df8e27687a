// torch.save zip writer: a pickle of the few opcodes torch.load's weights_only unpickler accepts
// (GLOBAL, REDUCE, MARK/TUPLE*, BINUNICODE, BININT*, LONG1, NEWFALSE, BINPERSID, SETITEM(S)),
// put into a zip by LibTorch's PyTorchStreamWriter (the writer behind Python's torch.save).
#include "formats/torch_save_writer.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "base/file_util.h"

namespace reid::formats {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "storages are written from memory as little-endian bytes");

namespace fs = std::filesystem;

// torch.<Name>Storage: the storage class torch.save names for each dtype.
const char* StorageClass(c10::ScalarType type) {
  switch (type) {
    case torch::kFloat:
      return "FloatStorage";
    case torch::kDouble:
      return "DoubleStorage";
    case torch::kHalf:
      return "HalfStorage";
    case torch::kBFloat16:
      return "BFloat16Storage";
    case torch::kLong:
      return "LongStorage";
    case torch::kInt:
      return "IntStorage";
    case torch::kShort:
      return "ShortStorage";
    case torch::kChar:
      return "CharStorage";
    case torch::kByte:
      return "ByteStorage";
    case torch::kBool:
      return "BoolStorage";
    default:
      return nullptr;
  }
}

// Python decodes BINUNICODE strings as UTF-8: reject what it would refuse (bad sequences,
// overlong forms, surrogates, code points above U+10FFFF).
bool IsUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += extra + 1;
  }
  return true;
}

// Appends pickle opcodes (protocol 2) the way Python's pickler encodes the same objects.
class Pickle {
 public:
  Pickle() { out_ += "\x80\x02"; }  // PROTO 2
  void Global(const char* module, const char* name) {
    out_ += 'c';
    out_ += module;
    out_ += '\n';
    out_ += name;
    out_ += '\n';
  }
  void Str(const std::string& s) {  // BINUNICODE: 4-byte little-endian length, UTF-8
    out_ += 'X';
    Le(s.size(), 4);
    out_ += s;
  }
  void Int(int64_t v) {
    CHECK_GE(v, 0) << "only sizes, strides, offsets and counts are pickled";
    if (v < 0x100) {
      out_ += 'K';  // BININT1
      Le(v, 1);
    } else if (v < 0x10000) {
      out_ += 'M';  // BININT2
      Le(v, 2);
    } else if (v < 0x80000000LL) {
      out_ += 'J';  // BININT (signed 32-bit)
      Le(v, 4);
    } else {
      // LONG1: two's complement little-endian in (bit_length / 8) + 1 bytes, as Python's
      // encode_long (the extra byte keeps the sign bit clear).
      const int bits = 64 - __builtin_clzll(static_cast<uint64_t>(v));
      const int n = bits / 8 + 1;
      out_ += '\x8a';
      out_ += static_cast<char>(n);
      Le(static_cast<uint64_t>(v), n);
    }
  }
  // Python writes tuples of up to 3 items with TUPLE1/2/3, longer ones between MARK and TUPLE.
  void IntTuple(const std::vector<int64_t>& v) {
    if (v.empty()) {
      out_ += ')';  // EMPTY_TUPLE
      return;
    }
    if (v.size() > 3) Mark();
    for (int64_t x : v) Int(x);
    if (v.size() == 1) out_ += '\x85';
    if (v.size() == 2) out_ += '\x86';
    if (v.size() == 3) out_ += '\x87';
    if (v.size() > 3) out_ += 't';
  }
  void Mark() { out_ += '('; }
  void Op(char op) { out_ += op; }
  // collections.OrderedDict(): GLOBAL, EMPTY_TUPLE, REDUCE.
  void EmptyOrderedDict() {
    Global("collections", "OrderedDict");
    out_ += ")R";
  }
  std::string Finish() {
    out_ += '.';  // STOP
    return std::move(out_);
  }

 private:
  void Le(uint64_t v, int bytes) {
    for (int k = 0; k < bytes; ++k) out_ += static_cast<char>((v >> (8 * k)) & 0xff);
  }
  std::string out_;
};

// Strides of a contiguous tensor of `sizes` as c10 computes them (size-0 dims count as 1).
std::vector<int64_t> ContiguousStrides(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> strides(sizes.size());
  int64_t s = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    strides[d] = s;
    s *= std::max<int64_t>(sizes[d], 1);
  }
  return strides;
}

}  // namespace

StatusOr<std::string> SerializeTorchSave(
    const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  // Validate everything first and make the contiguous CPU copies that become the storages.
  std::vector<torch::Tensor> storages;
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    const std::string where = "tensor '" + name + "'";
    if (!IsUtf8(name)) return Status::InvalidArgument(where + ": the name is not valid UTF-8");
    if (!names.insert(name).second) return Status::InvalidArgument(where + ": repeated name");
    if (!tensor.defined()) return Status::InvalidArgument(where + ": undefined tensor");
    if (tensor.layout() != torch::kStrided)
      return Status::InvalidArgument(where + ": only dense (strided) tensors can be written");
    if (StorageClass(tensor.scalar_type()) == nullptr)
      return Status::InvalidArgument(where + ": dtype " +
                                     std::string(c10::toString(tensor.scalar_type())) +
                                     " is not supported");
    storages.push_back(tensor.detach().to(torch::kCPU).contiguous());
  }

  Pickle p;
  p.EmptyOrderedDict();
  // Python's pickler sets the items in batches of 1000: SETITEM for a batch of one, else
  // MARK k v k v ... SETITEMS.
  constexpr size_t kBatch = 1000;
  for (size_t first = 0; first < tensors.size(); first += kBatch) {
    const size_t last = std::min(tensors.size(), first + kBatch);
    if (last - first > 1) p.Mark();
    for (size_t i = first; i < last; ++i) {
      const torch::Tensor& t = storages[i];
      const std::vector<int64_t> sizes = t.sizes().vec();
      p.Str(tensors[i].first);
      p.Global("torch._utils", "_rebuild_tensor_v2");
      p.Mark();  // the 6 arguments
      // Persistent id ('storage', torch.XStorage, key, 'cpu', numel) -> BINPERSID.
      p.Mark();
      p.Str("storage");
      p.Global("torch", StorageClass(t.scalar_type()));
      p.Str(std::to_string(i));
      p.Str("cpu");
      p.Int(t.numel());
      p.Op('t');
      p.Op('Q');
      p.Int(0);  // storage offset
      p.IntTuple(sizes);
      p.IntTuple(ContiguousStrides(sizes));
      p.Op('\x89');          // requires_grad = False (NEWFALSE)
      p.EmptyOrderedDict();  // backward hooks
      p.Op('t');
      p.Op('R');
    }
    p.Op(last - first > 1 ? 'u' : 's');  // SETITEMS / SETITEM
  }
  const std::string pickle = p.Finish();

  std::string zip;
  try {
    caffe2::serialize::PyTorchStreamWriter writer([&zip](const void* data, size_t n) {
      zip.append(static_cast<const char*>(data), n);
      return n;
    });
    // Record order as Python's torch.save: data.pkl, byteorder, data/<k>; version at the end.
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    writer.writeRecord("byteorder", "little", 6);
    for (size_t i = 0; i < storages.size(); ++i) {
      const torch::Tensor& t = storages[i];
      writer.writeRecord("data/" + std::to_string(i), t.data_ptr(), t.nbytes());
    }
    writer.writeEndOfFile();
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("cannot write the torch.save zip: ") +
                            e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("cannot write the torch.save zip: ") + e.what());
  }
  return zip;
}

Status WriteTorchSaveFile(const std::string& path,
                          const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  if (path.empty()) return Status::InvalidArgument("torch.save output path is empty");
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return Status::InvalidArgument(path + ": is a directory, not a file path");
  StatusOr<std::string> bytes = SerializeTorchSave(tensors);
  if (!bytes.ok()) return bytes.status().Annotate(path);
  return base::WriteFileAtomically(path, *bytes);
}

}  // namespace reid::formats
