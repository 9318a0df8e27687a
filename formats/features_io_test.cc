// Meta CSV parsing: the accepted forms and one clear message per bad input.
#include "formats/features_io.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/status_test_util.h"

namespace reid::formats {
namespace {

TEST(MetaCsvTest, ParsesRowsWithCommasInPathsAndCrlf) {
  StatusOr<std::vector<MetaRow>> rows =
      ParseMetaCsv("path,pid,camid\r\na/b,c.jpg,12,-1\r\nx.jpg,0,5\r\n\r\n", "m.csv");
  ASSERT_OK(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].path, "a/b,c.jpg");
  EXPECT_EQ((*rows)[0].pid, 12);
  EXPECT_EQ((*rows)[0].camid, -1);
  EXPECT_EQ((*rows)[1].pid, 0);
}

TEST(MetaCsvTest, BadInputNamesFileAndLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "m.csv: empty file"},
      {"id,pid,camid\n", "m.csv:1: expected the header"},
      {"path,pid,camid\nx.jpg,1\n", "m.csv:2: expected 'path,pid,camid'"},
      {"path,pid,camid\nx.jpg,1,2\ny.jpg,one,2\n", "m.csv:3:"},
      {"path,pid,camid\nx.jpg,1,2.5\n", "m.csv:2:"},
      {"path,pid,camid\nx.jpg,99999999999999999999,1\n", "m.csv:2:"},
      {"path,pid,camid\nx.jpg,1,2\n\ny.jpg,1,2\n", "m.csv:4: a row after a blank line"},
  };
  for (const auto& [text, want] : cases) {
    StatusOr<std::vector<MetaRow>> rows = ParseMetaCsv(text, "m.csv");
    ASSERT_FALSE(rows.ok()) << text;
    EXPECT_EQ(rows.status().exit_code(), 2);
    EXPECT_NE(rows.status().message().find(want), std::string::npos) << rows.status().message();
  }
}

// A meta CSV or a features file that is a FIFO blocked `reid eval` forever; both are refused by
// name before anything is read, as is a directory.
TEST(MetaCsvTest, FilesMustBeRegular) {
  char dir[] = "/tmp/features_io_test.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string fifo = std::string(dir) + "/meta.csv";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  StatusOr<std::vector<MetaRow>> rows = ReadMetaCsv(fifo);
  EXPECT_EQ(rows.status().exit_code(), 2);
  EXPECT_EQ(rows.status().message(), fifo + ": not a regular file (a FIFO)");
  StatusOr<torch::Tensor> features = ReadFeatures(fifo, -1, "");
  EXPECT_EQ(features.status().exit_code(), 2);
  EXPECT_EQ(features.status().message(), fifo + ": not a regular file (a FIFO)");
  EXPECT_EQ(ReadMetaCsv(dir).status().message(),
            std::string(dir) + ": not a regular file (a directory)");
  unlink(fifo.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace reid::formats
