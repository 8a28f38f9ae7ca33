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

# run MODE: starts $world processes together (1 for single); prints
# "wall_ms max_files_ms publish_ms complete_ms start_spread_ms", the phase-2 times
# (node record; listing + completion + cleanup) of the process that finished
# last: the critical path of the epoch's completion.
run() {
    local mode="$1" dir="$work/$RANDOM$RANDOM" n="$world" extra=() run_id="b$RANDOM"
    [ "$mode" = dist ] || extra=(--plain)
    [ "$mode" = single ] && n=1
    mkdir -p "$dir"
    # Every process fills its buffers first (~100 MB/s per process on 2 shared cores, and a margin).
    local start_at=$(( $(date +%s%N) + 3000000000 + n * bytes * 10 ))
    for ((r = 0; r < n; r++)); do
        "$bin" dist-bench "$dir" --rank "$r" --world "$n" --run "$run_id" --bytes "$bytes" --durability "$durability" \
            --start-at "$start_at" "${extra[@]}" > "$dir.out$r" &
    done
    wait
    cat "$dir.out"* | awk '{ if (min == "" || $2 < min) min = $2; if ($2 > late) late = $2; if ($3 > max) { max = $3; pub = $5; comp = $6 }
                            if ($4 > files) files = $4 }
                          END { printf "%.1f %.1f %.3f %.3f %.1f\n", (max - min) / 1e6, files / 1e6, pub / 1e6, comp / 1e6, (late - min) / 1e6 }'
    rm -rf "$dir" "$dir.out"*
}

# Warm-up: touch and free the working size once (fresh pages are slow here, MACHINE-NOTES.md).
run plain > /dev/null
echo "world=$world bytes/node=$bytes durability=$durability"
printf "%-4s %13s %13s %11s %10s %11s %10s %11s %10s\n" rep dist_wall_ms plain_wall_ms single_ms dist/plain dist/single publish_ms complete_ms spread_ms
for ((i = 1; i <= reps; i++)); do
    read -r dwall dfiles dpub dcomp dspread < <(run dist)
    read -r pwall _ _ _ pspread < <(run plain)
    read -r swall _ _ _ _ < <(run single)
    printf "%-4s %13s %13s %11s %10s %11s %10s %11s %10s\n" "$i" "$dwall" "$pwall" "$swall" \
        "$(awk -v a="$dwall" -v b="$pwall" 'BEGIN { printf "%.3f", a / b }')" \
        "$(awk -v a="$dwall" -v b="$swall" 'BEGIN { printf "%.3f", a / b }')" "$dpub" "$dcomp" "$dspread/$pspread"
done
