#!/usr/bin/env bash
# Push benchmark, all in one run against one local SeaweedFS:
#
#   1. raw `nix-store --dump | zstd -T0 -3` over the closure: the
#      compression limit on this machine (nothing stored, nothing sent);
#   2. our `push` (release build) of a synthetic closure, with peak RSS,
#      and the CPU the S3 server spent meanwhile (it shares the cores);
#      2b. the same push at zstd level 1, for the trade-off;
#   3. the two-step baseline: `nix copy --to file://DIR?compression=zstd`
#      then `aws s3 sync DIR s3://bucket`;
#   4. a no-op push of 1000 paths the cache already has.
#
# Writes bench/results/push.md, and push.json for bench/run.sh's summary.
# BENCH_SIZE_MIB (default 1024) sets the
# closure size, e.g. BENCH_SIZE_MIB=128 for a quick run; BENCH_NOOP_PATHS
# (default 1000) the number of paths of the no-op push; BENCH_ROUNDS
# (default 3) the number of rounds of steps 1 to 3, reported as medians.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SIZE_MIB="${BENCH_SIZE_MIB:-1024}"
NOOP_PATHS="${BENCH_NOOP_PATHS:-1000}"
ROUNDS="${BENCH_ROUNDS:-3}"
LEVEL=3
WORK="$ROOT/bench/work/push"
RESULTS="$ROOT/bench/results/push.md"

export NBC_VENV="${NBC_VENV:-$(bash scripts/setup.sh)}"
AWS="$NBC_VENV/bin/aws"
echo "== building (release)" >&2
cargo build --release --quiet
BIN="$ROOT/target/release/nix-binary-cache"

rm -rf "$WORK"
mkdir -p "$WORK"
# shellcheck source=../scripts/seaweed.sh
source scripts/seaweed.sh
start_seaweed "$WORK/seaweed"
trap 'stop_seaweed' EXIT
E="$SEAWEED_ENDPOINT"
ADMIN_ENV="$WORK/seaweed/admin.env"

# shellcheck source=../scripts/private-nix.sh
source scripts/private-nix.sh
private_nix "$WORK/nix"

