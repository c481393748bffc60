# shellcheck shell=bash disable=SC2154
# Shared by the scripts of scripts/, which source it: messages, usage (the
# sourcing script's header comment, down to its `set -euo` line) and
# argument checks. The sourcing script sets `name`, its name in messages.

die() { echo "$name: $*" >&2; exit 1; }
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[-1]}" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}
bad_usage() { echo "$name: $*" >&2; usage 2 >&2; }
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || bad_usage "$1 must be a positive integer, not '$2'"; }
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
