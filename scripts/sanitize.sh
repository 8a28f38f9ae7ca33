#!/usr/bin/env bash
# Runs the test suite under AddressSanitizer and ThreadSanitizer, each in its
# own build directory (.build-asan, .build-tsan), so the normal build is left alone.
#
#   scripts/sanitize.sh            # both
#   scripts/sanitize.sh thread     # one
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=("$@")
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(address thread)
for sanitizer in "${sanitizers[@]}"; do
    case "$sanitizer" in
        address) scratch=.build-asan ;;
        thread) scratch=.build-tsan ;;
        *) echo "unknown sanitizer $sanitizer (address, thread)" >&2; exit 64 ;;
    esac
    echo "== swift test --sanitize=$sanitizer"
    log="$scratch.log"
    status=0
    # LeakSanitizer is off: its only reports are Foundation's and XCTest's own
    # allocations (Process, Data(contentsOf:), test suites), none in this package.
    ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        swift test --sanitize="$sanitizer" --scratch-path "$scratch" > "$log" 2>&1 || status=$?
    grep -E "Test run with|✘|ERROR: (Address|Thread)Sanitizer|WARNING: ThreadSanitizer|SUMMARY" "$log" || true
    echo "exit status $status (full output: $log)"
    [ "$status" -eq 0 ] || exit "$status"
done
