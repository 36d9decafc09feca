// Making file system changes survive a crash: fsync of files and directories, and small text
// files replaced atomically.
#pragma once

#include <string>

namespace sambay {

// fsync of a file or directory (a directory's fsync makes renames and new entries in it
// durable). Throws naming the path.
void fsync_path(const std::string& path);

// Replaces `path` by a file holding `text`: readers see the old or the new file, never a part,
// and the new one is on disk (file and directory entry) when this returns.
void write_file_durably(const std::string& path, const std::string& text);

// The whole file as text; throws naming the path.
std::string read_text_file(const std::string& path);

}  // namespace sambay
