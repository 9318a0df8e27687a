// Reads torch.save zip files of a state dict (e.g. CLIP-ReID's released .pth) with a small pickle
// machine: LibTorch's own unpickler rejects the OrderedDict state (_metadata) that torch.save
// writes. Supports the opcodes torch.save uses (protocols 2-5) and tensors rebuilt from storages.
// The file is untrusted: objects live in one arena (freed without recursion), nesting and object
// counts are bounded, and every tensor view is checked against its storage before it is made.
// Faults of the file are Status values (DataLoss); exceptions are caught only around LibTorch's
// own calls (its zip reader and tensor allocations).
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <istream>
#include <memory>
#include <utility>

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

// Every fault of the file is DataLoss with a message saying what is wrong (the caller names the
// file).
Status Corrupt(std::string text) { return Status::DataLoss(std::move(text)); }

StatusOr<c10::ScalarType> StorageType(const std::string& name) {
  static const std::map<std::string, c10::ScalarType> types = {
      {"torch.FloatStorage", torch::kFloat},   {"torch.HalfStorage", torch::kHalf},
      {"torch.DoubleStorage", torch::kDouble}, {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},     {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort},   {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},     {"torch.BoolStorage", torch::kBool}};
  auto it = types.find(name);
  if (it == types.end()) return Corrupt("unsupported storage type " + name);
  return it->second;
}

// The pickle machine. Each operation returns a Status (or StatusOr) instead of throwing; only
// LibTorch's own calls (zip records, tensor ops, allocation) may throw, and Guarded below turns
// those into a Status.
class Machine {
 public:
  Machine(caffe2::serialize::PyTorchStreamReader* zip, const char* data, size_t size)
      : zip_(zip), p_(data), end_(data + size) {}
  StatusOr<Obj> Run();

