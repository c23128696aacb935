#!/usr/bin/env bash
# Runs the fuzz targets with cargo-fuzz (libFuzzer), one after the other.
#
#   fuzz/run.sh                 every target, FUZZ_SECONDS each (default 300)
#   fuzz/run.sh narinfo env_file  the named targets
#   FUZZ_JOBS=2 fuzz/run.sh     two targets at a time
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1, so no nightly is installed.
# Inputs that crash land in fuzz/artifacts/<target>/; copy each one into
# fuzz/regressions/<target>/ (tests/fuzz_regressions.rs replays them in CI)
# and fix the parser. The corpus grows in fuzz/corpus/<target>/ (not
# committed), starting from the committed seeds in fuzz/seeds/<target>/.
# Runs at the lowest CPU priority: the machine is shared.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
seconds="${FUZZ_SECONDS:-300}"
jobs="${FUZZ_JOBS:-1}"
export RUSTC_BOOTSTRAP=1
export ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

all=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^nix-binary-cache-fuzz$')
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    read -r -a targets <<<"$(echo $all)"
fi

# The helper's own lock file, so the fuzzed code is built with the same
# dependency versions as the helper (cargo adds libfuzzer-sys to it).
cp ../Cargo.lock Cargo.lock

# One build for all targets (debug assertions on: overflow checks count);
# the runs below start the built binaries, so editing the sources while
# they run does not trigger rebuilds.
nice -n 19 cargo fuzz build --debug-assertions
bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"

mkdir -p logs
run_one() {
    local t="$1"
    mkdir -p "corpus/$t" "artifacts/$t"
    local dirs=("corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    [ -d "regressions/$t" ] && dirs+=("regressions/$t")
    echo "fuzzing $t for ${seconds}s (log: fuzz/logs/$t.log)"
    local start=$SECONDS rc=0
    nice -n 19 "$bin_dir/$t" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
        "${dirs[@]}" >"logs/$t.log" 2>&1 || rc=$?
    local execs
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
    echo "$t: exit $rc after $((SECONDS - start))s, ${execs:-?} runs, corpus $(ls "corpus/$t" | wc -l)"
    return 0
}

running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
ls artifacts/*/ 2>/dev/null | grep -E 'crash|leak|timeout|oom' && echo "findings above: see fuzz/artifacts" || echo "no findings"
