// Reads torch.save zip files of a state dict (e.g. CLIP-ReID's released .pth) with a small pickle
// machine: LibTorch's own unpickler rejects the OrderedDict state (_metadata) that torch.save
// writes. Supports the opcodes torch.save uses (protocols 2-5) and tensors rebuilt from storages.
// The file is untrusted: objects live in one arena (freed without recursion), nesting and object
// counts are bounded, and every tensor view is checked against its storage before it is made.
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <istream>
#include <memory>
#include <stdexcept>

#include "formats/torch_save_reader.h"

namespace reid::formats {

Status CheckStridedView(int64_t storage_numel, int64_t offset, const std::vector<int64_t>& sizes,
                        const std::vector<int64_t>& strides) {
  auto fail = [](const std::string& text) { return Status::DataLoss(text); };
  if (sizes.size() != strides.size())
    return fail("has " + std::to_string(sizes.size()) + " sizes but " +
                std::to_string(strides.size()) + " strides");
  if (offset < 0 || offset > storage_numel)
    return fail("offset " + std::to_string(offset) + " is outside its storage of " +
                std::to_string(storage_numel) + " elements");
  int64_t numel = 1, last = offset;  // last: the highest element index the view reads
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0)
      return fail("has a negative size or stride in dimension " + std::to_string(d));
    if (__builtin_mul_overflow(numel, sizes[d], &numel))
      return fail("has more elements than a 64-bit count holds");
  }
  if (numel == 0) return Status::Ok();
  for (size_t d = 0; d < sizes.size(); ++d) {
    int64_t reach = 0;
    if (__builtin_mul_overflow(sizes[d] - 1, strides[d], &reach) ||
        __builtin_add_overflow(last, reach, &last))
      return fail("reaches past any storage (64-bit overflow)");
  }
  if (last >= storage_numel)
    return fail("(offset " + std::to_string(offset) + ") reads element " + std::to_string(last) +
                " of a storage of " + std::to_string(storage_numel) + " elements");
  return Status::Ok();
}

namespace {

struct PyObj;
using Obj = PyObj*;  // owned by the Machine's arena
struct PyObj {
  enum Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kStr,
    kTuple,
    kList,
    kDict,
    kGlobal,
    kTensor,
    kStorage,
    kMark
  };
  Kind kind = kNone;
  int64_t i = 0;
  int depth = 0;  // containers: 1 + the deepest item seen when it was added
  double f = 0;
  std::string s;           // str, global "module.name", storage key
  std::vector<Obj> items;  // tuple/list; dict: key, value, key, value, ...
  torch::Tensor tensor;    // tensor; storage: raw bytes (uint8) + dtype in i
};

// The longest module + name of a STACK_GLOBAL (Python's are a few dozen bytes).
constexpr size_t kMaxGlobalName = 1024;

c10::ScalarType StorageType(const std::string& name) {
  static const std::map<std::string, c10::ScalarType> types = {
      {"torch.FloatStorage", torch::kFloat},   {"torch.HalfStorage", torch::kHalf},
      {"torch.DoubleStorage", torch::kDouble}, {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},     {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort},   {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},     {"torch.BoolStorage", torch::kBool}};
  auto it = types.find(name);
  if (it == types.end()) throw std::runtime_error("unsupported storage type " + name);
  return it->second;
}

class Machine {
 public:
  Machine(caffe2::serialize::PyTorchStreamReader* zip, const char* data, size_t size)
      : zip_(zip), p_(data), end_(data + size) {}
  Obj Run();

