// .npy reading and writing (header dict parsed for descr, fortran_order and shape).
#include "formats/npy.h"

#include <cctype>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "base/file_util.h"

namespace reid::formats {
namespace {

constexpr uint32_t kMaxHeaderBytes = 65536;  // numpy itself refuses headers over 10,000 bytes
// Far above any feature or image array we read (MSMT17's gallery features: 420 MB).
constexpr uint64_t kMaxNpyBytes = uint64_t{64} << 30;
constexpr size_t kMaxDims = 32;              // numpy's limit (NPY_MAXDIMS)

// The value of 'key' in the header dict: a quoted string, a word (True/False) or a parenthesised
// tuple. "" when the key is absent or its value is unterminated.
std::string HeaderValue(const std::string& header, const std::string& key) {
  const size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) return "";
  size_t v = header.find(':', k);
  if (v == std::string::npos) return "";
  ++v;
  while (v < header.size() && header[v] == ' ') ++v;
  if (v >= header.size()) return "";
  const char open = header[v];
  const char close = open == '(' ? ')' : open == '\'' ? '\'' : ',';
  const size_t end = header.find(close, v + 1);
  if (end == std::string::npos) return open == '(' || open == '\'' ? "" : header.substr(v);
  return header.substr(v, end - v + (close == ',' ? 0 : 1));
}

// Parses "(d0, d1, ...)" strictly: non-negative decimal integers, commas, spaces, one optional
// trailing comma. The element count must fit in 62 bits.
bool ParseShape(const std::string& text, std::vector<int64_t>* shape, int64_t* numel) {
  if (text.size() < 2 || text.front() != '(' || text.back() != ')') return false;
  size_t i = 1;
  const size_t end = text.size() - 1;
  auto skip_spaces = [&] {
    while (i < end && text[i] == ' ') ++i;
  };
  *numel = 1;
  skip_spaces();
  while (i < end) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
    int64_t d = 0;
    for (; i < end && std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
      if (__builtin_mul_overflow(d, 10, &d) || __builtin_add_overflow(d, text[i] - '0', &d))
        return false;
    }
    if (__builtin_mul_overflow(*numel, d, numel) || *numel > (int64_t{1} << 62)) return false;
    shape->push_back(d);
    if (shape->size() > kMaxDims) return false;
    skip_spaces();
    if (i < end && text[i] != ',') return false;
    if (i < end) ++i;  // the comma
    skip_spaces();
  }
  // "(3)" is not a tuple in Python: numpy writes "(3,)".
  return shape->size() != 1 || text.find(',') != std::string::npos;
}

}  // namespace

StatusOr<torch::Tensor> ReadNpy(const std::string& path) {
  auto fail = [&](const std::string& what) { return Status::DataLoss("'" + path + "': " + what); };
  // Through the project's one bounded regular-file reader: a FIFO or a device is refused before
  // it is read (a FIFO would block), and the descriptor checked is the one read.
  uint64_t file_size = 0;
  StatusOr<std::unique_ptr<std::istream>> opened =
      base::OpenRegularFileStream(path, kMaxNpyBytes, "a .npy array", &file_size);
  if (!opened.ok()) {
    if (opened.status().code() == Status::Code::kNotFound) {
      return Status::NotFound("cannot open .npy file '" + path + "'");
    }
    return opened.status();  // "PATH: not a regular file (a FIFO)", "PATH: 70 GB is more ..."
  }
  std::istream& in = **opened;
  unsigned char magic[8];
  if (!in.read(reinterpret_cast<char*>(magic), 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    return Status::InvalidArgument("'" + path + "' is not a .npy file (bad magic)");
  if (magic[6] < 1 || magic[6] > 3)
    return fail("unsupported .npy format version " + std::to_string(magic[6]));
  const int len_size = magic[6] == 1 ? 2 : 4;
  unsigned char len_bytes[4] = {0, 0, 0, 0};
  if (!in.read(reinterpret_cast<char*>(len_bytes), len_size)) return fail("truncated header");
  const uint32_t header_len = len_bytes[0] | (len_bytes[1] << 8) | (len_bytes[2] << 16) |
                              (static_cast<uint32_t>(len_bytes[3]) << 24);
  const uint64_t data_offset = 8 + len_size + uint64_t{header_len};
  if (header_len > kMaxHeaderBytes)
    return fail("header of " + std::to_string(header_len) + " bytes (at most " +
                std::to_string(kMaxHeaderBytes) + ")");
  if (data_offset > file_size)
    return fail("header of " + std::to_string(header_len) + " bytes runs past the end of the " +
                std::to_string(file_size) + "-byte file");
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) return fail("truncated header");
  const std::string descr = HeaderValue(header, "descr");
  const std::string fortran = HeaderValue(header, "fortran_order");
  const std::string shape_text = HeaderValue(header, "shape");
  c10::ScalarType type;
  if (descr == "'<f4'") {
    type = torch::kFloat;
  } else if (descr == "'<f8'") {
    type = torch::kDouble;
  } else if (descr == "'<i8'") {
    type = torch::kLong;
  } else if (descr == "'<i4'") {
    type = torch::kInt;
  } else {
    return fail("unsupported dtype " + descr.substr(0, 20) + " (want <f4, <f8, <i4 or <i8)");
  }
  if (fortran != "True" && fortran != "False")
    return fail("header has no fortran_order True/False");
  if (fortran == "True") return fail("Fortran-order arrays are not supported");
  std::vector<int64_t> shape;
  int64_t numel = 1;
  if (!ParseShape(shape_text, &shape, &numel))
    return fail("bad shape " + shape_text.substr(0, 60) +
                " (want a tuple of non-negative integers, at most " + std::to_string(kMaxDims) +
                " dimensions, fewer than 2^62 elements)");
  const uint64_t item = c10::elementSize(type);
  const uint64_t have = file_size - data_offset;
  // numel < 2^62 and item <= 8: no overflow in 64 bits.
  if (static_cast<uint64_t>(numel) * item != have)
    return fail("shape " + shape_text + " needs " + std::to_string(numel * item) +
                " bytes of data but the file holds " + std::to_string(have));
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(type));
  if (have > 0 && !in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(have)))
    return fail("read error");
  return type == torch::kDouble ? t.to(torch::kFloat) : t;
}

Status WriteNpy(const std::string& path, const torch::Tensor& tensor) {
  torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  CHECK(t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kLong)
      << "WriteNpy supports float32 and int64, got " << t.scalar_type();
  std::ostringstream h;
  h << "{'descr': '" << (t.scalar_type() == torch::kFloat ? "<f4" : "<i8")
    << "', 'fortran_order': False, 'shape': (";
  for (int64_t i = 0; i < t.dim(); ++i)
    h << t.size(i) << (t.dim() == 1 || i + 1 < t.dim() ? "," : "");
  h << "), }";
  std::string header = h.str();
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) return Status::InvalidArgument("cannot write .npy file '" + path + "'");
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xFF), static_cast<char>(len >> 8)};
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(len_bytes, 2);
  out << header;
  out.write(static_cast<const char*>(t.data_ptr()),
            static_cast<std::streamsize>(t.numel() * t.element_size()));
  if (!out.flush()) return Status::Internal("cannot write .npy file '" + path + "'");
  return Status::Ok();
}

}  // namespace reid::formats
