#!/usr/bin/env bash
# Starts a SeaweedFS (`weed mini`) on loopback for the demo and benchmarks.
# Sourced: defines start_seaweed DIR (sets SEAWEED_ENDPOINT, SEAWEED_PID,
# and writes DIR/admin.env, mode 0600) and stop_seaweed.
# Ports are chosen below 55535 with port + 10000 free too (gRPC).

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_seaweed() {
  local dir="$1" venv="${NBC_VENV:?run scripts/setup.sh first}" base p ok
  mkdir -p "$dir/data"
  for _ in $(seq 1 100); do
    base=$((20000 + RANDOM % 25000)); ok=1
    for p in $base $((base+1)) $((base+2)) $((base+3)) $((base+4)); do
      port_free "$p" && port_free $((p + 10000)) || { ok=0; break; }
    done
    [[ $ok == 1 ]] && break
  done
  [[ $ok == 1 ]] || { echo "no free loopback ports" >&2; return 1; }
  local key secret
  key="ADMIN$(head -c 64 /dev/urandom | tr -dc 'A-Z0-9' | head -c 15)"
  secret="$(head -c 256 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 40)"
  (umask 077; printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$key" "$secret" > "$dir/admin.env")
  # The admin pair reaches weed through its environment, never its argv.
  (set -a; . "$dir/admin.env"; set +a
   exec "$venv/bin/weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
     -s3.iam.readOnly=false -master.telemetry=false -admin.ui=false -webdav=false \
     -s3.port.iceberg=0 -s3.port.lance=0 \
     -s3.port=$base -filer.port=$((base+1)) -master.port=$((base+2)) \
     -volume.port=$((base+3)) -admin.port=$((base+4))) >"$dir/weed.log" 2>&1 &
  SEAWEED_PID=$!
  SEAWEED_ENDPOINT="http://127.0.0.1:$base"
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$base") 2>/dev/null &&
       curl -s -o /dev/null "http://127.0.0.1:$base/" 2>/dev/null; then
      if (set -a; . "$dir/admin.env"; python3 "$(dirname "${BASH_SOURCE[0]}")/s3_ready.py" "$SEAWEED_ENDPOINT"); then
        return 0
      fi
    fi
    kill -0 "$SEAWEED_PID" 2>/dev/null || { cat "$dir/weed.log" >&2; return 1; }
    sleep 0.1
  done
  echo "SeaweedFS did not become ready; log: $dir/weed.log" >&2
  return 1
}

stop_seaweed() {
  if [[ -n "${SEAWEED_PID:-}" ]]; then
    kill "$SEAWEED_PID" 2>/dev/null || true
    wait "$SEAWEED_PID" 2>/dev/null || true
    SEAWEED_PID=
  fi
}
