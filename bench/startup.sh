#!/usr/bin/env bash
# Helper start-up plus a no-op apply, as activation runs it: `keys generate`
# on an existing key and `configure` on a nix.conf that already has the
# block (both "unchanged"). Target: at most 20 ms each, so activation stays
# instant. Median of REPS runs, release build, no network.
#
#   bash bench/startup.sh [REPS]
# Writes bench/results/startup.md and bench/results/startup.json.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${1:-51}"
cargo build --release -q
BIN="$PWD/target/release/nix-binary-cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$BIN" keys generate --name bench.example.org-1 --secret-key-file "$work/keys/sk" >/dev/null
PUB="$("$BIN" keys public "$work/keys/sk")"
keys_noop() { "$BIN" keys generate --name bench.example.org-1 --secret-key-file "$work/keys/sk"; }
configure_noop() {
  NIX_CONF_DIR="$work" "$BIN" configure --nix-conf "$work/nix.conf" \
    --substituter http://127.0.0.1:1/nix-cache --trusted-public-key "$PUB"
}
configure_noop >/dev/null
keys_noop | grep unchanged >/dev/null
configure_noop | grep unchanged >/dev/null

median_ms() {
  local times=() t0 t1
  for _ in $(seq 1 "$REPS"); do
    t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
    times+=( $(( (t1 - t0) / 1000 )) )
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}
version_ms="$(median_ms "$BIN" --version)"
keys_ms="$(median_ms keys_noop)"
configure_ms="$(median_ms configure_noop)"

mkdir -p bench/results
cat > bench/results/startup.json <<JSON
{"reps": $REPS, "version_ms": $version_ms, "keys_noop_ms": $keys_ms, "configure_noop_ms": $configure_ms}
JSON
cat > bench/results/startup.md <<MD
# Start-up and no-op apply

\`bash bench/startup.sh $REPS\`, median of $REPS runs each, release build.

| command | median wall time | target |
|---|---:|---:|
| \`nix-binary-cache --version\` (start-up only) | $version_ms ms | |
| \`keys generate\` on an existing key (unchanged) | $keys_ms ms | ≤ 20 ms |
| \`configure --nix-conf\` with the block in place (unchanged) | $configure_ms ms | ≤ 20 ms |
MD
cat bench/results/startup.md
