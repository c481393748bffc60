#!/usr/bin/env bash
# Runs the embedded-mode benchmark (bench/embedded.rs); see bench/README.md.
# Usage: bench/run-embedded.sh [--clicks M] [--runs R] [--smoke]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo bench --bench embedded -- "$@"
