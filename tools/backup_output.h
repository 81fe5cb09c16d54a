// Where `backup -f FILE` writes: a new file beside FILE, renamed over it only once the stream is
// complete. A backup that fails (a damaged source, a full disk, Ctrl-C) never destroys the
// previous good backup under that name.
#pragma once

#include <string>

#include "util/fs.h"

namespace storemove::tools {

class BackupOutput {
 public:
  // "-": standard output. An existing non-regular file (a FIFO, /dev/null, a tape device) is
  // written in place, and so is FILE when its directory refuses a new file (EACCES). Anything
  // else: FILE.tmp.<pid>.<token> beside FILE (beside the file a symlink FILE names, which need
  // not exist yet: the link stays), with FILE's permissions if it exists, else 0600. kIo naming
  // the directory when a link names a file in one that does not exist.
  explicit BackupOutput(const std::string& path);
  ~BackupOutput();  // not committed: the new file is removed
  BackupOutput(const BackupOutput&) = delete;
  BackupOutput& operator=(const BackupOutput&) = delete;

  int fd() const { return fd_.get(); }
  const std::string& shown() const { return shown_; }
  // The stream is written: on stable storage (fsync), then under FILE (`complete`), or under
  // FILE.incomplete (some messages were left out, each reported), leaving FILE as it was.
  // Returns the name it now has.
  std::string Commit(bool complete);

 private:
  std::string path_, temp_, shown_;
  UniqueFd fd_;
  bool committed_ = false;
};

}  // namespace storemove::tools
