// Fuzzes the torch.save reader's pickle machine: the input is data.pkl of a torch.save zip built
// in memory, next to storages "0" (16 bytes) and "1" (64 bytes) it may reference.
#include <caffe2/serialize/inline_container.h>

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "formats/torch_save_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string zip;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* buf, size_t n) {
      zip.append(static_cast<const char*>(buf), n);
      return n;
    });
    writer.writeRecord("data.pkl", data, size);
    const char storage[64] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    writer.writeRecord("data/0", storage, 16);
    writer.writeRecord("data/1", storage, 64);
  }  // the destructor writes the version record and the zip's directory
  std::istringstream in(zip);
  reid::formats::ReadTorchSaveZip(&in);
  return 0;
}
