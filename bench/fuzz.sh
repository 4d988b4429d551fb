#!/usr/bin/env bash
# The parsers' property tests at a million cases each (the message decoder on any text and on
# message-shaped JSON, the config parser on YAML-ish text): every case must end in a value or
# a refusal that says why, never a panic. `make test` runs the same tests at 2,000 cases.
# Usage: bash bench/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-1000000}"
start=$(date +%s)
PROPTEST_CASES="$cases" cargo test --release --locked -p janitor-model --test parsers -- --test-threads 3
echo "fuzz: $cases cases per property, 0 panics, in $(( $(date +%s) - start )) s"
