#!/usr/bin/env bash
# Runs the HTTP ingest benchmark (bench/ingest.rs); see bench/README.md.
# Usage: bench/run-ingest.sh [--seconds S] [--connections C] [--single-connections C] [--runs R] [--workers W] [--smoke]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo bench --bench ingest -- "$@"
