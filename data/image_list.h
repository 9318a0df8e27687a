// The images of `reid embed --images=DIR|LIST.txt`: a folder walked recursively, or a text file
// listing one image path per line. Both come from the user and are bounded (depth, entries, line
// length, file size). Existence and readability of the images are not checked here: the caller
// decodes each one and lists those it cannot read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace reid::data {

constexpr uint64_t kMaxImageListBytes = uint64_t{256} << 20;  // a list file: 256 MiB
constexpr size_t kMaxImageListLine = 4096;                    // bytes per list line (PATH_MAX)
constexpr int kMaxImageFolderDepth = 32;                      // folders below the one named
constexpr int64_t kMaxImageListEntries = 10'000'000;          // folder entries seen / list paths

// True for names ending in .jpg, .jpeg or .png, in any case.
bool HasImageExtension(const std::string& name);

// The image paths of a list file's text, in order (duplicates kept). One path per line; "\n" or
// "\r\n" line ends; a UTF-8 byte-order mark at the start is dropped; lines that are empty or only
// spaces and tabs, and lines whose first byte is '#', are skipped; a path is otherwise taken as
// it is (spaces included). Relative paths are joined to `base_dir` ("base_dir/path"; kept as they
// are when base_dir is empty); absolute paths are kept. Names need no image extension here: the
// user named them. InvalidArgument "SOURCE:LINE: ..." for a NUL byte, a line longer than
// kMaxImageListLine bytes, or more than kMaxImageListEntries paths; `source` names the list.
StatusOr<std::vector<std::string>> ParseImageList(const std::string& text,
                                                  const std::string& base_dir,
                                                  const std::string& source);

// The images of `dir_or_list`:
// - a folder (symbolic link followed): walked recursively; every entry whose name has an image
//   extension and that is not a folder is kept, as "dir_or_list/sub/name", sorted by path (byte
//   order). Entries that are not regular files (a FIFO, a broken link) are kept too, so that the
//   caller reports them as unreadable instead of their silently going missing. Hidden entries
//   (names starting with '.': ".git", macOS's "._x.jpg" resource forks) are skipped, files and
//   folders. Links to folders are followed, each folder visited once (a link loop or a second
//   link to the same folder adds nothing). InvalidArgument when folders nest deeper than
//   kMaxImageFolderDepth, when more than kMaxImageListEntries entries are seen, or when a folder
//   cannot be read (permissions).
// - a regular file: read as a list (ParseImageList, relative to the list's folder) through
//   base::ReadRegularFile with kMaxImageListBytes.
// NotFound naming the path when it is missing or neither a folder nor a regular file (a FIFO, a
// device); InvalidArgument "no images in PATH" when nothing is found.
StatusOr<std::vector<std::string>> ListImages(const std::string& dir_or_list);

}  // namespace reid::data
