#!/usr/bin/env bash
# Distributed save benchmark: W local processes (default 4) each save one node's
# checkpoint of BYTES (default 512 MiB, 4 blobs) to one directory at the same
# moment, through DistributedCheckpointManager (files, node record, completion),
# against (a) the same W processes saving with plain CheckpointManagers (no commit
# protocol) and (b) one node's save alone. Prints, per repetition, the wall
# time of each and the phase-2 costs (node record; completion + cleanup).
#
#   scripts/dist-bench.sh [REPS] [BYTES] [WORLD] [DURABILITY]
#
# One machine: W processes share its cores and its disk, so (a) is the fair
# baseline for the protocol's cost; (b) is what W machines would each take.
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"; bytes="${2:-536870912}"; world="${3:-4}"; durability="${4:-full}"
swift build -c release --product checkpoint-stress >/dev/null
bin=.build/release/checkpoint-stress
work="$(mktemp -d "${TMPDIR:-/tmp}/dist-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# run MODE: starts $world processes together; prints "wall_ms max_files_ms publish_ms(max) complete_ms(max)"
run() {
    local mode="$1" dir="$work/$RANDOM$RANDOM" n="$world" extra=()
    [ "$mode" = dist ] || extra=(--plain)
    [ "$mode" = single ] && n=1
    mkdir -p "$dir"
    local start_at=$(( $(date +%s%N) + 3000000000 ))   # every process fills its buffers first
    for ((r = 0; r < n; r++)); do
        "$bin" dist-bench "$dir" --rank "$r" --world "$n" --run "b$RANDOM" --bytes "$bytes" --durability "$durability" \
            --start-at "$start_at" "${extra[@]}" > "$dir.out$r" &
    done
    wait
    cat "$dir.out"* | awk '{ if (min == "" || $2 < min) min = $2; if ($3 > max) max = $3;
                            if ($4 > files) files = $4; if ($5 > pub) pub = $5; if ($6 > comp) comp = $6 }
                          END { printf "%.1f %.1f %.3f %.3f\n", (max - min) / 1e6, files / 1e6, pub / 1e6, comp / 1e6 }'
    rm -rf "$dir" "$dir.out"*
}

# Warm-up: touch and free the working size once (fresh pages are slow here, MACHINE-NOTES.md).
run plain > /dev/null
echo "world=$world bytes/node=$bytes durability=$durability"
printf "%-4s %14s %14s %14s %10s %12s %12s\n" rep dist_wall_ms plain_wall_ms single_ms dist/plain publish_ms complete_ms
for ((i = 1; i <= reps; i++)); do
    read -r dwall dfiles dpub dcomp < <(run dist)
    read -r pwall _ _ _ < <(run plain)
    read -r swall _ _ _ < <(run single)
    printf "%-4s %14s %14s %14s %10s %12s %12s\n" "$i" "$dwall" "$pwall" "$swall" \
        "$(awk -v a="$dwall" -v b="$pwall" 'BEGIN { printf "%.3f", a / b }')" "$dpub" "$dcomp"
done
