// manifest.txt: the last file written into a checkpoint directory before it is renamed into
// place. It names the run and the step, lists every file with its size and a checksum, and
// ends with a CRC-32C of its own lines, so a load can tell a complete, undamaged directory from
// a truncated, bit-flipped or mixed-up one before HDF5 parses anything:
//   sambay-checkpoint-manifest 2
//   step 12
//   run 5f0c2a9e41d7b3a8c6e2f1d094b7a3c5
//   file index.h5 40960 crc32c 1a2b3c4d
//   file rank_00000.h5 123456 content-crc32c 9f8e7d6c
//   crc32c 5e6f7a8b
// The index is small and checksummed whole. A rank file's checksum is over its contents as
// io/checkpoint.cpp defines them (its run, step, rank and every dataset's CRC-32C), so that a
// rank file cannot be swapped for another (of another run, or another save of the same step)
// without reading the tensors twice; the tensors' bytes are checked against their CRC-32C
// attributes as they are loaded, and HDF5 checksums its own metadata.
// Version 1 manifests (checkpoints written before run ids) have no run line and no rank-file
// checksums; they are still read.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sambay {

struct ManifestEntry {
  std::string name;
  int64_t bytes = 0;
  std::optional<uint32_t> crc32c;          // whole-file checksum, where recorded
  std::optional<uint32_t> content_crc32c;  // checksum of the contents (rank files, version 2)
};

struct Manifest {
  int version = 2;
  int64_t step = 0;
  std::string run_id;  // empty in version 1
  std::vector<ManifestEntry> files;
};

// Records `files` (names inside dir) as they are now: sizes, whole-file checksums for those in
// `checksummed`, and the content checksums given. Writes dir/manifest.txt durably.
void write_manifest(const std::string& dir, int64_t step, const std::string& run_id,
                    const std::vector<std::string>& files,
                    const std::vector<std::string>& checksummed,
                    const std::map<std::string, uint32_t>& content_checksums);

// Reads dir/manifest.txt and checks it and every file it lists (presence, size, whole-file
// checksum). Throws naming the file that is missing, truncated, extended or corrupt. Content
// checksums are returned for the caller to check.
Manifest verify_manifest(const std::string& dir);

}  // namespace sambay
