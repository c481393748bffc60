#!/usr/bin/env bash
# Runs the core throughput benchmark (bench/core.rs); see bench/README.md.
# Usage: bench/run-core.sh [--clicks N] [--runs R] [--workers W] [--smoke]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo bench --bench core -- "$@"
