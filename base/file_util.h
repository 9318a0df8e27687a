// Bounded reads of files a user names: only regular files (a FIFO would block, /dev/zero never
// ends, a directory is not data), and no more than a caller's limit, checked before a byte is
// read or allocated.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace reid::base {

// Opens `path` (symbolic links followed) with O_NONBLOCK, so opening a FIFO never waits for a
// writer, and checks the opened descriptor with fstat (no race between check and read):
//   missing path (ENOENT, ENOTDIR)         NotFound "PATH: cannot open (No such file or directory)"
//   other open failures (EACCES, ELOOP...) InvalidArgument "PATH: cannot open (REASON)"
//   not a regular file                     InvalidArgument "PATH: not a regular file (a FIFO)"
//   larger than max_bytes                  InvalidArgument "PATH: 5.2 GB is more than the 64 MiB
//                                          limit for WHAT" (WHAT: e.g. "an image"; "a file" when
//                                          empty)
// Then reads at most the size fstat gave (+1 byte to detect growth): a file that shrank or grew
// while being read is DataLoss "PATH: changed size while being read"; an I/O error is DataLoss
// "PATH: read error (REASON)".
StatusOr<std::string> ReadRegularFile(const std::string& path, uint64_t max_bytes,
                                      const std::string& what = "");
// The same, into bytes (the image decoders take uint8_t).
StatusOr<std::vector<uint8_t>> ReadRegularFileBytes(const std::string& path, uint64_t max_bytes,
                                                    const std::string& what = "");

// The checks of ReadRegularFile without the read: the path opens (O_NONBLOCK), is a regular file
// and holds at most max_bytes. Same statuses.
Status CheckRegularFile(const std::string& path, uint64_t max_bytes, const std::string& what = "");

// ReadRegularFile's checks and statuses, then the open descriptor (read-only, close-on-exec;
// O_NONBLOCK has no effect on a regular file's reads) for a reader that parses as it goes (zlib's
// gzdopen). The caller closes it. *size, when not null, is fstat's size (at most max_bytes).
StatusOr<int> OpenRegularFile(const std::string& path, uint64_t max_bytes,
                              const std::string& what = "", uint64_t* size = nullptr);

// OpenRegularFile as a std::istream that owns the descriptor (a .npy array read straight into its
// tensor, history.jsonl line by line). It reads to the end of the file: max_bytes bounds the size
// when it opens, a file that grows later (a log being written) is read as it is then.
StatusOr<std::unique_ptr<std::istream>> OpenRegularFileStream(const std::string& path,
                                                              uint64_t max_bytes,
                                                              const std::string& what = "",
                                                              uint64_t* size = nullptr);

// An output file a user names (--out_json, --visualize_out, DIR/report.html), checked before any
// work: absent, or a regular file (symbolic links followed) that will be replaced, in an existing
// folder. InvalidArgument "PATH: exists and is not a regular file (a FIFO)" (a FIFO would block
// the write, a device or a directory take it somewhere else) or "PATH: folder F does not exist".
Status CheckOutputFile(const std::string& path);

// ReadRegularFile's checks and statuses, but the content goes to `consume` in pieces of at most
// `chunk_bytes` (memory stays bounded whatever the file's size); a non-OK status from `consume`
// stops the read and is returned. Used to checksum large files.
Status ReadRegularFileInChunks(const std::string& path, uint64_t max_bytes, const std::string& what,
                               size_t chunk_bytes,
                               const std::function<Status(const char* data, size_t n)>& consume);

// "5.2 GB", "812 kB", "17 bytes": a size for messages (decimal units, 2 significant digits).
std::string FormatBytes(uint64_t bytes);
// "64 MiB", "1 GiB", "4096 bytes": a limit for messages (binary units when exact).
std::string FormatLimit(uint64_t bytes);

// Writes `bytes` to `path` so that a reader sees the old file or the whole new one, never a
// part: a unique temporary file beside it (mode 0666 less the umask), fsync, rename, then the
// folder is synced. On failure the temporary file is removed and nothing else changes:
// InvalidArgument when `path` is a directory, its folder is missing or not writable; Internal
// for an I/O error. Messages name `path`.
Status WriteFileAtomically(const std::string& path, const std::string& bytes);

}  // namespace reid::base
