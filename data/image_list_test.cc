// Image lists of `reid embed`: folder walks (order, extensions, hidden entries, links and their
// loops, depth) and list files (comments, CRLF, relative paths, NUL bytes, long lines, size).
#include "data/image_list.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/status_test_util.h"

namespace reid::data {
namespace {

namespace fs = std::filesystem;
using Paths = std::vector<std::string>;

class ImageListTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "reid_image_list_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Creates `rel` (and its folders) under the test folder with `text`; returns its path.
  std::string Touch(const std::string& rel, const std::string& text = "x") {
    const fs::path p = fs::path(dir_) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

  std::string dir_;
};

TEST_F(ImageListTest, FoldersAreWalkedInPathOrder) {
  Touch("b.JPG");
  Touch("a.png");
  Touch("a.b/c.jpeg");
  Touch("a/z.Jpeg");
  Touch("sub/deep/d.jpg");
  Touch("notes.txt");
  Touch("image.jpg.txt");
  Touch("jpg");
  Touch(".hidden.jpg");    // hidden: skipped
  Touch("._a.png");        // a macOS resource fork: skipped
  Touch(".git/e.jpg");     // inside a hidden folder: skipped
  Touch("dir.jpg/f.png");  // a folder named like an image is walked, not listed
  ASSERT_EQ(mkfifo((dir_ + "/fifo.jpg").c_str(), 0600), 0);         // kept: the caller reports it
  fs::create_symlink(dir_ + "/missing.png", dir_ + "/broken.png");  // kept too
  const Paths want = {dir_ + "/a.b/c.jpeg", dir_ + "/a.png",         dir_ + "/a/z.Jpeg",
                      dir_ + "/b.JPG",      dir_ + "/broken.png",    dir_ + "/dir.jpg/f.png",
                      dir_ + "/fifo.jpg",   dir_ + "/sub/deep/d.jpg"};
  StatusOr<Paths> got = ListImages(dir_);
  ASSERT_OK(got);
  EXPECT_EQ(*got, want);
  // A trailing slash gives the same paths.
  got = ListImages(dir_ + "/");
  ASSERT_OK(got);
  EXPECT_EQ(*got, want);
}

TEST_F(ImageListTest, LinkedFoldersAreVisitedOnceAndLoopsEnd) {
  Touch("real/a.jpg");
  fs::create_symlink(dir_, dir_ + "/real/up");                     // a loop back to the top
  fs::create_symlink(dir_ + "/real", dir_ + "/zlink");             // a second way into real/
  fs::create_symlink(dir_ + "/real/a.jpg", dir_ + "/linked.jpg");  // a link to a file: kept
  StatusOr<Paths> got = ListImages(dir_);
  ASSERT_OK(got);
  EXPECT_EQ(*got, (Paths{dir_ + "/linked.jpg", dir_ + "/real/a.jpg"}));
  // The folder named may itself be a link.
  fs::create_symlink(dir_ + "/real", dir_ + "/../" + fs::path(dir_).filename().string() + "_l");
  const std::string link = dir_ + "_l";
  got = ListImages(link);
  fs::remove(link);
  ASSERT_OK(got);
  // Through the link, up/ leads to the top folder, new on this walk (its real/ is not).
  EXPECT_EQ(*got, (Paths{link + "/a.jpg", link + "/up/linked.jpg"}));
}

TEST_F(ImageListTest, DepthIsBounded) {
  std::string rel;
  for (int i = 0; i < kMaxImageFolderDepth; ++i) rel += "d/";
  Touch(rel + "ok.jpg");
  StatusOr<Paths> got = ListImages(dir_);
  ASSERT_OK(got);
  EXPECT_EQ(got->size(), 1u);
  Touch(rel + "d/too_deep.jpg");
  const Status s = ListImages(dir_).status();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find(": folders nested deeper than 32 levels"), std::string::npos)
      << s.message();
}

TEST_F(ImageListTest, ListFilesAreRelativeToTheirFolder) {
  const std::string list = Touch("lists/crops.txt",
                                 "\xEF\xBB\xBF"
                                 "# person crops\r\n"
                                 "a.jpg\r\n"
                                 "\r\n"
                                 "   \t\n"
                                 "sub/with space.png\n"
                                 "/abs/b.jpeg\n"
                                 "  # not a comment: a path\n"
                                 "a.jpg\n"
                                 "noext");
  StatusOr<Paths> got = ListImages(list);
  ASSERT_OK(got);
  const std::string base = dir_ + "/lists/";
  EXPECT_EQ(*got, (Paths{base + "a.jpg", base + "sub/with space.png", "/abs/b.jpeg",
                         base + "  # not a comment: a path", base + "a.jpg", base + "noext"}));
}

TEST(ParseImageList, BaseFolders) {
  StatusOr<Paths> got = ParseImageList("a.jpg\nb/c.png\n", "", "l.txt");
  ASSERT_OK(got);
  EXPECT_EQ(*got, (Paths{"a.jpg", "b/c.png"}));
  got = ParseImageList("a.jpg\n", "/", "l.txt");
  ASSERT_OK(got);
  EXPECT_EQ(*got, (Paths{"/a.jpg"}));
  got = ParseImageList("", "x", "l.txt");
  ASSERT_OK(got);
  EXPECT_TRUE(got->empty());
}

TEST(ParseImageList, NulBytesAndLongLinesNameTheLine) {
  Status s = ParseImageList(std::string("a.jpg\n# c\nb\0.jpg\n", 17), "", "l.txt").status();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s.message(), "l.txt:3: NUL byte in the line (not a text file?)");
  const std::string ok_line(kMaxImageListLine, 'a'), long_line(kMaxImageListLine + 1, 'a');
  EXPECT_OK(ParseImageList("x\r\n" + ok_line + "\r\n", "", "l.txt"));
  s = ParseImageList("x\n\n" + long_line + "\n", "", "l.txt").status();
  EXPECT_EQ(s.message(), "l.txt:3: line of 4097 bytes (at most 4096)");
}