now() { date +%s.%N; }
aws_admin() { (set -a; . "$ADMIN_ENV"; set +a; AWS_DEFAULT_REGION=us-east-1 "$AWS" --endpoint-url "$E" "$@"); }
make_bucket() {
  aws_admin s3api create-bucket --bucket "$1" >/dev/null
  aws_admin s3api put-bucket-policy --bucket "$1" --policy \
    "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":[\"s3:GetObject\"],\"Resource\":[\"arn:aws:s3:::$1/*\"]}]}"
  printf 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n' > "$WORK/nix-cache-info"
  aws_admin s3 cp --only-show-errors "$WORK/nix-cache-info" "s3://$1/nix-cache-info"
}
bucket_bytes() { aws_admin s3 ls --recursive --summarize "s3://$1/$2" | awk '/Total Size/ {print $3}'; }
# A derivation whose output references every given store path: a closure.
closure_of() {
  local name="$1"; shift
  local list=""
  for p in "$@"; do list+="\"$p\" "; done
  cat > "$WORK/$name.nix" <<EOF
derivation {
  name = "$name";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo \$refs > \$out" ];
  refs = map builtins.storePath [ $list];
}
EOF
  nix-build --no-out-link "$WORK/$name.nix" 2>/dev/null
}

echo "== generating a ${SIZE_MIB} MiB closure" >&2
python3 bench/gen_closure.py "$WORK/data" "$SIZE_MIB"
mapfile -t PATHS < <(nix-store --add "$WORK"/data/*)
TOP="$(closure_of bench-closure "${PATHS[@]}")"
mapfile -t CLOSURE < <(nix-store --query --requisites "$TOP")
NAR_BYTES="$(nix path-info --json --recursive "$TOP" | python3 -c 'import json,sys; print(sum(p["narSize"] for p in json.load(sys.stdin)))')"
FILES="$(find "$WORK/data" -type f | wc -l)"
echo "closure: ${#CLOSURE[@]} paths, $FILES files, $NAR_BYTES NAR bytes" >&2

nix key generate-secret --key-name bench-1 > "$WORK/key.sk"
chmod 600 "$WORK/key.sk"
# Our push, as an argument list (GNU time runs it, so not a function); the
# bucket and the compression level follow.
PUSH=("$BIN" push --endpoint "$E" --writer-credentials-file "$ADMIN_ENV"
  --signing-key-file "$WORK/key.sk" --quiet)

# `timed NAME CMD...`: runs CMD under GNU time; NAME.time holds wall
# seconds, user+system CPU seconds (the command and its children) and
# peak RSS in KiB.
timed() {
  local name="$1"; shift
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/$name.time" "$@"
}
wall() { awk '{print $1}' "$WORK/$1.time"; }
cpu() { awk '{print $2 + $3}' "$WORK/$1.time"; }
# CPU seconds (user + system) the S3 server has used so far: the share of
# the cores a method costs the server, which runs on the same machine.
TICKS="$(getconf CLK_TCK)"
server_cpu() { awk -v t="$TICKS" '{printf "%.2f\n", ($14 + $15) / t}' "/proc/$SEAWEED_PID/stat"; }

# The three methods run in rounds, one after the other in each round, so a
# change in the machine's speed (other work on shared cores) hits them alike;
# the report takes medians over the rounds.
printf '%s\n' "${CLOSURE[@]}" > "$WORK/closure.txt"
: > "$WORK/rounds.jsonl"
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r of $ROUNDS: 1. raw nix-store --dump | zstd -T0 -$LEVEL" >&2
  timed "raw-$r" bash -c 'while read -r p; do nix-store --dump "$p"; done < "$1" | zstd -q -T0 "-$2" -c | wc -c > "$3"' \
    _ "$WORK/closure.txt" "$LEVEL" "$WORK/raw.bytes"

  echo "== round $r of $ROUNDS: 2. nix-binary-cache push" >&2
  make_bucket "bench-push-$r"
  S0="$(server_cpu)"
  timed "ours-$r" "${PUSH[@]}" --bucket "bench-push-$r" --compression-level "$LEVEL" "$TOP" >&2
  S1="$(server_cpu)"

  echo "== round $r of $ROUNDS: 3. nix copy --to file:// + aws s3 sync" >&2
  make_bucket "bench-sync-$r"
  rm -rf "$WORK/filecache"
  timed "copy-$r" nix copy --to "file://$WORK/filecache?compression=zstd" "$TOP" 2>/dev/null
  S2="$(server_cpu)"
  (set -a; . "$ADMIN_ENV"; set +a; export AWS_DEFAULT_REGION=us-east-1
   timed "sync-$r" "$AWS" --endpoint-url "$E" s3 sync --only-show-errors "$WORK/filecache" "s3://bench-sync-$r")
  S3="$(server_cpu)"

  printf '{"raw_s": %s, "raw_cpu": %s, "ours_s": %s, "ours_cpu": %s, "ours_rss_kb": %s, "server_ours": %s, "copy_s": %s, "copy_cpu": %s, "sync_s": %s, "sync_cpu": %s, "server_sync": %s}\n' \
    "$(wall "raw-$r")" "$(cpu "raw-$r")" "$(wall "ours-$r")" "$(cpu "ours-$r")" \
    "$(awk '{print $4}' "$WORK/ours-$r.time")" "$(awk "BEGIN {print $S1 - $S0}")" \
    "$(wall "copy-$r")" "$(cpu "copy-$r")" "$(wall "sync-$r")" "$(cpu "sync-$r")" \
    "$(awk "BEGIN {print $S3 - $S2}")" >> "$WORK/rounds.jsonl"
done
RAW_BYTES="$(cat "$WORK/raw.bytes")"
OURS_BYTES="$(bucket_bytes bench-push-1 nar/)"
TWO_BYTES="$(bucket_bytes bench-sync-1 nar/)"

echo "== 2b. nix-binary-cache push at zstd level 1 (reported: the cheapest level)" >&2
make_bucket bench-fast
S4="$(server_cpu)"
timed fast "${PUSH[@]}" --bucket bench-fast --compression-level 1 "$TOP" > /dev/null
S5="$(server_cpu)"
FAST_BYTES="$(bucket_bytes bench-fast nar/)"
SERVER_FAST_CPU="$(awk "BEGIN {print $S5 - $S4}")"

echo "== 4. no-op push of $NOOP_PATHS cached paths" >&2
mkdir -p "$WORK/small"
for i in $(seq -w 1 "$NOOP_PATHS"); do echo "small path $i" > "$WORK/small/s-$i"; done
mapfile -t SMALL < <(nix-store --add "$WORK"/small/*)
SMALL_TOP="$(closure_of bench-small "${SMALL[@]}")"
make_bucket bench-noop
noop_push() { "${PUSH[@]}" --bucket bench-noop --compression-level "$LEVEL" "$SMALL_TOP"; }
noop_push > /dev/null
NOOP_RUNS=()
for _ in 1 2 3 4 5; do
  t0="$(now)"
  noop_push > "$WORK/noop.out"
  t1="$(now)"
  NOOP_RUNS+=("$(awk "BEGIN {print $t1 - $t0}")")
done
grep -q "nothing uploaded" "$WORK/noop.out"
NOOP_COUNT="$(nix-store --query --requisites "$SMALL_TOP" | wc -l)"

FAST_S="$(wall fast)" FAST_CPU="$(cpu fast)" ROUNDS_FILE="$WORK/rounds.jsonl"
export FAST_S FAST_CPU SIZE_MIB NAR_BYTES FILES LEVEL RAW_BYTES OURS_BYTES TWO_BYTES NOOP_COUNT \
  RESULTS SERVER_FAST_CPU FAST_BYTES ROUNDS_FILE
export NOOP_TIMES="${NOOP_RUNS[*]}" CLOSURE_LEN="${#CLOSURE[@]}"
export CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" CORES="$(nproc)"
export LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
export NIXV="$(nix --version)" WEEDV="$("$NBC_VENV/bin/weed" version 2>/dev/null | head -1)"
export ZSTDV="$(zstd --version)" AWSV="$("$AWS" --version 2>&1)"
mkdir -p "$(dirname "$RESULTS")"
python3 - <<'EOF'
import json, os, statistics
e = os.environ
mib = 1024 * 1024
nar = int(e["NAR_BYTES"])
med = statistics.median
cores = int(e["CORES"])
def tp(seconds): return nar / mib / float(seconds)
rounds = [json.loads(line) for line in open(e["ROUNDS_FILE"])]
for r in rounds:
    r["two_s"] = r["copy_s"] + r["sync_s"]
    r["two_cpu"] = r["copy_cpu"] + r["sync_cpu"]
    r["ratio"] = r["two_s"] / r["ours_s"]
    r["busy"] = (r["ours_cpu"] + r["server_ours"]) / r["ours_s"] / cores
def m(key): return med(r[key] for r in rounds)
raw_s, ours_s, two_s = m("raw_s"), m("ours_s"), m("two_s")
raw_cpu, ours_cpu, two_cpu = m("raw_cpu"), m("ours_cpu"), m("two_cpu")
ratio = m("ratio")
noop = sorted(float(x) for x in e["NOOP_TIMES"].split())
rss = max(r["ours_rss_kb"] for r in rounds) / 1024
rows = [
    ("raw `nix-store --dump \\| zstd -T0 -%s` (no upload)" % e["LEVEL"], raw_s, raw_cpu, int(e["RAW_BYTES"])),
    ("**nix-binary-cache push**", ours_s, ours_cpu, int(e["OURS_BYTES"])),
    ("`nix copy --to file://…?compression=zstd` + `aws s3 sync`", two_s, two_cpu, int(e["TWO_BYTES"])),
    ("nix-binary-cache push at `--compression-level 1` (reported, one run)", float(e["FAST_S"]), float(e["FAST_CPU"]), int(e["FAST_BYTES"])),
]
out = []
out.append("# Push benchmark\n")
out.append(f"Produced by `bench/push.sh`: one run of {len(rounds)} rounds; in each round the raw "
           "compression, our push and the two-step baseline run one after the other, and the "
           "numbers below are medians over the rounds, so ratios compare like with like. Everything "
           "runs on one machine against a local SeaweedFS: the store, the compressor and the S3 "
           "server share the same cores.\n")
out.append(f"- Machine: {e['CPU']}, {e['CORES']} cores, load average {e['LOAD']} at the end "
           "(other work shared the machine); " + f"{e['NIXV']}; SeaweedFS {e['WEEDV']}; {e['ZSTDV']}; {e['AWSV']}")
out.append(f"- Closure: {e['CLOSURE_LEN']} store paths, {e['FILES']} files, {nar / mib:.0f} MiB of NAR "
           f"(BENCH_SIZE_MIB={e['SIZE_MIB']}): many small files in package trees (text, code-like "
           "binaries, some incompressible data) and five large files; zstd level " + e["LEVEL"] + " everywhere.\n")
out.append("| method | wall time | NAR throughput | CPU time (client side) | stored bytes | ratio NAR/stored |")
out.append("|---|---:|---:|---:|---:|---:|")
for name, s, c, b in rows:
    out.append(f"| {name} | {s:.2f} s | {tp(s):.0f} MiB/s | {c:.1f} s | {b / mib:.0f} MiB | {nar / b:.2f} |")
out.append("")
out.append("| round | raw | push | `nix copy` + `aws s3 sync` | push vs two-step | S3 server CPU during the push | cores busy during the push |")
out.append("|---:|---:|---:|---:|---:|---:|---:|")
for i, r in enumerate(rounds, 1):
    out.append(f"| {i} | {r['raw_s']:.2f} s | {r['ours_s']:.2f} s | {r['copy_s']:.2f} + {r['sync_s']:.2f} s | "
               f"{r['ratio']:.2f}× | {r['server_ours']:.1f} s | {r['busy'] * 100:.0f} % |")
out.append("")
out.append(f"- Two-step baseline split (medians): `nix copy` {m('copy_s'):.2f} s ({m('copy_cpu'):.1f} s CPU), "
           f"`aws s3 sync` {m('sync_s'):.2f} s ({m('sync_cpu'):.1f} s CPU).")
out.append(f"- **Push throughput vs the two-step baseline: {ratio:.2f}×** (the median of the rounds' ratios; "
           f"target ≥ 2×); CPU time per byte: the baseline spends {two_cpu / ours_cpu:.2f}× ours.")
out.append(f"- Push throughput as a share of raw dump|zstd (the compression limit): {raw_s / ours_s * 100:.0f} %.")
# Where the cores went: the S3 server shares them, so a method's wall time
# is bounded below by (client CPU + server CPU) / cores.
srv_ours, srv_sync = m("server_ours"), m("server_sync")
stored = int(e["OURS_BYTES"]) / mib
out.append(f"- **Where the cores went** (medians). During the push the S3 server used {srv_ours:.1f} s of CPU "
           f"({srv_ours / stored * 1000:.1f} ms per stored MiB; {srv_sync:.1f} s during `aws s3 sync` of the same "
           f"bytes), and the push {ours_cpu:.1f} s: {ours_cpu + srv_ours:.1f} core-seconds in {ours_s:.2f} s on "
           f"{cores} cores, {m('busy') * 100:.0f} % of them busy. 2× the baseline means finishing in {two_s / 2:.2f} s, "
           f"which leaves {two_s / 2 * cores:.1f} core-seconds for the push and the server together; the server's "
           f"share alone is {srv_ours:.1f}. At zstd level 1 the push stored {int(e['FAST_BYTES']) / mib:.0f} MiB "
           f"instead of {stored:.0f}, the server spent {float(e['SERVER_FAST_CPU']):.1f} s, and the push ran at "
           f"{two_s / float(e['FAST_S']):.2f}× the baseline.")
out.append(f"- **Peak RSS of the push: {rss:.1f} MiB** (the largest of the rounds; target ≤ 64 MiB): GNU time's maximum resident set size, the largest process of the push (ours, or the `nix path-info` it runs).")
out.append(f"- **No-op push of {e['NOOP_COUNT']} paths already in the cache: median {med(noop):.3f} s** "
           f"(runs: {', '.join(f'{x:.3f}' for x in noop)} s; target < 1 s). It runs `nix path-info --recursive` "
           "and one HEAD per path (64 concurrent, kept-alive connections) and writes one `roots/` record.")
out.append("")
out.append("Notes: the store contents are in the page cache for every method (they were just "
           "generated). The raw line uploads nothing. CPU time is the client side's (user + "
           "system of the command and its children); the S3 server's is measured apart, from "
           "its process's counters. Our push streams each NAR once (serialise, hash, compress, "
           "hash, upload), four NARs at a time, each on one thread; `nix copy` compresses on one "
           "thread and writes files that `aws s3 sync` then reads, hashes and uploads again. On "
           "a machine shared with other work, wall times move with the load (compare the rounds); "
           "CPU times move less. With two cores shared by the S3 server and other work, "
           "(client CPU + server CPU) / cores bounds every method.")
open(e["RESULTS"], "w").write("\n".join(out) + "\n")
print("\n".join(out))
# What bench/report.py puts into the summary table and the chart.
json.dump({
    "nar_mib": nar / mib, "level": int(e["LEVEL"]), "rounds": len(rounds),
    "raw_mib_s": tp(raw_s), "push_mib_s": tp(ours_s), "two_step_mib_s": tp(two_s), "two_step_ratio": ratio,
    "push_rss_mib": rss, "noop_paths": int(e["NOOP_COUNT"]), "noop_median_s": med(noop),
    "push_cpu_s": ours_cpu, "two_step_cpu_s": two_cpu, "load": e["LOAD"], "cores_busy": m("busy"),
}, open(os.path.splitext(e["RESULTS"])[0] + ".json", "w"), indent=1)
EOF