 private:
  template <typename T>
  T Read() {
    if (static_cast<size_t>(end_ - p_) < sizeof(T)) throw std::runtime_error("truncated pickle");
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  std::string ReadBytes(uint64_t n) {
    if (static_cast<uint64_t>(end_ - p_) < n) throw std::runtime_error("truncated pickle");
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  std::string ReadLine() {
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', end_ - p_));
    if (nl == nullptr) throw std::runtime_error("truncated pickle");
    std::string s(p_, nl - p_);
    p_ = nl + 1;
    return s;
  }
  Obj Pop() {
    if (stack_.empty()) throw std::runtime_error("pickle stack underflow");
    Obj o = stack_.back();
    stack_.pop_back();
    return o;
  }
  Obj& Top() {
    if (stack_.empty()) throw std::runtime_error("pickle stack underflow");
    return stack_.back();
  }
  std::vector<Obj> PopToMark() {
    auto mark =
        std::find_if(stack_.rbegin(), stack_.rend(), [](Obj o) { return o->kind == PyObj::kMark; });
    if (mark == stack_.rend()) throw std::runtime_error("pickle mark missing");
    const auto first = mark.base();  // just above the mark
    std::vector<Obj> items(first, stack_.end());
    stack_.erase(first - 1, stack_.end());
    return items;
  }
  Obj Make(PyObj::Kind k) {
    if (arena_.size() >= kMaxPickleObjects)
      throw std::runtime_error("pickle has more than " + std::to_string(kMaxPickleObjects) +
                               " objects");
    arena_.push_back(std::make_unique<PyObj>());
    arena_.back()->kind = k;
    return arena_.back().get();
  }
  // Adds `items` to container `c`, tracking nesting depth.
  void AddItems(Obj c, const std::vector<Obj>& items) {
    for (Obj x : items) {
      c->depth = std::max(c->depth, x->depth + 1);
      if (c->depth > kMaxPickleDepth)
        throw std::runtime_error("pickle nests deeper than " + std::to_string(kMaxPickleDepth));
    }
    if (c->items.size() + items.size() > kMaxPickleObjects)
      throw std::runtime_error("pickle container too large");
    c->items.insert(c->items.end(), items.begin(), items.end());
  }
  Obj MemoGet(int64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end())
      throw std::runtime_error("pickle memo key " + std::to_string(key) + " was never stored");
    return it->second;
  }
  Obj Str(std::string s) {
    Obj o = Make(PyObj::kStr);
    o->s = std::move(s);
    return o;
  }
  Obj Int(int64_t v) {
    Obj o = Make(PyObj::kInt);
    o->i = v;
    return o;
  }
  Obj Tuple(const std::vector<Obj>& items) {
    Obj o = Make(PyObj::kTuple);
    AddItems(o, items);
    return o;
  }
  Obj PersistentLoad(const Obj& pid);
  Obj Reduce(const Obj& callable, const Obj& args);
  bool Step(uint8_t op);

  caffe2::serialize::PyTorchStreamReader* zip_;
  const char* p_;
  const char* end_;
  std::vector<std::unique_ptr<PyObj>> arena_;  // every object; items point into it
  std::vector<Obj> stack_;
  std::map<int64_t, Obj> memo_;
  std::map<std::string, Obj> storages_;
  uint64_t storage_bytes_ = 0;  // all storages read
  uint64_t tensor_bytes_ = 0;   // all tensors made from them
};

Obj Machine::PersistentLoad(const Obj& pid) {
  // ('storage', storage_type, key, location, numel)
  if (pid->kind != PyObj::kTuple || pid->items.size() < 3 ||
      pid->items[1]->kind != PyObj::kGlobal || pid->items[2]->kind != PyObj::kStr)
    throw std::runtime_error("unsupported persistent id");
  const std::string key = pid->items[2]->s;
  auto it = storages_.find(key);
  if (it != storages_.end()) return it->second;
  Obj o = Make(PyObj::kStorage);
  o->i = static_cast<int64_t>(StorageType(pid->items[1]->s));
  auto [ptr, size] = zip_->getRecord("data/" + key);
  o->tensor = torch::empty({static_cast<int64_t>(size)}, torch::kByte);
  if (size > 0) std::memcpy(o->tensor.data_ptr(), ptr.get(), size);
  storage_bytes_ += size;
  storages_[key] = o;
  return o;
}

std::vector<int64_t> IntTuple(const Obj& t, const char* what) {
  if (t->kind != PyObj::kTuple && t->kind != PyObj::kList)
    throw std::runtime_error(std::string("tensor ") + what + " is not a tuple");
  if (t->items.size() > kMaxTensorDims)
    throw std::runtime_error(std::string("tensor ") + what + " has more than " +
                             std::to_string(kMaxTensorDims) + " dimensions");
  std::vector<int64_t> v;
  for (const Obj& x : t->items) {
    if (x->kind != PyObj::kInt)
      throw std::runtime_error(std::string("tensor ") + what + " holds a non-integer");
    v.push_back(x->i);
  }
  return v;
}

Obj Machine::Reduce(const Obj& callable, const Obj& args) {
  const std::string& name = callable->s;
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
    if (args->kind != PyObj::kTuple || args->items.size() < 4)
      throw std::runtime_error("tensor rebuilt from fewer than 4 arguments");
    const Obj storage = args->items[0];
    if (storage->kind != PyObj::kStorage) throw std::runtime_error("tensor without storage");
    if (args->items[1]->kind != PyObj::kInt)
      throw std::runtime_error("tensor storage offset is not an integer");
    auto type = static_cast<c10::ScalarType>(storage->i);
    const int64_t item = static_cast<int64_t>(c10::elementSize(type));
    const int64_t bytes = storage->tensor.numel();
    if (bytes % item != 0)
      throw std::runtime_error("storage of " + std::to_string(bytes) + " bytes is not a whole " +
                               "number of " + std::to_string(item) + "-byte elements");
    const std::vector<int64_t> sizes = IntTuple(args->items[2], "size");
    const std::vector<int64_t> strides = IntTuple(args->items[3], "stride");
    const int64_t offset = args->items[1]->i;
    const Status view = CheckStridedView(bytes / item, offset, sizes, strides);
    if (!view.ok()) throw std::runtime_error("tensor view " + view.message());
    tensor_bytes_ += static_cast<uint64_t>(c10::multiply_integers(sizes)) * item;
    if (tensor_bytes_ > 4 * storage_bytes_ + (uint64_t{16} << 20))
      throw std::runtime_error("tensors hold more than 4 times the bytes of their storages");
    Obj o = Make(PyObj::kTensor);
    o->tensor = storage->tensor.view(type).as_strided(sizes, strides, offset).clone();
    return o;
  }
  if (name == "torch._utils._rebuild_parameter" || name == "torch.nn.parameter.Parameter") {
    if (args->items.empty()) throw std::runtime_error("parameter rebuilt without a tensor");
    return args->items[0];
  }
  if (name == "collections.OrderedDict") return Make(PyObj::kDict);
  return Make(PyObj::kNone);  // anything else is opaque and ignored
}

