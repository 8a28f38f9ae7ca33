#!/usr/bin/env bash
# Crash torture: a child process saves checkpoints (and appends to a container
# log) in a loop and is killed with SIGKILL at random moments, ROUNDS times.
# After every kill: the resume epoch loads bit-exact, no completed epoch or
# append is lost, every committed file verifies, a torn append log recovers.
#
#   scripts/torture.sh 1000      # the full run (CI runs 40 rounds in `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-1000}"
CKPT_CRASH_ROUNDS="$rounds" swift test --filter "CrashTests/sigkillAtRandomMomentsLosesNoCompletedEpoch" 2>&1 \
    | grep -E "crash test:|✔|✘|error" | grep -v "^\s*$"
