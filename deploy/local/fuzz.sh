#!/usr/bin/env bash
# A short fuzz run of the decoders (CI runs it from deploy/local/test.sh): each cargo fuzz
# target for SECONDS (default 30) from the seed corpus in fuzz/corpus, new inputs kept in a
# scratch directory. A crash fails the run and names the input to turn into a regression
# (fuzz/README.md). Installs cargo-fuzz from crates.io if missing.
#
#   deploy/local/fuzz.sh [SECONDS]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds="${1:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cd "$repo/fuzz"
# Without a sanitizer the instrumented build works on the stable toolchain.
for target in decode_json decode_asterisk_csv decode_avro_confluent; do
    scratch="$(mktemp -d)"
    echo "fuzz.sh: $target for ${seconds}s (seeds: fuzz/corpus/$target)" >&2
    if ! cargo fuzz run "$target" -s none "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=70000 -print_final_stats=1 2>"$scratch.log"; then
        tail -n 40 "$scratch.log" >&2
        echo "fuzz.sh: $target crashed; the input is under fuzz/artifacts/$target/: add it to fuzz/regressions/$target/ and fix the decoder" >&2
        exit 1
    fi
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$scratch.log" | sed "s/^/fuzz.sh: $target /" >&2
    rm -rf "$scratch" "$scratch.log"
done