bool Machine::Step(uint8_t op) {
  switch (op) {
    case 0x80:
      Read<uint8_t>();
      break;  // PROTO
    case 0x95:
      Read<uint64_t>();
      break;  // FRAME
    case '}':
      stack_.push_back(Make(PyObj::kDict));
      break;  // EMPTY_DICT
    case ']':
      stack_.push_back(Make(PyObj::kList));
      break;  // EMPTY_LIST
    case ')':
      stack_.push_back(Tuple({}));
      break;  // EMPTY_TUPLE
    case '(':
      stack_.push_back(Make(PyObj::kMark));
      break;  // MARK
    case 'N':
      stack_.push_back(Make(PyObj::kNone));
      break;
    case 0x88:
    case 0x89: {  // NEWTRUE, NEWFALSE
      Obj o = Make(PyObj::kBool);
      o->i = op == 0x88;
      stack_.push_back(o);
      break;
    }
    case 'J':
      stack_.push_back(Int(Read<int32_t>()));
      break;
    case 'K':
      stack_.push_back(Int(Read<uint8_t>()));
      break;
    case 'M':
      stack_.push_back(Int(Read<uint16_t>()));
      break;
    case 0x8a: {  // LONG1
      const uint8_t n = Read<uint8_t>();
      if (n > 8) throw std::runtime_error("pickled integer wider than 64 bits");
      std::string b = ReadBytes(n);
      uint64_t u = 0;  // little-endian two's complement, n bytes
      for (int k = n - 1; k >= 0; --k) u = (u << 8) | static_cast<uint8_t>(b[k]);
      if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u |= ~uint64_t{0} << (8 * n);  // sign-extend
      stack_.push_back(Int(static_cast<int64_t>(u)));
      break;
    }
    case 'G': {  // BINFLOAT (big endian)
      uint64_t bits = 0;
      for (int k = 0; k < 8; ++k) bits = (bits << 8) | Read<uint8_t>();
      Obj o = Make(PyObj::kFloat);
      std::memcpy(&o->f, &bits, 8);
      stack_.push_back(o);
      break;
    }
    case 'X':
      stack_.push_back(Str(ReadBytes(Read<uint32_t>())));
      break;  // BINUNICODE
    case 0x8c:
    case 'U':
      stack_.push_back(Str(ReadBytes(Read<uint8_t>())));
      break;
    case 0x8d:
    case 0x8e:
      stack_.push_back(Str(ReadBytes(Read<uint64_t>())));
      break;
    case 'T':
      stack_.push_back(Str(ReadBytes(Read<uint32_t>())));
      break;
    case 'q':
      memo_[Read<uint8_t>()] = Top();
      break;  // BINPUT
    case 'r':
      memo_[Read<uint32_t>()] = Top();
      break;  // LONG_BINPUT
    case 0x94:
      memo_[static_cast<int64_t>(memo_.size())] = Top();
      break;  // MEMOIZE
    case 'h':
      stack_.push_back(MemoGet(Read<uint8_t>()));
      break;  // BINGET
    case 'j':
      stack_.push_back(MemoGet(Read<uint32_t>()));
      break;     // LONG_BINGET
    case 'c': {  // GLOBAL
      Obj o = Make(PyObj::kGlobal);
      o->s = ReadLine();
      o->s += "." + ReadLine();
      stack_.push_back(o);
      break;
    }
    case 0x93: {  // STACK_GLOBAL: two strings, as Python requires (a global of globals would
                  // double in length at every step); names as long as Python's are enough
      Obj name = Pop(), module = Pop();
      if (name->kind != PyObj::kStr || module->kind != PyObj::kStr)
        throw std::runtime_error("STACK_GLOBAL of something other than two strings");
      if (module->s.size() + name->s.size() > kMaxGlobalName)
        throw std::runtime_error("global name longer than " + std::to_string(kMaxGlobalName) +
                                 " bytes");
      Obj o = Make(PyObj::kGlobal);
      o->s = module->s + "." + name->s;
      stack_.push_back(o);
      break;
    }
    case 'Q':
      stack_.push_back(PersistentLoad(Pop()));
      break;  // BINPERSID
    case 't':
      stack_.push_back(Tuple(PopToMark()));
      break;
    case 0x85:
      stack_.push_back(Tuple({Pop()}));
      break;
    case 0x86: {
      Obj b = Pop(), a = Pop();
      stack_.push_back(Tuple({a, b}));
      break;
    }
    case 0x87: {
      Obj c = Pop(), b = Pop(), a = Pop();
      stack_.push_back(Tuple({a, b, c}));
      break;
    }
    case 'R': {
      Obj args = Pop(), f = Pop();
      stack_.push_back(Reduce(f, args));
      break;
    }
    case 0x81: {
      Obj args = Pop(), cls = Pop();
      stack_.push_back(Reduce(cls, args));
      break;
    }  // NEWOBJ
    case 's': {
      Obj v = Pop(), k = Pop();
      AddItems(Top(), {k, v});
      break;
    }
    case 'u':
    case 'e': {  // SETITEMS, APPENDS
      std::vector<Obj> items = PopToMark();
      AddItems(Top(), items);
      break;
    }
    case 'a': {
      Obj v = Pop();
      AddItems(Top(), {v});
      break;
    }  // APPEND
    case 'b':
      Pop();
      break;  // BUILD: object state (e.g. _metadata) ignored
    case '0':
      Pop();
      break;
    case '1':
      PopToMark();
      break;
    case '2':
      stack_.push_back(Top());
      break;
    case '.':
      return false;  // STOP
    default:
      throw std::runtime_error("unsupported pickle opcode " + std::to_string(op));
  }
  return true;
}

