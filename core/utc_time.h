// The current time for files and records people read: UTC, ISO 8601 ("2026-01-01T12:00:00Z").
#pragma once

#include <string>

namespace sambay {

std::string utc_now();

}  // namespace sambay
