#!/usr/bin/env bash
# The bench gate for ops: runs the hot-path criterion benches against a saved baseline and
# exits non-zero, naming each bench and its change, when one is slower by more than the
# threshold. It reads criterion's own comparison (target/criterion/**/change/estimates.json);
# it computes no statistics of its own.
#
#   benches/scripts/gate.sh save [NAME]          # record a baseline (default: main)
#   benches/scripts/gate.sh check [NAME] [PCT]   # compare with it; PCT defaults to 10
#
# A bench fails the gate when criterion's mean time grew by more than PCT % AND the lower
# end of criterion's confidence interval of the change is above zero (a real slowdown, not
# noise). Run both on the same machine, idle.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
action="${1:-check}"
name="${2:-main}"
pct="${3:-${CDRFLOW_BENCH_THRESHOLD_PCT:-10}}"
case "$action" in
save)
    cargo bench -p cdrflow-benches --bench hot_path -- --save-baseline "$name"
    echo "baseline '$name' saved under target/criterion"
    ;;
check)
    stamp="$(mktemp)"
    # Lenient: a bench added since the baseline runs and is listed as not gated (instead
    # of criterion panicking); save a new baseline to gate it.
    cargo bench -p cdrflow-benches --bench hot_path -- --baseline-lenient "$name"
    GATE_BASELINE="$name" python3 - "$stamp" "$pct" <<'PY'
import json, os, sys
from pathlib import Path
stamp, pct = os.path.getmtime(sys.argv[1]), float(sys.argv[2])
rows, failed, ungated = [], [], []
for f in sorted(Path("target/criterion").glob("**/new/estimates.json")):
    change = f.parent.parent / "change" / "estimates.json"
    if f.stat().st_mtime >= stamp and (not change.exists() or change.stat().st_mtime < stamp):
        ungated.append(str(f.parent.parent.relative_to("target/criterion")))
for f in sorted(Path("target/criterion").glob("**/change/estimates.json")):
    if f.stat().st_mtime < stamp:
        continue  # not compared in this run
    bench = str(f.parent.parent.relative_to("target/criterion"))
    mean = json.loads(f.read_text())["mean"]
    change, low = mean["point_estimate"] * 100, mean["confidence_interval"]["lower_bound"] * 100
    slower = change > pct and low > 0
    rows.append((bench, change, low, slower))
    if slower:
        failed.append(bench)
if not rows:
    sys.exit("no comparison found: save a baseline first (benches/scripts/gate.sh save)")
for bench, change, low, slower in rows:
    print(f"{'SLOWER' if slower else 'ok    '} {bench:<55} time {change:+6.1f} % (CI low {low:+6.1f} %)")
for bench in ungated:
    print(f"new    {bench:<55} no baseline '{os.environ.get('GATE_BASELINE', '')}': not gated (run `gate.sh save` to gate it)")
if failed:
    sys.exit(f"bench gate: {len(failed)} hot-path bench(es) slower by more than {pct:g} %: {', '.join(failed)}")
print(f"bench gate: no hot-path bench slower by more than {pct:g} %")
PY
    rm -f "$stamp"
    ;;
*)
    echo "usage: $0 save [NAME] | check [NAME] [PCT]" >&2
    exit 2
    ;;
esac
