#!/usr/bin/env bash
# The main job on the local embedded default: a SeaweedFS on loopback,
# provisioned as a binary cache (twice: the second run only reads), a signing
# key generated, a store path built and pushed, signed, and a real Nix
# substituting it into a fresh store root with signature checks on.
# Everything it makes lives in ./demo (made anew on each run); nothing but
# 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
export NBC_VENV="$(bash scripts/setup.sh)"
cargo build --quiet
BIN="$PWD/target/debug/nix-binary-cache"
DEMO="$PWD/demo"
rm -rf "$DEMO"; mkdir -p "$DEMO"
. scripts/seaweed.sh
. scripts/private-nix.sh
trap stop_seaweed EXIT

say() { printf '\n== %s\n' "$*"; }

private_nix "$DEMO/builder-nix"

say "starting SeaweedFS on loopback"
start_seaweed "$DEMO/seaweed"
ENDPOINT="$SEAWEED_ENDPOINT"
BUCKET=nix-cache
CACHE_URL="$ENDPOINT/$BUCKET"
echo "S3 endpoint: $ENDPOINT (admin credentials in demo/seaweed/admin.env, mode 0600)"

say "generating the signing key (created once, never overwritten)"
"$BIN" keys generate --name demo-cache-1 --secret-key-file "$DEMO/keys/demo-cache-1.sec"
PUBLIC_KEY="$("$BIN" keys public "$DEMO/keys/demo-cache-1.sec" | tail -n1)"

say "provisioning the store (bucket, nix-cache-info, policies, writer identity)"
provision() {
  "$BIN" provision --endpoint "$ENDPOINT" --bucket "$BUCKET" --backend iam \
    --admin-credentials-file "$DEMO/seaweed/admin.env" \
    --state-dir "$DEMO/state" --wait-timeout 30 "$@"
}
provision
say "provisioning again: converged, reads only"
provision

say "building a store path"
cat > "$DEMO/hello-builder.sh" <<'SH'
/bin/mkdir -p "$out/bin"
echo '#!/bin/sh' > "$out/bin/hello"
echo 'echo "hello from the demo cache"' >> "$out/bin/hello"
/bin/chmod +x "$out/bin/hello"
SH
cat > "$DEMO/hello.nix" <<'NIX'
derivation {
  name = "demo-hello";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ ./hello-builder.sh ];
}
NIX
OUT="$(nix-build --no-out-link "$DEMO/hello.nix")"
echo "$OUT"

say "pushing it, signed (writer credentials from provision)"
"$BIN" push --endpoint "$ENDPOINT" --bucket "$BUCKET" \
  --writer-credentials-file "$DEMO/state/writer.env" \
  --signing-key-file "$DEMO/keys/demo-cache-1.sec" "$OUT"
say "pushing again: nothing to upload"
"$BIN" push --endpoint "$ENDPOINT" --bucket "$BUCKET" \
  --writer-credentials-file "$DEMO/state/writer.env" \
  --signing-key-file "$DEMO/keys/demo-cache-1.sec" "$OUT"

say "configuring a client (managed block in its nix.conf)"
CLIENT_CONF="$DEMO/client-nix"
mkdir -p "$CLIENT_CONF"
cp "$NIX_CONF_DIR/nix.conf" "$CLIENT_CONF/nix.conf"
"$BIN" configure --nix-conf "$CLIENT_CONF/nix.conf" \
  --substituter "$CACHE_URL" --trusted-public-key "$PUBLIC_KEY"
cat "$CLIENT_CONF/nix.conf"

say "substituting on the client (a fresh store root, signatures required)"
CLIENT_STORE="$DEMO/client-store"
NIX_CONF_DIR="$CLIENT_CONF" nix-store --store "$CLIENT_STORE" --realise "$OUT"
"$CLIENT_STORE$OUT/bin/hello"

say "a client trusting another key refuses it"
mkdir -p "$DEMO/untrusting-nix"
cp "$NIX_CONF_DIR/nix.conf" "$DEMO/untrusting-nix/nix.conf"
"$BIN" keys generate --name other-cache-1 --secret-key-file "$DEMO/keys/other-cache-1.sec" >/dev/null
"$BIN" configure --nix-conf "$DEMO/untrusting-nix/nix.conf" --substituter "$CACHE_URL" \
  --trusted-public-key "$("$BIN" keys public "$DEMO/keys/other-cache-1.sec" | tail -n1)" >/dev/null
if NIX_CONF_DIR="$DEMO/untrusting-nix" nix-store --store "$DEMO/untrusting-store" --realise "$OUT" >"$DEMO/untrusting.log" 2>&1; then
  echo "ERROR: a client with a foreign key accepted the path" >&2; exit 1
fi
grep -m1 "not signed by any of the keys" "$DEMO/untrusting.log"

say "done: the cache at $CACHE_URL is provisioned, filled and trusted"