TEST_F(ImageListTest, MissingEmptyAndOddPaths) {
  Status s = ListImages(dir_ + "/nope").status();
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_EQ(s.message(), dir_ + "/nope: no such folder or image list (No such file or directory)");
  const std::string fifo = dir_ + "/list.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  s = ListImages(fifo).status();
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_EQ(s.message(), fifo + ": neither a folder nor an image list file (a FIFO)");
  EXPECT_EQ(ListImages("/dev/zero").status().code(), Status::Code::kNotFound);
  // Nothing found: a folder without images, a list of comments.
  Touch("empty/readme.txt");
  s = ListImages(dir_ + "/empty").status();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s.message(), "no images in " + dir_ + "/empty");
  const std::string comments = Touch("c.txt", "# nothing\n\n");
  EXPECT_EQ(ListImages(comments).status().message(), "no images in " + comments);
  // A list over its size limit is refused from its size (a sparse file: nothing is read).
  const std::string big = dir_ + "/big.txt";
  const int fd = open(big.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, (int64_t{256} << 20) + 1), 0);
  close(fd);
  s = ListImages(big).status();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s.message(), big + ": 268 MB is more than the 256 MiB limit for an image list");
}

TEST(HasImageExtension, CaseInsensitive) {
  for (const char* yes : {"a.jpg", "a.JPG", "b.jpeg", "B.JpEg", "c.png", ".png", "x.y.PNG"}) {
    EXPECT_TRUE(HasImageExtension(yes)) << yes;
  }
  for (const char* no : {"a.jpg.txt", "jpg", "a.gif", "a.jp", "png", "a_png", ""}) {
    EXPECT_FALSE(HasImageExtension(no)) << no;
  }
}

}  // namespace
}  // namespace reid::data
