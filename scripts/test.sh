#!/usr/bin/env bash
# Runs every test on this machine: installs what is missing (scripts/setup.sh),
# checks formatting and lints, builds, runs the Rust suite (unit tests,
# integration tests against a real SeaweedFS and a real Nix, the MinIO SDK
# oracle), parses every .nix file and evaluates the modules when a
# nixpkgs.lib checkout is given in NIXPKGS_LIB.
set -euo pipefail
cd "$(dirname "$0")/.."

export NBC_VENV="$(bash scripts/setup.sh)"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --all-targets --quiet -- -D warnings

echo "== nix files parse"
find . -name '*.nix' -not -path './target/*' -not -path './fuzz/target/*' -print0 |
  while IFS= read -r -d '' f; do
    nix-instantiate --parse "$f" >/dev/null || { echo "parse error: $f"; exit 1; }
  done

if [[ -x tests/eval-modules.sh ]]; then
  echo "== module evaluation"
  bash tests/eval-modules.sh
fi

echo "== cargo nextest"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast --test-threads "${NBC_TEST_THREADS:-4}" "$@"
else
  cargo test --no-fail-fast "$@"
fi
