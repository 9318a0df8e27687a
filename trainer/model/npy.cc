// .npy reading and writing (header dict parsed for descr, fortran_order and shape).
#include "trainer/model/npy.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace reid::model {
namespace {

std::string HeaderValue(const std::string& header, const std::string& key) {
  const size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) return "";
  size_t v = header.find(':', k);
  if (v == std::string::npos) return "";
  ++v;
  while (v < header.size() && header[v] == ' ') ++v;
  const char open = header[v];
  const char close = open == '(' ? ')' : open == '\'' ? '\'' : ',';
  const size_t end = header.find(close, v + 1);
  return header.substr(v, end == std::string::npos ? std::string::npos : end - v + 1);
}

}  // namespace

bool ReadNpy(const std::string& path, torch::Tensor* out, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open .npy file '" + path + "'";
    return false;
  }
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    *error = "'" + path + "' is not a .npy file (bad magic)";
    return false;
  }
  uint32_t header_len = 0;
  unsigned char len_bytes[4] = {0, 0, 0, 0};
  in.read(reinterpret_cast<char*>(len_bytes), magic[6] == 1 ? 2 : 4);
  header_len = len_bytes[0] | (len_bytes[1] << 8) | (len_bytes[2] << 16) | (len_bytes[3] << 24);
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  const std::string descr = HeaderValue(header, "descr");
  const std::string fortran = HeaderValue(header, "fortran_order");
  std::string shape_text = HeaderValue(header, "shape");
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
    *error = "'" + path + "': unsupported dtype " + descr + " (want <f4, <f8, <i4 or <i8)";
    return false;
  }
  if (fortran.rfind("False", 0) != 0) {
    *error = "'" + path + "': Fortran-order arrays are not supported";
    return false;
  }
  std::vector<int64_t> shape;
  for (char& c : shape_text) {
    if (c == '(' || c == ')' || c == ',') c = ' ';
  }
  std::istringstream dims(shape_text);
  for (int64_t d; dims >> d;) shape.push_back(d);
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(type));
  const auto bytes = static_cast<std::streamsize>(t.numel() * t.element_size());
  if (!in.read(static_cast<char*>(t.data_ptr()), bytes)) {
    *error = "'" + path + "': truncated data (header says shape " + shape_text + ")";
    return false;
  }
  *out = type == torch::kDouble ? t.to(torch::kFloat) : t;
  return true;
}

bool WriteNpy(const std::string& path, const torch::Tensor& tensor, std::string* error) {
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
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xFF), static_cast<char>(len >> 8)};
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(len_bytes, 2);
  out << header;
  out.write(static_cast<const char*>(t.data_ptr()),
            static_cast<std::streamsize>(t.numel() * t.element_size()));
  if (!out) {
    *error = "cannot write .npy file '" + path + "'";
    return false;
  }
  return true;
}

}  // namespace reid::model
