#!/usr/bin/env python3
"""Reads the TensorBoard event files of a directory with the tensorboard package's own reader.

usage: read_events.py DIR

Prints one JSON object: {"events": N, "tags": {tag: [[step, wall_time, value], ...]}}, N
counting every event the reader accepted (a record with a bad checksum ends the reading, so a
count short of what was written shows one). NaN values print as null. Exits 77 naming what is
missing when tensorboard is not installed (scripts/setup.sh installs it with pip).
"""
import glob
import json
import math
import os
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
except ImportError as e:
    print(f"skipped: {e.name} is not installed (scripts/setup.sh installs tensorboard with pip)")
    sys.exit(77)


def main():
    d = sys.argv[1]
    events = sum(sum(1 for _ in EventFileLoader(f).Load())
                 for f in sorted(glob.glob(os.path.join(d, "events.out.tfevents.*"))))
    acc = event_accumulator.EventAccumulator(d, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = {}
    for tag in acc.Tags()["scalars"]:
        tags[tag] = [[s.step, s.wall_time, None if math.isnan(s.value) else s.value]
                     for s in acc.Scalars(tag)]
    print(json.dumps({"events": events, "tags": tags}))


if __name__ == "__main__":
    main()
