#!/usr/bin/env bash
# Sourced by the demo and the push benchmark: `private_nix DIR` gives this
# shell a Nix of its own. DIR/nix.conf names no substituter (nothing but
# loopback is contacted) and keeps no negative narinfo cache (a path pushed a
# moment ago is found), builds without sandbox or build users (single-user
# Nix run as root), and Nix's caches go to DIR/cache. Exports NIX_CONF_DIR,
# XDG_CACHE_HOME and an empty NIX_PATH.
private_nix() {
  mkdir -p "$1"
  cat > "$1/nix.conf" <<'CONF'
experimental-features = nix-command
substituters =
narinfo-cache-negative-ttl = 0
sandbox = false
build-users-group =
CONF
  export NIX_CONF_DIR="$1" XDG_CACHE_HOME="$1/cache" NIX_PATH=
}
