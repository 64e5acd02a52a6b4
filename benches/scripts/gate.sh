#!/usr/bin/env bash
# The bench gate for ops: runs the hot-path criterion benches against a saved baseline and
# exits non-zero, naming each bench and its change, when one is slower by more than the
# threshold. It reads criterion's own comparison (target/criterion/**/change/estimates.json);
# it computes no statistics of its own.
#
#   benches/scripts/gate.sh save [NAME]          # record a baseline (default: main)
#   benches/scripts/gate.sh check [NAME] [PCT]   # compare with it; PCT defaults to 10
#   benches/scripts/gate.sh ab REV [PCT] [ROUNDS] [FILTER]
#                                                # REV's build and this one, run in turns
#
# A bench fails the gate when criterion's mean time grew by more than PCT % AND the lower
# end of criterion's confidence interval of the change is above zero (a real slowdown, not
# noise). Run both on the same machine, idle.
#
# `ab` is for a machine whose speed drifts while it runs, as a shared VM's does (±30 % within
# minutes here: benches/RESULTS.md §21, §26), where a baseline saved an hour before compares
# two different machines. It builds the hot-path benches of REV (a commit, in a git worktree
# at target/gate-ab/base) and of the working tree as it is, then runs the two in turns,
# ROUNDS times (default 4; the order swaps every round), each bench for 1 s of warm-up and
# 3 s of measurement, and compares criterion's central estimates round by round, each with
# the one run beside it. A bench fails when the median of its rounds' ratios is more than
# PCT % slower AND it was slower in at least three rounds out of four. FILTER is a criterion
# filter (a regex over bench names, e.g. '^rollup/'). No baseline is read or written.
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
ab)
    rev="${2:-}"
    rounds="${4:-4}"
    filter="${5:-}"
    if [ -z "$rev" ]; then
        echo "usage: $0 ab REV [PCT] [ROUNDS] [FILTER]: REV is the commit to compare the working tree with" >&2
        exit 2
    fi
    if ! base="$(git rev-parse --verify --quiet "$rev^{commit}")"; then
        echo "gate.sh ab: '$rev' names no commit in $repo (git log --oneline shows them)" >&2
        exit 2
    fi
    if ! [[ "$rounds" =~ ^[1-9][0-9]*$ && "$pct" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
        echo "gate.sh ab: ROUNDS must be a whole number ≥ 1 and PCT a number (got '$rounds', '$pct')" >&2
        exit 2
    fi
    # One worktree, moved to REV: cargo tells a checkout's builds apart by their sources'
    # times, and would take another REV's build, in another path, for this one's.
    tree="target/gate-ab/base"
    git worktree prune
    if [ -d "$tree" ]; then
        git -C "$tree" checkout -q --detach "$base"
    else
        git worktree add --detach -q "$tree" "$base"
    fi
    mkdir -p target/gate-ab/bin
    # REV builds in a target directory of its own (target/gate-ab/target, kept for the next
    # run: the first one builds every dependency, ~10 min on 2 cores). Sharing this repo's
    # would not do: cargo names a workspace's artifacts alike in any checkout, and would take
    # REV's build for this one's.
    build() {
        (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench -q -p cdrflow-benches --bench hot_path --no-run \
            --message-format=json-render-diagnostics) |
            python3 -c 'import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "hot_path"]
print(exe[-1] if exe else "")'
    }
    for side in base candidate; do
        dir="$tree" target="$repo/target/gate-ab/target"
        [ "$side" = candidate ] && dir="$repo" target="$repo/target"
        echo "gate.sh ab: building the $side's hot-path benches ($( [ "$side" = base ] && git rev-parse --short "$base" || echo "the working tree"))" >&2
        exe="$(build "$dir" "$target")"
        [ -n "$exe" ] || { echo "gate.sh ab: the $side's benches did not build (see cargo's errors above)" >&2; exit 1; }
        cp "$exe" "target/gate-ab/bin/$side"
    done
    python3 - "$pct" "$rounds" "$filter" "$(git rev-parse --short "$base")" <<'PY'
import re, statistics, subprocess, sys
pct, rounds, filt, base_name = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
UNIT = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
# criterion's "<bench> time: [low mid high]", the name alone on its line when it is long.
LINE = re.compile(r"^(\S+)\s+time:\s+\[[\d.]+ \S+ ([\d.]+) (\S+) [\d.]+ \S+\]", re.M)

def run(side):
    args = [f"target/gate-ab/bin/{side}", "--bench", "--warm-up-time", "1", "--measurement-time", "3",
            "--discard-baseline", "--noplot"] + ([filt] if filt else [])
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"gate.sh ab: the {side}'s benches failed:\n{out.stderr[-2000:]}")
    return {name: float(mid) * UNIT[unit] for name, mid, unit in LINE.findall(out.stdout)}

ratios, times, seen = {}, {"base": {}, "candidate": {}}, {"base": set(), "candidate": set()}
for r in range(rounds):
    order = ("base", "candidate") if r % 2 == 0 else ("candidate", "base")
    got = {side: run(side) for side in order}
    for side in order:
        seen[side] |= got[side].keys()
    for name in got["candidate"].keys() & got["base"].keys():
        ratios.setdefault(name, []).append(got["candidate"][name] / got["base"][name])
        for side in order:
            times[side].setdefault(name, []).append(got[side][name])
    print(f"round {r + 1} of {rounds}: {len(got['candidate'])} benches", file=sys.stderr, flush=True)
if not ratios:
    sys.exit(f"gate.sh ab: no bench ran in both builds (filter {filt!r}): nothing was compared")
failed = []
print(f"the working tree against {base_name}, {rounds} rounds in turns; time ratio < 1: faster")
for name in sorted(ratios):
    rs = ratios[name]
    median = statistics.median(rs)
    slower_rounds = sum(x > 1 for x in rs)
    bad = median > 1 + pct / 100 and slower_rounds * 4 >= len(rs) * 3
    if bad:
        failed.append(name)
    base_t, cand_t = statistics.median(times["base"][name]), statistics.median(times["candidate"][name])
    print(f"{'SLOWER' if bad else 'ok    '} {name:<55} {median:5.2f}x time ({(median - 1) * 100:+6.1f} %), "
          f"slower in {slower_rounds} of {len(rs)} rounds; median {base_t * 1e3:.3f} -> {cand_t * 1e3:.3f} ms "
          f"[{', '.join(f'{x:.2f}' for x in rs)}]")
for name in sorted(seen["base"] ^ seen["candidate"]):
    print(f"alone  {name:<55} in one build only: not compared")
if failed:
    sys.exit(f"bench gate: {len(failed)} hot-path bench(es) slower than {base_name} by more than {pct:g} %: {', '.join(failed)}")
print(f"bench gate: no hot-path bench slower than {base_name} by more than {pct:g} %")
PY
    ;;
*)
    echo "usage: $0 save [NAME] | check [NAME] [PCT] | ab REV [PCT] [ROUNDS] [FILTER]" >&2
    exit 2
    ;;
esac
