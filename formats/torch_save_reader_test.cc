// The torch.save reader's bounds on work and memory: a pickle string longer than the pickle, a zip
// record claiming more bytes than the file, STACK_GLOBAL fed its own results (each doubling the
// name), and files that are not zips; each a DataLoss saying what, at once.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>
#include <string>

#include "base/status_test_util.h"
#include "formats/torch_save_reader.h"

namespace reid::formats {
namespace {

// A torch.save-layout zip whose data.pkl is `pickle`, beside a 16-byte storage "0".
std::string Zip(const std::string& pickle) {
  std::string zip;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&zip](const void* data, size_t n) {
      zip.append(static_cast<const char*>(data), n);
      return n;
    });
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    const char storage[16] = {};
    writer.writeRecord("data/0", storage, sizeof(storage));
  }
  return zip;
}

Status Read(const std::string& bytes) {
  std::istringstream in(bytes);
  return ReadTorchSaveZip(&in).status();
}

void ExpectDataLoss(const Status& s, const std::string& part) {
  EXPECT_EQ(s.code(), Status::Code::kDataLoss) << s.message();
  EXPECT_NE(s.message().find(part), std::string::npos) << s.message();
}

TEST(TorchSaveReader, StringLengthBeyondThePickle) {
  // BINUNICODE of 0xe5000017 bytes in a pickle of 11.
  const std::string pickle(
      "\x80\x02X\x17\x00\x00\xe5"
      "abc.",
      11);
  ExpectDataLoss(Read(Zip(pickle)), "truncated pickle");
}

TEST(TorchSaveReader, ZipRecordClaimingMoreThanTheFile) {
  std::string zip = Zip("\x80\x02}.");
  // The central directory entry of data/0: its uncompressed size becomes 0xe5000017.
  bool patched = false;
  for (size_t pos = zip.find("PK\x01\x02"); pos != std::string::npos;
       pos = zip.find("PK\x01\x02", pos + 4)) {
    uint16_t name_len = 0;
    std::memcpy(&name_len, &zip[pos + 28], 2);
    if (zip.compare(pos + 46, name_len, "archive/data/0") != 0) continue;
    const uint32_t huge = 0xe5000017;
    std::memcpy(&zip[pos + 24], &huge, 4);
    patched = true;
  }
  ASSERT_TRUE(patched);
  ExpectDataLoss(Read(zip),
                 "zip record 'archive/data/0' claims 3841982487 bytes but the file holds");
}

TEST(TorchSaveReader, StackGlobalOfGlobalsDoesNotDouble) {
  // "a", then 40 x (DUP, STACK_GLOBAL): a name of 2^40 bytes if globals were taken as strings.
  std::string pickle = std::string(
      "\x80\x02X\x01\x00\x00\x00"
      "a",
      8);
  for (int i = 0; i < 40; ++i) pickle += "2\x93";
  pickle += ".";
  ExpectDataLoss(Read(Zip(pickle)), "STACK_GLOBAL of something other than two strings");
  // Two strings whose name would exceed the bound.
  const std::string long_name(2000, 'x');
  std::string two = "\x80\x02X" + std::string("\xd0\x07\x00\x00", 4) + long_name + "X" +
                    std::string("\x01\x00\x00\x00", 4) + "y\x93.";
  ExpectDataLoss(Read(Zip(two)), "global name longer than 1024 bytes");
  // What torch.save writes still reads: collections.OrderedDict by STACK_GLOBAL.
  std::string ok = std::string("\x80\x04X\x0b\x00\x00\x00", 7) + "collectionsX" +
                   std::string("\x0b\x00\x00\x00", 4) + "OrderedDict\x93)R.";
  std::istringstream in(Zip(ok));
  StatusOr<StateDict> sd = ReadTorchSaveZip(&in);
  ASSERT_OK(sd);
  EXPECT_TRUE(sd->empty());
}

TEST(TorchSaveReader, NotAZip) {
  ExpectDataLoss(Read(std::string(5000, 'x')), "not a zip archive (no end of central directory)");
  ExpectDataLoss(Read("PK"), "not a zip archive (2 bytes)");
}

}  // namespace
}  // namespace reid::formats
