// The tuner's cache file: a versioned text file of one tab-separated record per tuned key,
// read defensively and written atomically. The format is described in docs/tuning.md. Used by
// kernels/tuner.cc (which decides what to keep) and its tests; everyone else goes through
// kernels/tuner.h.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/conv_problem.h"
#include "kernels/tuner.h"

namespace convserve {
namespace tuning_cache {

// Lines longer than this are rejected on reading, and never written.
inline constexpr size_t kMaxLineBytes = 64 << 10;

// One tuned key as stored: the machine it was measured on, the whole problem (batch is the
// bucket) and the result.
struct Record {
  TuningFingerprint fingerprint;
  ConvProblem problem;
  TunedEntry entry;
};

// The file's first lines (format and version, a comment), each ending in '\n'.
std::string Header();

// One record as a line, without the '\n'.
std::string FormatRecord(const Record& record);

// Parses one line written by FormatRecord (fields in any order, unknown ones ignored).
// INVALID_ARGUMENT naming the first problem: a missing, duplicate or malformed field, a bad
// %-escape, an invalid problem, a batch that is not a bucket.
absl::StatusOr<Record> ParseRecord(absl::string_view line);

// What reading a cache file found. Never fails: a missing file is empty without warnings; an
// unreadable, oversized or foreign file, or a bad header or version, is empty with a warning;
// a bad record is skipped with a warning naming its line. Warnings name the path.
struct FileContents {
  std::vector<Record> records;
  std::vector<std::string> warnings;
};
FileContents ReadFile(const std::string& path);

// Replaces `path` with `contents` so that readers see the old file or the whole new one: a
// uniquely named temporary file beside it, fsync, rename, fsync of the directory. Creates the
// directory when missing. UNAVAILABLE naming the step and the reason; no temporary file is left.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);

// Holds an exclusive advisory lock (flock) on the directory of `path` while alive, so that the
// writers of one cache file (the engines of a server with several GPUs, each with its own
// Tuner, and other processes on the same state directory) do their read-merge-write one at a
// time and none drops another's new entries. The directory, not the file, because the file is
// replaced by rename at every write; and no lock file is left beside it. Creates the directory
// when missing. Where locking is impossible (e.g. some network file systems) it holds nothing:
// the write stays atomic, only a concurrent writer's newest entries could be missed.
class DirectoryLock {
 public:
  explicit DirectoryLock(const std::string& path);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  bool locked() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Removes temporary files of `path` that a writer left when it died between creating and
// renaming them; only ones older than ten minutes, since a live writer holds its own for
// milliseconds.
void RemoveStaleTemporaryFiles(const std::string& path);

}  // namespace tuning_cache
}  // namespace convserve
