// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4 and
// TensorBoard records. Checkpoints store one per dataset and verify it on load.
//
// crc32c(data, n, crc) continues a running checksum: crc32c(ab) == crc32c(b, crc32c(a)).
// The SSE4.2 instruction is used when the CPU has it; crc32c_portable is the table-driven
// fallback (slicing by 8), exposed so tests check both against the same known values.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sambay {

uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);

// Whether crc32c uses the CPU instruction on this machine.
bool crc32c_hardware_available();

}  // namespace sambay
