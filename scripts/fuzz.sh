#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/) with AddressSanitizer and runs each for
# SECONDS, starting from the seed corpus in Fuzz/Seeds. Exits non-zero on any
# crash, leak, timeout or out-of-memory report (libFuzzer writes the input as
# Fuzz/.build/findings/crash-* etc.).
#
#   scripts/fuzz.sh 30                      # both targets, 30 s each (CI's smoke run)
#   scripts/fuzz.sh 1800 FormatFuzzer       # one target, longer
set -euo pipefail
cd "$(dirname "$0")/../Fuzz"
seconds="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ContainerFuzzer FormatFuzzer)

# gold crashes on these objects; lld links them.
swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld 2>&1 | tail -1
mkdir -p .build/findings
for target in "${targets[@]}"; do
    case "$target" in
        ContainerFuzzer) seeds=Seeds/container ;;
        FormatFuzzer) seeds=Seeds/formats ;;
        *) echo "unknown target $target" >&2; exit 64 ;;
    esac
    corpus=".build/corpus/$target"
    mkdir -p "$corpus"
    echo "== $target for ${seconds}s"
    ".build/release/$target" "$corpus" "$seeds" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix=.build/findings/ 2>&1 \
        | grep -E "^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)" || true
    if ls .build/findings/ 2>/dev/null | grep -q .; then
        echo "findings in Fuzz/.build/findings:" >&2
        ls .build/findings >&2
        exit 1
    fi
done