Obj Machine::Run() {
  while (Step(Read<uint8_t>())) {
  }
  return Pop();
}

}  // namespace

namespace {

uint64_t LittleEndian(const std::string& b, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | static_cast<uint8_t>(b[pos + k]);
  return v;
}

std::string ReadAt(std::istream* in, uint64_t pos, uint64_t n) {
  std::string out(n, '\0');
  in->clear();
  in->seekg(static_cast<std::streamoff>(pos));
  if (!in->read(out.data(), static_cast<std::streamsize>(n)))
    throw std::runtime_error("cannot read the zip directory (truncated file)");
  return out;
}

// Checks every record the zip's central directory lists against the size of the file, before
// LibTorch's zip reader (miniz) allocates a record's declared uncompressed size: a record may not
// claim more bytes than the whole file holds, so a few edited bytes cannot make the reader
// allocate gigabytes. Finds the end-of-central-directory record as miniz does (the last
// signature in the final 64 KiB + 22 bytes) and follows its zip64 form. Throws on a violation.
void CheckZipRecordSizes(std::istream* in) {
  in->clear();
  in->seekg(0, std::ios::end);
  const std::streamoff end = in->tellg();
  if (end < 22) throw std::runtime_error("not a zip archive (" + std::to_string(end) + " bytes)");
  const uint64_t size = static_cast<uint64_t>(end);
  const uint64_t tail_size = std::min<uint64_t>(size, 22 + 65535);
  const std::string tail = ReadAt(in, size - tail_size, tail_size);
  size_t eocd = std::string::npos;
  for (size_t pos = tail_size - 22 + 1; pos-- > 0;) {
    if (tail.compare(pos, 4, "PK\x05\x06") == 0) {
      eocd = pos;
      break;
    }
  }
  if (eocd == std::string::npos)
    throw std::runtime_error("not a zip archive (no end of central directory)");
  uint64_t entries = LittleEndian(tail, eocd + 10, 2);
  uint64_t dir_size = LittleEndian(tail, eocd + 12, 4);
  uint64_t dir_offset = LittleEndian(tail, eocd + 16, 4);
  if (entries == 0xffff || dir_size == 0xffffffff || dir_offset == 0xffffffff) {
    const uint64_t locator = size - tail_size + eocd;  // the zip64 locator is 20 bytes before
    if (locator < 20) throw std::runtime_error("zip64 directory locator missing");
    const std::string loc = ReadAt(in, locator - 20, 20);
    if (loc.compare(0, 4, "PK\x06\x07") != 0)
      throw std::runtime_error("zip64 directory locator missing");
    const uint64_t zip64 = LittleEndian(loc, 8, 8);
    if (zip64 > size || size - zip64 < 56)
      throw std::runtime_error("zip64 end of central directory outside the file");
    const std::string rec = ReadAt(in, zip64, 56);
    if (rec.compare(0, 4, "PK\x06\x06") != 0)
      throw std::runtime_error("zip64 end of central directory missing");
    entries = LittleEndian(rec, 32, 8);
    dir_size = LittleEndian(rec, 40, 8);
    dir_offset = LittleEndian(rec, 48, 8);
  }
  if (dir_offset > size || dir_size > size - dir_offset)
    throw std::runtime_error("zip central directory (" + std::to_string(dir_size) + " bytes at " +
                             std::to_string(dir_offset) + ") outside the file of " +
                             std::to_string(size) + " bytes");
  if (entries > dir_size / 46)
    throw std::runtime_error("zip directory claims " + std::to_string(entries) + " records in " +
                             std::to_string(dir_size) + " bytes");
  const std::string dir = ReadAt(in, dir_offset, dir_size);
  size_t pos = 0;
  for (uint64_t i = 0; i < entries; ++i) {
    if (dir.size() - pos < 46 || dir.compare(pos, 4, "PK\x01\x02") != 0)
      throw std::runtime_error("zip central directory entry " + std::to_string(i) +
                               " is malformed");
    uint64_t compressed = LittleEndian(dir, pos + 20, 4);
    uint64_t uncompressed = LittleEndian(dir, pos + 24, 4);
    uint64_t local = LittleEndian(dir, pos + 42, 4);
    const size_t name_len = LittleEndian(dir, pos + 28, 2);
    const size_t extra_len = LittleEndian(dir, pos + 30, 2);
    const size_t comment_len = LittleEndian(dir, pos + 32, 2);
    if (dir.size() - pos - 46 < name_len + extra_len + comment_len)
      throw std::runtime_error("zip central directory entry " + std::to_string(i) +
                               " is malformed");
    const std::string name = dir.substr(pos + 46, name_len);
    // Zip64 extra field (id 1): the 64-bit values of the fields that hold 0xffffffff, in order.
    for (size_t x = pos + 46 + name_len; x + 4 <= pos + 46 + name_len + extra_len;) {
      const uint64_t id = LittleEndian(dir, x, 2), len = LittleEndian(dir, x + 2, 2);
      size_t field = x + 4;
      const size_t field_end = std::min<size_t>(field + len, pos + 46 + name_len + extra_len);
      if (id == 1) {
        for (uint64_t* v : {&uncompressed, &compressed, &local}) {
          if (*v != 0xffffffff) continue;
          if (field + 8 > field_end) break;
          *v = LittleEndian(dir, field, 8);
          field += 8;
        }
      }
      x += 4 + len;
    }
    if (uncompressed > size || compressed > size || local > size)
      throw std::runtime_error("zip record '" + name.substr(0, 80) + "' claims " +
                               std::to_string(std::max(uncompressed, compressed)) +
                               " bytes but the file holds " + std::to_string(size));
    pos += 46 + name_len + extra_len + comment_len;
  }
  in->clear();
  in->seekg(0);
}

StatusOr<StateDict> ReadFromZip(caffe2::serialize::PyTorchStreamReader& zip) {
  auto [ptr, size] = zip.getRecord("data.pkl");
  Machine machine(&zip, static_cast<const char*>(ptr.get()), size);
  Obj top = machine.Run();
  for (size_t k = 0; top->kind == PyObj::kDict && k + 1 < top->items.size(); k += 2) {
    if (top->items[k]->s == "state_dict" && top->items[k + 1]->kind == PyObj::kDict) {
      top = top->items[k + 1];  // {"state_dict": {...}, ...}
      break;
    }
  }
  if (top->kind != PyObj::kDict)
    return Status::DataLoss("the pickled object is not a dict of tensors");
  StateDict out;
  for (size_t k = 0; k + 1 < top->items.size(); k += 2) {
    const Obj& key = top->items[k];
    const Obj& value = top->items[k + 1];
    if (key->kind == PyObj::kStr && value->kind == PyObj::kTensor) out[key->s] = value->tensor;
  }
  return out;
}

// Runs `read` and turns every exception (the zip reader throws c10::Error, ours
// std::runtime_error, allocations std::bad_alloc) into a DataLoss status: LibTorch's boundary.
template <typename F>
StatusOr<StateDict> Guarded(F read) {
  try {
    return read();
  } catch (const c10::Error& e) {
    return Status::DataLoss(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::DataLoss(e.what());
  }
}

}  // namespace

StatusOr<StateDict> ReadTorchSaveZip(const std::string& path) {
  return Guarded([&] {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    CheckZipRecordSizes(&in);
    caffe2::serialize::PyTorchStreamReader zip(&in);
    return ReadFromZip(zip);
  });
}

StatusOr<StateDict> ReadTorchSaveZip(std::istream* in) {
  return Guarded([&] {
    CheckZipRecordSizes(in);
    caffe2::serialize::PyTorchStreamReader zip(in);
    return ReadFromZip(zip);
  });
}

}  // namespace reid::formats
