// Image lists for `reid embed`: a bounded recursive folder walk (POSIX opendir/stat, each folder
// visited once by device and inode) or a bounded list file.
#include "data/image_list.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "base/file_util.h"

namespace reid::data {
namespace {

bool EndsWithNoCase(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  if (s.size() < n) return false;
  for (size_t i = 0; i < n; ++i) {
    char c = s[s.size() - n + i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != suffix[i]) return false;
  }
  return true;
}

const char* KindOf(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "an unknown kind of file";
}

// The folder walk's state: what it found and what it has seen.
class Walker {
 public:
  // Visits `dir` (a folder at `depth` below the one named), adding image paths to `out`.
  Status Walk(const std::string& dir, const struct stat& st, int depth) {
    if (!visited_.emplace(st.st_dev, st.st_ino).second) return Status::Ok();
    if (depth > kMaxImageFolderDepth) {
      return Status::InvalidArgument(dir + ": folders nested deeper than " +
                                     std::to_string(kMaxImageFolderDepth) + " levels");
    }
    std::vector<std::string> names;
    {
      std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), &closedir);
      if (!d) {
        return Status::InvalidArgument(dir + ": cannot read the folder (" + std::strerror(errno) +
                                       ")");
      }
      errno = 0;
      while (const dirent* e = readdir(d.get())) {
        if (++entries_ > kMaxImageListEntries) {
          return Status::InvalidArgument(dir + ": more than " +
                                         std::to_string(kMaxImageListEntries) +
                                         " entries in the folders to walk");
        }
        // Hidden entries, "." and ".." among them.
        if (e->d_name[0] != '.') names.emplace_back(e->d_name);
        errno = 0;
      }
      if (errno != 0) {
        return Status::InvalidArgument(dir + ": cannot read the folder (" + std::strerror(errno) +
                                       ")");
      }
    }
    // readdir's order depends on the file system: sorted, the walk (and which of two links to one
    // folder is taken) is the same everywhere.
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      const std::string path = dir == "/" ? "/" + name : dir + "/" + name;
      struct stat child;
      const bool exists = stat(path.c_str(), &child) == 0;  // follows links
      if (exists && S_ISDIR(child.st_mode)) {
        REID_RETURN_IF_ERROR(Walk(path, child, depth + 1));
      } else if (HasImageExtension(name)) {
        // Kept even when it is a broken link or not a regular file: the caller reports it.
        images_.push_back(path);
      }
    }
    return Status::Ok();
  }

  std::vector<std::string> TakeImages() { return std::move(images_); }

 private:
  std::set<std::pair<dev_t, ino_t>> visited_;
  std::vector<std::string> images_;
  int64_t entries_ = 0;
};

}  // namespace

bool HasImageExtension(const std::string& name) {
  return EndsWithNoCase(name, ".jpg") || EndsWithNoCase(name, ".jpeg") ||
         EndsWithNoCase(name, ".png");
}

StatusOr<std::vector<std::string>> ParseImageList(const std::string& text,
                                                  const std::string& base_dir,
                                                  const std::string& source) {
  std::vector<std::string> paths;
  size_t begin = 0;
  // A UTF-8 byte-order mark (Windows editors write one) is not part of the first path.
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) begin = 3;
  for (int64_t line_no = 1; begin < text.size(); ++line_no) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    size_t len = end - begin;
    if (len > 0 && text[begin + len - 1] == '\r') --len;
    const std::string where = source + ":" + std::to_string(line_no);
    if (len > kMaxImageListLine) {
      return Status::InvalidArgument(where + ": line of " + std::to_string(len) +
                                     " bytes (at most " + std::to_string(kMaxImageListLine) + ")");
    }
    const std::string line = text.substr(begin, len);
    begin = end + 1;
    if (line.find('\0') != std::string::npos) {
      return Status::InvalidArgument(where + ": NUL byte in the line (not a text file?)");
    }
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    if (static_cast<int64_t>(paths.size()) >= kMaxImageListEntries) {
      return Status::InvalidArgument(where + ": more than " + std::to_string(kMaxImageListEntries) +
                                     " image paths");
    }
    if (line[0] == '/' || base_dir.empty()) {
      paths.push_back(line);
    } else {
      paths.push_back(base_dir.back() == '/' ? base_dir + line : base_dir + "/" + line);
    }
  }
  return paths;
}

StatusOr<std::vector<std::string>> ListImages(const std::string& dir_or_list) {
  // "imgs/" and "imgs" give the same paths ("imgs/a.jpg"); "/" stays "/".
  std::string path = dir_or_list;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  struct stat st;
  if (path.empty() || stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return Status::NotFound(dir_or_list + ": no such folder or image list (" +
                            (path.empty() ? "empty path" : std::strerror(err)) + ")");
  }
  std::vector<std::string> images;
  if (S_ISDIR(st.st_mode)) {
    Walker walker;
    REID_RETURN_IF_ERROR(walker.Walk(path, st, 0));
    images = walker.TakeImages();
    std::sort(images.begin(), images.end());
  } else if (S_ISREG(st.st_mode)) {
    REID_ASSIGN_OR_RETURN(const std::string text,
                          base::ReadRegularFile(path, kMaxImageListBytes, "an image list"));
    const size_t slash = path.rfind('/');
    const std::string base_dir =
        slash == std::string::npos ? "" : (slash == 0 ? "/" : path.substr(0, slash));
    REID_ASSIGN_OR_RETURN(images, ParseImageList(text, base_dir, path));
  } else {
    return Status::NotFound(dir_or_list + ": neither a folder nor an image list file (" +
                            KindOf(st.st_mode) + ")");
  }
  if (images.empty()) return Status::InvalidArgument("no images in " + dir_or_list);
  return images;
}

}  // namespace reid::data