 private:
  template <typename T>
  StatusOr<T> Read() {
    if (static_cast<size_t>(end_ - p_) < sizeof(T)) return Corrupt("truncated pickle");
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  StatusOr<std::string> ReadBytes(uint64_t n) {
    if (static_cast<uint64_t>(end_ - p_) < n) return Corrupt("truncated pickle");
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  StatusOr<std::string> ReadLine() {
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', end_ - p_));
    if (nl == nullptr) return Corrupt("truncated pickle");
    std::string s(p_, nl - p_);
    p_ = nl + 1;
    return s;
  }
  StatusOr<Obj> Pop() {
    if (stack_.empty()) return Corrupt("pickle stack underflow");
    Obj o = stack_.back();
    stack_.pop_back();
    return o;
  }
  StatusOr<Obj> Top() const {
    if (stack_.empty()) return Corrupt("pickle stack underflow");
    return stack_.back();
  }
  Status Push(StatusOr<Obj> o) {
    if (!o.ok()) return o.status();
    stack_.push_back(*o);
    return Status::Ok();
  }
  StatusOr<std::vector<Obj>> PopToMark() {
    auto mark =
        std::find_if(stack_.rbegin(), stack_.rend(), [](Obj o) { return o->kind == PyObj::kMark; });
    if (mark == stack_.rend()) return Corrupt("pickle mark missing");
    const auto first = mark.base();  // just above the mark
    std::vector<Obj> items(first, stack_.end());
    stack_.erase(first - 1, stack_.end());
    return items;
  }
  StatusOr<Obj> Make(PyObj::Kind k) {
    if (arena_.size() >= kMaxPickleObjects)
      return Corrupt("pickle has more than " + std::to_string(kMaxPickleObjects) + " objects");
    arena_.push_back(std::make_unique<PyObj>());
    arena_.back()->kind = k;
    return arena_.back().get();
  }
  // Adds `items` to container `c`, tracking nesting depth.
  Status AddItems(Obj c, const std::vector<Obj>& items) {
    for (Obj x : items) {
      c->depth = std::max(c->depth, x->depth + 1);
      if (c->depth > kMaxPickleDepth)
        return Corrupt("pickle nests deeper than " + std::to_string(kMaxPickleDepth));
    }
    if (c->items.size() + items.size() > kMaxPickleObjects)
      return Corrupt("pickle container too large");
    c->items.insert(c->items.end(), items.begin(), items.end());
    return Status::Ok();
  }
  // Adds the items to the container on top of the stack.
  Status AddToTop(const std::vector<Obj>& items) {
    REID_ASSIGN_OR_RETURN(Obj top, Top());
    return AddItems(top, items);
  }
  StatusOr<Obj> MemoGet(int64_t key) const {
    auto it = memo_.find(key);
    if (it == memo_.end())
      return Corrupt("pickle memo key " + std::to_string(key) + " was never stored");
    return it->second;
  }
  StatusOr<Obj> Str(std::string s) {
    REID_ASSIGN_OR_RETURN(Obj o, Make(PyObj::kStr));
    o->s = std::move(s);
    return o;
  }
  StatusOr<Obj> Int(int64_t v) {
    REID_ASSIGN_OR_RETURN(Obj o, Make(PyObj::kInt));
    o->i = v;
    return o;
  }
  StatusOr<Obj> Tuple(const std::vector<Obj>& items) {
    REID_ASSIGN_OR_RETURN(Obj o, Make(PyObj::kTuple));
    REID_RETURN_IF_ERROR(AddItems(o, items));
    return o;
  }
  // Pushes the N popped objects as a tuple, in stack order (TUPLE1..3).
  Status PushTupleOf(int n) {
    std::vector<Obj> items(n);
    for (int k = n - 1; k >= 0; --k) {
      REID_ASSIGN_OR_RETURN(items[k], Pop());
    }
    return Push(Tuple(items));
  }
  // Pushes an integer read as T (BININT, BININT1, BININT2).
  template <typename T>
  Status PushInt() {
    REID_ASSIGN_OR_RETURN(const T v, Read<T>());
    return Push(Int(v));
  }
  // Pushes a string whose length is read as N first (the *UNICODE and *STRING opcodes).
  template <typename N>
  Status PushStr() {
    REID_ASSIGN_OR_RETURN(const N n, Read<N>());
    REID_ASSIGN_OR_RETURN(std::string bytes, ReadBytes(n));
    return Push(Str(std::move(bytes)));
  }
  // Stores the top of the stack under a key read as K (BINPUT, LONG_BINPUT).
  template <typename K>
  Status Memoize() {
    REID_ASSIGN_OR_RETURN(Obj top, Top());
    REID_ASSIGN_OR_RETURN(const K key, Read<K>());
    memo_[key] = top;
    return Status::Ok();
  }
  // Pushes the memo entry of a key read as K (BINGET, LONG_BINGET).
  template <typename K>
  Status PushMemo() {
    REID_ASSIGN_OR_RETURN(const K key, Read<K>());
    return Push(MemoGet(key));
  }
  // Pops args and the callable, pushes what calling it rebuilds (REDUCE, NEWOBJ).
  Status PushReduced() {
    REID_ASSIGN_OR_RETURN(Obj args, Pop());
    REID_ASSIGN_OR_RETURN(Obj f, Pop());
    return Push(Reduce(f, args));
  }
  Status Long1();
  Status BinFloat();
  Status Global();
  Status StackGlobal();
  StatusOr<Obj> PersistentLoad(Obj pid);
  StatusOr<Obj> Reduce(Obj callable, Obj args);
  // Runs one opcode: false after STOP.
  StatusOr<bool> Step(uint8_t op);

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

StatusOr<Obj> Machine::PersistentLoad(Obj pid) {
  // ('storage', storage_type, key, location, numel)
  if (pid->kind != PyObj::kTuple || pid->items.size() < 3 ||
      pid->items[1]->kind != PyObj::kGlobal || pid->items[2]->kind != PyObj::kStr)
    return Corrupt("unsupported persistent id");
  const std::string key = pid->items[2]->s;
  auto it = storages_.find(key);
  if (it != storages_.end()) return it->second;
  REID_ASSIGN_OR_RETURN(Obj o, Make(PyObj::kStorage));
  REID_ASSIGN_OR_RETURN(const c10::ScalarType type, StorageType(pid->items[1]->s));
  o->i = static_cast<int64_t>(type);
  auto [ptr, size] = zip_->getRecord("data/" + key);  // throws c10::Error when it is missing
  o->tensor = torch::empty({static_cast<int64_t>(size)}, torch::kByte);
  if (size > 0) std::memcpy(o->tensor.data_ptr(), ptr.get(), size);
  storage_bytes_ += size;
  storages_[key] = o;
  return o;
}

StatusOr<std::vector<int64_t>> IntTuple(Obj t, const char* what) {
  if (t->kind != PyObj::kTuple && t->kind != PyObj::kList)
    return Corrupt(std::string("tensor ") + what + " is not a tuple");
  if (t->items.size() > kMaxTensorDims)
    return Corrupt(std::string("tensor ") + what + " has more than " +
                   std::to_string(kMaxTensorDims) + " dimensions");
  std::vector<int64_t> v;
  for (Obj x : t->items) {
    if (x->kind != PyObj::kInt)
      return Corrupt(std::string("tensor ") + what + " holds a non-integer");
    v.push_back(x->i);
  }
  return v;
}

StatusOr<Obj> Machine::Reduce(Obj callable, Obj args) {
  const std::string& name = callable->s;
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
    if (args->kind != PyObj::kTuple || args->items.size() < 4)
      return Corrupt("tensor rebuilt from fewer than 4 arguments");
    const Obj storage = args->items[0];
    if (storage->kind != PyObj::kStorage) return Corrupt("tensor without storage");
    if (args->items[1]->kind != PyObj::kInt)
      return Corrupt("tensor storage offset is not an integer");
    auto type = static_cast<c10::ScalarType>(storage->i);
    const int64_t item = static_cast<int64_t>(c10::elementSize(type));
    const int64_t bytes = storage->tensor.numel();
    if (bytes % item != 0)
      return Corrupt("storage of " + std::to_string(bytes) + " bytes is not a whole " +
                     "number of " + std::to_string(item) + "-byte elements");
    REID_ASSIGN_OR_RETURN(const std::vector<int64_t> sizes, IntTuple(args->items[2], "size"));
    REID_ASSIGN_OR_RETURN(const std::vector<int64_t> strides, IntTuple(args->items[3], "stride"));
    const int64_t offset = args->items[1]->i;
    const Status view = CheckStridedView(bytes / item, offset, sizes, strides);
    if (!view.ok()) return Corrupt("tensor view " + view.message());
    tensor_bytes_ += static_cast<uint64_t>(c10::multiply_integers(sizes)) * item;
    if (tensor_bytes_ > 4 * storage_bytes_ + (uint64_t{16} << 20))
      return Corrupt("tensors hold more than 4 times the bytes of their storages");
    REID_ASSIGN_OR_RETURN(Obj o, Make(PyObj::kTensor));
    o->tensor = storage->tensor.view(type).as_strided(sizes, strides, offset).clone();
    return o;
  }
  if (name == "torch._utils._rebuild_parameter" || name == "torch.nn.parameter.Parameter") {
    if (args->items.empty()) return Corrupt("parameter rebuilt without a tensor");
    return args->items[0];
  }
  if (name == "collections.OrderedDict") return Make(PyObj::kDict);
  return Make(PyObj::kNone);  // anything else is opaque and ignored
}

Status Machine::Long1() {
  REID_ASSIGN_OR_RETURN(const uint8_t n, Read<uint8_t>());
  if (n > 8) return Corrupt("pickled integer wider than 64 bits");
  REID_ASSIGN_OR_RETURN(const std::string b, ReadBytes(n));
  uint64_t u = 0;  // little-endian two's complement, n bytes
  for (int k = n - 1; k >= 0; --k) u = (u << 8) | static_cast<uint8_t>(b[k]);
  if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u |= ~uint64_t{0} << (8 * n);  // sign-extend
  return Push(Int(static_cast<int64_t>(u)));
}

Status Machine::BinFloat() {  // big endian
  uint64_t bits = 0;
  for (int k = 0; k < 8; ++k) {
    REID_ASSIGN_OR_RETURN(const uint8_t byte, Read<uint8_t>());
    bits = (bits << 8) | byte;
  }
  REID_ASSIGN_OR_RETURN(Obj o, Make(PyObj::kFloat));
  std::memcpy(&o->f, &bits, 8);
  stack_.push_back(o);
  return Status::Ok();
}

Status Machine::Global() {  // GLOBAL: "module\nname\n"
  REID_ASSIGN_OR_RETURN(Obj o, Make(PyObj::kGlobal));
  REID_ASSIGN_OR_RETURN(const std::string module, ReadLine());
  REID_ASSIGN_OR_RETURN(const std::string name, ReadLine());
  o->s = module + "." + name;
  stack_.push_back(o);
  return Status::Ok();
}

// STACK_GLOBAL: two strings, as Python requires (a global of globals would double in length at
// every step); names as long as Python's are enough.
Status Machine::StackGlobal() {
  REID_ASSIGN_OR_RETURN(Obj name, Pop());
  REID_ASSIGN_OR_RETURN(Obj module, Pop());
  if (name->kind != PyObj::kStr || module->kind != PyObj::kStr)
    return Corrupt("STACK_GLOBAL of something other than two strings");
  if (module->s.size() + name->s.size() > kMaxGlobalName)
    return Corrupt("global name longer than " + std::to_string(kMaxGlobalName) + " bytes");
  REID_ASSIGN_OR_RETURN(Obj o, Make(PyObj::kGlobal));
  o->s = module->s + "." + name->s;
  stack_.push_back(o);
  return Status::Ok();
}

StatusOr<bool> Machine::Step(uint8_t op) {
  Status s;
  switch (op) {
    case 0x80:  // PROTO
      s = Read<uint8_t>().status();
      break;
    case 0x95:  // FRAME
      s = Read<uint64_t>().status();
      break;
    case '}':  // EMPTY_DICT
      s = Push(Make(PyObj::kDict));
      break;
    case ']':  // EMPTY_LIST
      s = Push(Make(PyObj::kList));
      break;
    case ')':  // EMPTY_TUPLE
      s = Push(Tuple({}));
      break;
    case '(':  // MARK
      s = Push(Make(PyObj::kMark));
      break;
    case 'N':  // NONE
      s = Push(Make(PyObj::kNone));
      break;
    case 0x88:
    case 0x89: {  // NEWTRUE, NEWFALSE
      StatusOr<Obj> o = Make(PyObj::kBool);
      if (o.ok()) (*o)->i = op == 0x88;
      s = Push(std::move(o));
      break;
    }
    case 'J':  // BININT
      s = PushInt<int32_t>();
      break;
    case 'K':  // BININT1
      s = PushInt<uint8_t>();
      break;
    case 'M':  // BININT2
      s = PushInt<uint16_t>();
      break;
    case 0x8a:  // LONG1
      s = Long1();
      break;
    case 'G':  // BINFLOAT
      s = BinFloat();
      break;
    case 'X':  // BINUNICODE
    case 'T':  // BINSTRING
      s = PushStr<uint32_t>();
      break;
    case 0x8c:  // SHORT_BINUNICODE
    case 'U':   // SHORT_BINSTRING
      s = PushStr<uint8_t>();
      break;
    case 0x8d:  // BINUNICODE8
    case 0x8e:  // BINBYTES8
      s = PushStr<uint64_t>();
      break;
    case 'q':  // BINPUT
      s = Memoize<uint8_t>();
      break;
    case 'r':  // LONG_BINPUT
      s = Memoize<uint32_t>();
      break;
    case 0x94: {  // MEMOIZE
      StatusOr<Obj> top = Top();
      if (top.ok()) memo_[static_cast<int64_t>(memo_.size())] = *top;
      s = top.status();
      break;
    }
    case 'h':  // BINGET
      s = PushMemo<uint8_t>();
      break;
    case 'j':  // LONG_BINGET
      s = PushMemo<uint32_t>();
      break;
    case 'c':  // GLOBAL
      s = Global();
      break;
    case 0x93:  // STACK_GLOBAL
      s = StackGlobal();
      break;
    case 'Q': {  // BINPERSID
      StatusOr<Obj> pid = Pop();
      s = pid.ok() ? Push(PersistentLoad(*pid)) : pid.status();
      break;
    }
    case 't': {  // TUPLE
      StatusOr<std::vector<Obj>> items = PopToMark();
      s = items.ok() ? Push(Tuple(*items)) : items.status();
      break;
    }
    case 0x85:  // TUPLE1
      s = PushTupleOf(1);
      break;
    case 0x86:  // TUPLE2
      s = PushTupleOf(2);
      break;
    case 0x87:  // TUPLE3
      s = PushTupleOf(3);
      break;
    case 'R':   // REDUCE
    case 0x81:  // NEWOBJ
      s = PushReduced();
      break;
    case 's': {  // SETITEM
      StatusOr<Obj> v = Pop();
      StatusOr<Obj> k = v.ok() ? Pop() : v;
      s = k.ok() ? AddToTop({*k, *v}) : k.status();
      break;
    }
    case 'u':
    case 'e': {  // SETITEMS, APPENDS
      StatusOr<std::vector<Obj>> items = PopToMark();
      s = items.ok() ? AddToTop(*items) : items.status();
      break;
    }
    case 'a': {  // APPEND
      StatusOr<Obj> v = Pop();
      s = v.ok() ? AddToTop({*v}) : v.status();
      break;
    }
    case 'b':  // BUILD: object state (e.g. _metadata) ignored
    case '0':  // POP
      s = Pop().status();
      break;
    case '1':  // POP_MARK
      s = PopToMark().status();
      break;
    case '2':  // DUP
      s = Push(Top());
      break;
    case '.':  // STOP
      return false;
    default:
      return Corrupt("unsupported pickle opcode " + std::to_string(op));
  }
  if (!s.ok()) return s;
  return true;
}

StatusOr<Obj> Machine::Run() {
  for (;;) {
    REID_ASSIGN_OR_RETURN(const uint8_t op, Read<uint8_t>());
    REID_ASSIGN_OR_RETURN(const bool more, Step(op));
    if (!more) break;
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

StatusOr<std::string> ReadAt(std::istream* in, uint64_t pos, uint64_t n) {
  std::string out(n, '\0');
  in->clear();
  in->seekg(static_cast<std::streamoff>(pos));
  if (!in->read(out.data(), static_cast<std::streamsize>(n)))
    return Corrupt("cannot read the zip directory (truncated file)");
  return out;
}

// Checks every record the zip's central directory lists against the size of the file, before
// LibTorch's zip reader (miniz) allocates a record's declared uncompressed size: a record may not
// claim more bytes than the whole file holds, so a few edited bytes cannot make the reader
// allocate gigabytes. Finds the end-of-central-directory record as miniz does (the last
// signature in the final 64 KiB + 22 bytes) and follows its zip64 form. DataLoss on a violation.
Status CheckZipRecordSizes(std::istream* in) {
  in->clear();
  in->seekg(0, std::ios::end);
  const std::streamoff end = in->tellg();
  if (end < 22) return Corrupt("not a zip archive (" + std::to_string(end) + " bytes)");
  const uint64_t size = static_cast<uint64_t>(end);
  const uint64_t tail_size = std::min<uint64_t>(size, 22 + 65535);
  REID_ASSIGN_OR_RETURN(const std::string tail, ReadAt(in, size - tail_size, tail_size));
  size_t eocd = std::string::npos;
  for (size_t pos = tail_size - 22 + 1; pos-- > 0;) {
    if (tail.compare(pos, 4, "PK\x05\x06") == 0) {
      eocd = pos;
      break;
    }
  }
  if (eocd == std::string::npos) return Corrupt("not a zip archive (no end of central directory)");
  uint64_t entries = LittleEndian(tail, eocd + 10, 2);
  uint64_t dir_size = LittleEndian(tail, eocd + 12, 4);
  uint64_t dir_offset = LittleEndian(tail, eocd + 16, 4);
  if (entries == 0xffff || dir_size == 0xffffffff || dir_offset == 0xffffffff) {
    const uint64_t locator = size - tail_size + eocd;  // the zip64 locator is 20 bytes before
    if (locator < 20) return Corrupt("zip64 directory locator missing");
    REID_ASSIGN_OR_RETURN(const std::string loc, ReadAt(in, locator - 20, 20));
    if (loc.compare(0, 4, "PK\x06\x07") != 0) return Corrupt("zip64 directory locator missing");
    const uint64_t zip64 = LittleEndian(loc, 8, 8);
    if (zip64 > size || size - zip64 < 56)
      return Corrupt("zip64 end of central directory outside the file");
    REID_ASSIGN_OR_RETURN(const std::string rec, ReadAt(in, zip64, 56));
    if (rec.compare(0, 4, "PK\x06\x06") != 0)
      return Corrupt("zip64 end of central directory missing");
    entries = LittleEndian(rec, 32, 8);
    dir_size = LittleEndian(rec, 40, 8);
    dir_offset = LittleEndian(rec, 48, 8);
  }
  if (dir_offset > size || dir_size > size - dir_offset)
    return Corrupt("zip central directory (" + std::to_string(dir_size) + " bytes at " +
                   std::to_string(dir_offset) + ") outside the file of " + std::to_string(size) +
                   " bytes");
  if (entries > dir_size / 46)
    return Corrupt("zip directory claims " + std::to_string(entries) + " records in " +
                   std::to_string(dir_size) + " bytes");
  REID_ASSIGN_OR_RETURN(const std::string dir, ReadAt(in, dir_offset, dir_size));
  size_t pos = 0;
  for (uint64_t i = 0; i < entries; ++i) {
    if (dir.size() - pos < 46 || dir.compare(pos, 4, "PK\x01\x02") != 0)
      return Corrupt("zip central directory entry " + std::to_string(i) + " is malformed");
    uint64_t compressed = LittleEndian(dir, pos + 20, 4);
    uint64_t uncompressed = LittleEndian(dir, pos + 24, 4);
    uint64_t local = LittleEndian(dir, pos + 42, 4);
    const size_t name_len = LittleEndian(dir, pos + 28, 2);
    const size_t extra_len = LittleEndian(dir, pos + 30, 2);
    const size_t comment_len = LittleEndian(dir, pos + 32, 2);
    if (dir.size() - pos - 46 < name_len + extra_len + comment_len)
      return Corrupt("zip central directory entry " + std::to_string(i) + " is malformed");
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
      return Corrupt("zip record '" + name.substr(0, 80) + "' claims " +
                     std::to_string(std::max(uncompressed, compressed)) +
                     " bytes but the file holds " + std::to_string(size));
    pos += 46 + name_len + extra_len + comment_len;
  }
  in->clear();
  in->seekg(0);
  return Status::Ok();
}

StatusOr<StateDict> ReadFromZip(caffe2::serialize::PyTorchStreamReader& zip) {
  auto [ptr, size] = zip.getRecord("data.pkl");
  Machine machine(&zip, static_cast<const char*>(ptr.get()), size);
  REID_ASSIGN_OR_RETURN(Obj top, machine.Run());
  for (size_t k = 0; top->kind == PyObj::kDict && k + 1 < top->items.size(); k += 2) {
    if (top->items[k]->s == "state_dict" && top->items[k + 1]->kind == PyObj::kDict) {
      top = top->items[k + 1];  // {"state_dict": {...}, ...}
      break;
    }
  }
  if (top->kind != PyObj::kDict) return Corrupt("the pickled object is not a dict of tensors");
  StateDict out;
  for (size_t k = 0; k + 1 < top->items.size(); k += 2) {
    const Obj& key = top->items[k];
    const Obj& value = top->items[k + 1];
    if (key->kind == PyObj::kStr && value->kind == PyObj::kTensor) out[key->s] = value->tensor;
  }
  return out;
}

// Runs `read` and turns the exceptions of LibTorch's boundary (its zip reader throws c10::Error,
// allocations std::bad_alloc) into a DataLoss status; our own faults are already one.
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

StatusOr<StateDict> ReadZipStream(std::istream* in) {
  return Guarded([&]() -> StatusOr<StateDict> {
    REID_RETURN_IF_ERROR(CheckZipRecordSizes(in));
    caffe2::serialize::PyTorchStreamReader zip(in);
    return ReadFromZip(zip);
  });
}

}  // namespace

StatusOr<StateDict> ReadTorchSaveZip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Corrupt("cannot open " + path);
  return ReadZipStream(&in);
}

StatusOr<StateDict> ReadTorchSaveZip(std::istream* in) { return ReadZipStream(in); }

}  // namespace reid::formats
