// manifest.txt: the last file written into a checkpoint directory before it is renamed into
// place. It lists every file with its size, the whole-file CRC-32C of the index (small), and a
// CRC-32C of its own lines, so a load can tell a complete, undamaged directory from a truncated
// or bit-flipped one before HDF5 parses anything:
//   sambay-checkpoint-manifest 1
//   step 12
//   file index.h5 40960 crc32c 1a2b3c4d
//   file rank_00000.h5 123456
//   crc32c 5e6f7a8b
// Rank files are not checksummed whole (that would mean reading them twice); their datasets
// carry CRC-32C attributes and HDF5 checksums its own metadata.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sambay {

struct ManifestEntry {
  std::string name;
  int64_t bytes = 0;
  std::optional<uint32_t> crc32c;  // whole-file checksum, where recorded
};

struct Manifest {
  int64_t step = 0;
  std::vector<ManifestEntry> files;
};

// Records `files` (names inside dir) as they are now: sizes, and whole-file checksums for
// those in `checksummed`. Writes dir/manifest.txt durably.
void write_manifest(const std::string& dir, int64_t step, const std::vector<std::string>& files,
                    const std::vector<std::string>& checksummed);

// Reads dir/manifest.txt and checks it and every file it lists (presence, size, checksum).
// Throws naming the file that is missing, truncated, extended or corrupt.
Manifest verify_manifest(const std::string& dir);

}  // namespace sambay
