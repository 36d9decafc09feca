#!/usr/bin/env bash
# tools/plot_run.py on two runs: one with every record kind, a resume that repeats steps, a NaN
# written as null and a line cut by a kill; one of an older format (no kinds). The PNG must be
# written (and be a PNG); a run without records and a wrong --label count are errors.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
mkdir -p "$tmp/a" "$tmp/b" "$tmp/empty"
cat >"$tmp/a/metrics.jsonl" <<'JSONL'
{"kind":"run_start","step":0,"wall_time":1.0,"config":{"steps":4}}
{"kind":"valid","step":0,"wall_time":1.5,"valid_loss":5.5}
{"kind":"step","step":1,"wall_time":2.0,"loss":5.0,"tokens":100,"tokens_per_s":50}
{"kind":"step","step":2,"wall_time":3.0,"loss":null,"tokens":200,"tokens_per_s":60}
{"kind":"checkpoint","step":2,"wall_time":3.5,"dir":"c"}
{"kind":"step","step":3,"wall_time":4.0,"loss":4.0,"tokens":300,"tokens_per_s":70}
{"kind":"resume","step":2,"wall_time":9.0,"resumed_from_step":2,"checkpoint":"c"}
{"kind":"step","step":3,"wall_time":10.0,"loss":4.1,"tokens":300,"tokens_per_s":65}
{"kind":"valid","step":4,"wall_time":11.0,"valid_loss":4.2}
{"kind":"step","step":4,"wall_time":11.5,"lo
JSONL
cat >"$tmp/b/metrics.jsonl" <<'JSONL'
{"step":0,"valid_loss":5.4}
{"step":1,"loss":5.1,"lr":0.001,"tokens":100,"tokens_per_s":40}
{"step":2,"loss":4.6,"lr":0.001,"tokens":200,"tokens_per_s":45}
{"resumed_from_step":2,"checkpoint":"x"}
{"step":2,"valid_loss":4.7}
JSONL
: >"$tmp/empty/metrics.jsonl"
python=/usr/bin/python3
"$python" "$repo/tools/plot_run.py" "$tmp/a" "$tmp/b/metrics.jsonl" --out "$tmp/out.png" \
  --smooth 2 || fail "plot_run.py failed"
[ "$(head -c 8 "$tmp/out.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
  fail "out.png is not a PNG"
"$python" "$repo/tools/plot_run.py" "$tmp/a" --x tokens --label first --out "$tmp/tokens.png" ||
  fail "--x tokens failed"
[ -s "$tmp/tokens.png" ] || fail "tokens.png is empty"
if out=$("$python" "$repo/tools/plot_run.py" "$tmp/empty" --out "$tmp/e.png" 2>&1); then
  fail "a run without records was accepted"
fi
grep -q "no training or validation records" <<<"$out" || fail "unexpected message: $out"
if out=$("$python" "$repo/tools/plot_run.py" "$tmp/a" "$tmp/b" --label one --out "$tmp/l.png" 2>&1); then
  fail "one --label for two runs was accepted"
fi
grep -q -- "--label given 1 times for 2 runs" <<<"$out" || fail "unexpected message: $out"
echo "1 passed, 0 failed"
