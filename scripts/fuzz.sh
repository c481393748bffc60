#!/usr/bin/env bash
# Fuzzes the HTTP ingest decoders, their fast path against serde, and the
# signature check (tests/fuzz) for a fixed time per target, and fails if any
# target finds a crash:
#
#     scripts/fuzz.sh            # 10 s per target, for CI
#     scripts/fuzz.sh 3600       # an hour per target
#
# The targets are every [[bin]] of tests/fuzz/Cargo.toml (`cargo fuzz list`).
# Needs only cargo (and rustup, to use a nightly toolchain when one is
# installed); installs cargo-fuzz if it is missing. Targets are built once,
# in release mode with debug assertions and overflow checks, without a
# sanitizer: the code under test is safe Rust, so what the fuzzer looks for
# is a panic (or a hang), and without a sanitizer the build works on stable.
#
# Each run starts from the committed seeds (tests/fuzz/corpus/TARGET) and
# from what earlier runs on this machine found (tests/fuzz/corpus-grown/
# TARGET, git-ignored); libFuzzer writes new inputs into the latter only, so
# the seeds stay as committed. A crashing input is saved under
# tests/fuzz/artifacts/TARGET/ and the script prints how to replay it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-10}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]  (a positive integer, default 10)" >&2
    exit 2
fi

fuzz_dir=tests/fuzz
started=$SECONDS
current_step="setup"

on_exit() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "fuzz.sh: FAILED during: $current_step (exit $status, $((SECONDS - started)) s)" >&2
    fi
}
trap on_exit EXIT

step() {
    current_step="$*"
    echo
    echo "==> $current_step"
}

# Cargo from rustup lives in ~/.cargo/bin, which non-login shells may not
# have on PATH; `cargo install` puts cargo-fuzz there too.
ensure_cargo() {
    if [ -d "$HOME/.cargo/bin" ] && [[ ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null; then
        echo "fuzz.sh: cargo not found (scripts/test.sh installs it)" >&2
        exit 1
    fi
}

# `cargo +nightly` when rustup has a nightly toolchain, else the default
# toolchain. With no sanitizer, cargo-fuzz passes no nightly-only flag, so
# stable builds and fuzzes the same targets.
pick_toolchain() {
    toolchain=()
    if command -v rustup >/dev/null && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        toolchain=(+nightly)
    fi
}

step "toolchain"
ensure_cargo
pick_toolchain
cargo "${toolchain[@]}" --version
rustc "${toolchain[@]}" --version
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found: installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

# The fuzz crate is a workspace of its own; starting its lockfile from the
# main one makes it build tally with the dependency versions that ship.
cp Cargo.lock "$fuzz_dir/Cargo.lock"

fuzz=(cargo "${toolchain[@]}" fuzz)
build_flags=(--fuzz-dir "$fuzz_dir" --release --debug-assertions --sanitizer none)

step "build (all fuzz targets)"
"${fuzz[@]}" build "${build_flags[@]}"

mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir "$fuzz_dir")
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz.sh: no fuzz targets in $fuzz_dir" >&2
    exit 1
fi

logs="$fuzz_dir/target/fuzz-logs"
mkdir -p "$logs"
crashed=()
for target in "${targets[@]}"; do
    step "fuzz $target (${seconds} s)"
    grown="$fuzz_dir/corpus-grown/$target"
    artifacts="$fuzz_dir/artifacts/$target"
    mkdir -p "$grown" "$artifacts"
    before=$(LC_ALL=C ls -A "$artifacts")
    libfuzzer_flags=(-max_total_time="$seconds" -timeout=10)
    if [[ "$target" == decode_* ]]; then
        libfuzzer_flags+=(-dict="$fuzz_dir/click.dict")
    fi
    log="$logs/$target.log"
    status=0
    "${fuzz[@]}" run "${build_flags[@]}" "$target" "$grown" "$fuzz_dir/corpus/$target" -- "${libfuzzer_flags[@]}" >"$log" 2>&1 || status=$?
    grep -E '^(Done|#[0-9]+[[:space:]]+DONE)' "$log" || true
    if [ "$status" -eq 0 ]; then
        continue
    fi
    crashed+=("$target")
    echo "--- $target failed (exit $status); from $log:"
    # The panic message and stack, else the end of the log.
    if grep -qE 'panicked at|ERROR: libFuzzer' "$log"; then
        awk '/panicked at|ERROR: libFuzzer/ { found = 1 } found && shown++ < 40' "$log"
    else
        tail -n 40 "$log"
    fi
    new=$(LC_ALL=C comm -13 <(echo "$before") <(LC_ALL=C ls -A "$artifacts") || true)
    if [ -z "$new" ]; then
        echo "no new input under $artifacts: see $log"
    fi
    for name in $new; do
        echo "crash input: $artifacts/$name"
        echo "reproduce:   ${fuzz[*]} run ${build_flags[*]} $target $artifacts/$name"
    done
done

echo
if [ "${#crashed[@]}" -gt 0 ]; then
    current_step="fuzzing: ${crashed[*]} crashed (inputs under $fuzz_dir/artifacts/, logs under $logs)"
    exit 1
fi
current_step="summary"
echo "fuzz.sh: OK: ${#targets[@]} targets, ${seconds} s each, no crash ($((SECONDS - started)) s)"
