#!/usr/bin/env bash
# Converged `provision` against a local SeaweedFS, beside a script doing the
# same reads with the aws CLI (the hand recipe's way), in one run.
#
# Measures the median wall time of each (several repetitions), their ratio
# (target: provision at least 20x faster) and the HTTP requests provision
# sends on a converged store (target: at most 12, all reads). Writes
# bench/results/provision.md.
#
#   bash bench/provision.sh [REPS_PROVISION] [REPS_AWS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
REPS_NBC="${1:-21}"
REPS_AWS="${2:-5}"
BUCKET=nix-cache
USER_NAME=nix-cache-writer
DAYS=7

export NBC_VENV="${NBC_VENV:-$(bash scripts/setup.sh)}"
AWS="$NBC_VENV/bin/aws"
cargo build --release -q
BIN="$ROOT/target/release/nix-binary-cache"

work="$(mktemp -d)"
# shellcheck source=../scripts/seaweed.sh
source scripts/seaweed.sh
trap 'stop_seaweed; rm -rf "$work"' EXIT
start_seaweed "$work/sw"
E="$SEAWEED_ENDPOINT"

provision() {
  "$BIN" provision --endpoint "$E" --bucket "$BUCKET" --backend iam \
    --admin-credentials-file "$work/sw/admin.env" --state-dir "$work/state" \
    --abort-incomplete-multipart-days "$DAYS" --wait-timeout 30 "$@"
}

# Converge once; every measured run below finds nothing to do.
provision >&2

# The same reads with the aws CLI: the bucket, nix-cache-info, the bucket
# policy, the lifecycle rule, the writer user, its keys, its attached
# policy, that policy's default version and document, and a signed GET as
# the writer.
aws_reads() {
  (
    set -a; . "$work/sw/admin.env"; set +a
    export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
    a() { "$AWS" --endpoint-url "$E" "$@"; }
    a s3api head-bucket --bucket "$BUCKET" >/dev/null
    a s3api get-object --bucket "$BUCKET" --key nix-cache-info "$work/info" >/dev/null
    a s3api get-bucket-policy --bucket "$BUCKET" >/dev/null
    a s3api get-bucket-lifecycle-configuration --bucket "$BUCKET" >/dev/null
    a iam get-user --user-name "$USER_NAME" >/dev/null
    a iam list-access-keys --user-name "$USER_NAME" >/dev/null
    arn="$(a iam list-attached-user-policies --user-name "$USER_NAME" \
      --query 'AttachedPolicies[0].PolicyArn' --output text)"
    version="$(a iam get-policy --policy-arn "$arn" --query 'Policy.DefaultVersionId' --output text)"
    a iam get-policy-version --policy-arn "$arn" --version-id "$version" >/dev/null
    set -a; . "$work/state/writer.env"; set +a
    a s3api get-bucket-location --bucket "$BUCKET" >/dev/null
  )
}

# Median wall time in milliseconds of REPS runs of a shell function.
median_ms() {
  local reps="$1"; shift
  local times=() t0 t1
  for _ in $(seq 1 "$reps"); do
    t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N)
    times+=( $(( (t1 - t0) / 1000 )) )
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.1f", m/1000}'
}

aws_reads   # warm up the CLI's caches once
nbc_ms="$(median_ms "$REPS_NBC" provision)"
aws_ms="$(median_ms "$REPS_AWS" aws_reads)"

report="$(provision --json)"
read -r reads writes unchanged < <(python3 -c 'import json,sys
r = json.load(sys.stdin)
print(r["requests"]["reads"], r["requests"]["writes"], all(x["status"] == "unchanged" for x in r["resources"]))' <<<"$report")
ratio="$(awk -v a="$aws_ms" -v n="$nbc_ms" 'BEGIN {printf "%.0f", a/n}')"
verdict() { if [[ "$1" == 1 ]]; then echo met; else echo "NOT met"; fi; }
ratio_ok=$(awk -v r="$ratio" 'BEGIN {print (r >= 20) ? 1 : 0}')
req_ok=$(( reads + writes <= 12 && writes == 0 ? 1 : 0 ))

mkdir -p bench/results
cat > bench/results/provision.md <<EOF
# Converged provision vs the same reads with the aws CLI

\`bash bench/provision.sh $REPS_NBC $REPS_AWS\`, one run on $(nproc) cores, SeaweedFS $("$NBC_VENV/bin/weed" version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+ ' | head -1 | tr -d ' ') on loopback,
release build, \`iam\` backend with a lifecycle rule (every resource of a provision run).

| what | runs | median wall time |
|---|---:|---:|
| \`nix-binary-cache provision\` (converged) | $REPS_NBC | $nbc_ms ms |
| aws CLI script, the same 10 reads | $REPS_AWS | $aws_ms ms |

- Ratio: **${ratio}x** (target at least 20x: $(verdict "$ratio_ok")).
- Requests of a converged run: **$((reads + writes))** ($reads reads, $writes writes; target at most 12, all reads: $(verdict "$req_ok")); every resource unchanged: $unchanged.

The aws CLI script sends one request per command but pays a Python start-up
for each; provision sends its reads concurrently over kept-alive connections
from one process. The request count is provision's own (\`--json\`); the
integration tests count the same requests independently through a recording
proxy.
EOF
cat bench/results/provision.md
# The same numbers for bench/run.sh (summary table and chart).
cat > bench/results/provision.json <<EOF
{"reps_provision": $REPS_NBC, "reps_aws": $REPS_AWS, "provision_ms": $nbc_ms, "aws_ms": $aws_ms,
 "ratio": $ratio, "reads": $reads, "writes": $writes}
EOF
