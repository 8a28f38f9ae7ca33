#!/usr/bin/env bash
# Distributed crash torture: 4 processes (ranks) run JobRunner on one shared
# prefix; each round SIGKILLs a random rank at a random moment, then the rest,
# and restarts the whole job with a new run id, ROUNDS times. After every
# round: every epoch with a completion record loads bit-exact on every node,
# all ranks resumed from the epoch the storage names, no epoch reported
# complete was lost (retention keeps the newest 2), every file verifies.
#
#   scripts/dist-torture.sh 500      # the full run (the test suite runs 8 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-500}"
swift build --build-tests >/dev/null
CKPT_DIST_ROUNDS="$rounds" swift test --skip-build --filter "DistributedProcessTests/sigkillOfRandomRanksNeverBreaksTheGlobalCommit" 2>&1 \
    | grep -E "distributed torture:|✔|✘|error" | grep -v "^\s*$"
