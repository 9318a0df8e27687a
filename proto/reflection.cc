#include "proto/reflection.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/text_format.h>

namespace reid::proto {
namespace {

void Diff(const google::protobuf::Message& a, const google::protobuf::Message& b,
          const std::string& prefix, const google::protobuf::TextFormat::Printer& printer,
          std::vector<std::string>* out) {
  using google::protobuf::FieldDescriptor;
  const auto* d = a.GetDescriptor();
  const auto* ra = a.GetReflection();
  const auto* rb = b.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string path = prefix + f->name();
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated()) {
      Diff(ra->GetMessage(a, f), rb->GetMessage(b, f), path + ".", printer, out);
      continue;
    }
    auto print = [&](const google::protobuf::Message& m, const auto* r) {
      std::string all, v;
      if (!f->is_repeated()) {
        printer.PrintFieldValueToString(m, f, -1, &all);
        return all;
      }
      for (int k = 0; k < r->FieldSize(m, f); ++k) {
        printer.PrintFieldValueToString(m, f, k, &v);
        all += v + ",";
      }
      return all;
    };
    if (print(a, ra) != print(b, rb)) out->push_back(path);
  }
}

}  // namespace

std::vector<std::string> DiffFields(const google::protobuf::Message& a,
                                    const google::protobuf::Message& b) {
  std::vector<std::string> out;
  google::protobuf::TextFormat::Printer printer;
  Diff(a, b, "", printer, &out);
  return out;
}

}  // namespace reid::proto
