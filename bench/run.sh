#!/usr/bin/env bash
# Runs every benchmark in one go and summarises them:
#
#   bench/provision.sh  converged provision vs the same reads with the aws CLI
#   bench/push.sh       push vs nix copy + aws s3 sync vs raw dump|zstd
#   bench/startup.sh    start-up plus a no-op key/config apply
#
# then writes bench/results/README.md (one table, the machine it ran on)
# and bench/results/chart.png. Each script also keeps its own detailed
# bench/results/<name>.md. Everything talks to 127.0.0.1 only.
#
#   bash bench/run.sh                      the full run (1 GiB push closure)
#   BENCH_SIZE_MIB=128 bash bench/run.sh   a quicker one
set -euo pipefail
cd "$(dirname "$0")/.."
export NBC_VENV="${NBC_VENV:-$(bash scripts/setup.sh)}"
export BENCH_SIZE_MIB="${BENCH_SIZE_MIB:-1024}"

echo "== provision" >&2
bash bench/provision.sh
echo "== push (${BENCH_SIZE_MIB} MiB closure)" >&2
bash bench/push.sh
echo "== start-up" >&2
bash bench/startup.sh
echo "== summary" >&2
"$NBC_VENV/bin/python" bench/report.py bench/results
