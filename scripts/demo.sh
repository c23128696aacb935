#!/usr/bin/env bash
# The main job on the local embedded default: a SeaweedFS on loopback,
# provisioned as a binary cache, a store path pushed, signed, and a real Nix
# substituting it into a fresh store root with signature checks on.
# Everything it makes lives in ./demo (removed and made anew on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
export NBC_VENV="$(bash scripts/setup.sh)"
cargo build --quiet
BIN="$PWD/target/debug/nix-binary-cache"
DEMO="$PWD/demo"
rm -rf "$DEMO"; mkdir -p "$DEMO"
. scripts/seaweed.sh
trap stop_seaweed EXIT

say() { printf '\n== %s\n' "$*"; }

say "starting SeaweedFS on loopback"
start_seaweed "$DEMO/seaweed"
echo "S3 endpoint: $SEAWEED_ENDPOINT (admin credentials in $DEMO/seaweed/admin.env, mode 0600)"

say "done"
