#!/usr/bin/env bash
# Instructions per record of each hot-path step, counted by valgrind (cachegrind): a count
# that does not drift with the neighbours of a shared VM, where criterion's wall-clock
# figures move ±30 % between runs. Use it to compare two builds of one step:
#
#   benches/scripts/instructions.sh                 # json csv rollup rollup_empty_window arrow parquet
#   ROWS=3200 benches/scripts/instructions.sh parquet   # Parquet files of 3 200 rows each
#   benches/scripts/instructions.sh read                # the archive read back for the counters
#
# Each step runs over the criterion benches' 20 000 records once and three times
# (benches/examples/steps.rs); the difference over two passes, per record, leaves out the
# set-up. Under valgrind, memcpy/memcmp are valgrind's own and CPU features differ (no
# SHA extensions, so the HMAC counts high): compare builds with it, not steps with each
# other, and confirm a gain in time with criterion.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
command -v valgrind >/dev/null || {
    echo "instructions.sh: valgrind is not installed: apt-get install -y valgrind" >&2
    exit 1
}
cargo build --release -q -p cdrflow-benches --example steps
bin="$repo/target/release/examples/steps"
# "<instructions> <records>" of one run, or nothing if it failed. The rollup's passes each
# start from a window made for them (steps.rs), so only the function that rolls up is
# counted (callgrind's toggle); the other steps count the whole run.
count() {
    case "$1" in
    rollup*)
        valgrind --tool=callgrind --toggle-collect='*rollup_pass*' --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
            awk '/Collected :/ { ir = $4 } /^records / { n = $2 } END { if (ir && n) print ir, n }' || true
        ;;
    *)
        valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
            awk '/I *refs/ { gsub(",", "", $4); ir = $4 } /^records / { n = $2 } END { if (ir && n) print ir, n }' || true
        ;;
    esac
}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(json csv rollup rollup_empty_window arrow parquet)
for step in "${steps[@]}"; do
    read -r once records <<<"$(count "$step" 1)"
    read -r thrice _ <<<"$(count "$step" 3)"
    [ -n "${once:-}" ] && [ -n "${thrice:-}" ] || {
        echo "instructions.sh: step '$step' failed or gave no count; run $bin $step 1 to see why" >&2
        exit 1
    }
    echo "$step $(((thrice - once) / 2 / records)) instructions/record over $records records${ROWS:+ (files of $ROWS rows)}"
done
