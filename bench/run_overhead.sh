#!/usr/bin/env bash
# What janitord adds around a container's life: the engine's run of `IMAGE true` against a bare
# `docker run --rm IMAGE true`, interleaved, N of each (default 30); prints medians and ratio.
# Usage: bash bench/run_overhead.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release --locked -p janitor-testkit --example run_overhead -- "${1:-30}"
