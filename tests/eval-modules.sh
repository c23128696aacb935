#!/usr/bin/env bash
# Evaluates the NixOS and home-manager modules with lib.evalModules, from a
# nixpkgs.lib checkout (NIXPKGS_LIB) and a home-manager checkout
# (HOME_MANAGER), with minimal stand-ins for the options of NixOS and
# home-manager the modules set (tests/eval/*-stubs.nix). It checks the
# produced nix.settings, units, hook, activation scripts and manifests, that
# every assertion fires on its bad configuration, that the README example
# still produces tests/golden/readme-manifest.toml, and that the VM tests'
# Python scripts compile.
#
#   NIXPKGS_LIB=~/src/nixpkgs.lib HOME_MANAGER=~/src/home-manager bash tests/eval-modules.sh
#   UPDATE_GOLDEN=1 NIXPKGS_LIB=... bash tests/eval-modules.sh   # rewrite the golden file
#
# nixpkgs itself cannot be a dependency of this test (nor committed), so
# without NIXPKGS_LIB it says that it skipped and succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${NIXPKGS_LIB:-}" ]]; then
  echo "module evaluation: skipped (set NIXPKGS_LIB to a nixpkgs.lib checkout, and HOME_MANAGER to a home-manager checkout, to run it)"
  exit 0
fi
NIXPKGS_LIB="$(cd "$NIXPKGS_LIB" && pwd)"
[[ -f "$NIXPKGS_LIB/lib/default.nix" ]] || {
  echo "NIXPKGS_LIB=$NIXPKGS_LIB has no lib/default.nix: give the root of a nixpkgs or nixpkgs.lib checkout" >&2
  exit 2
}

golden=tests/golden/readme-manifest.toml
example=tests/golden/readme-example.nix

eval_json() { # FILE ATTR [--arg NAME VALUE...]
  local file=$1 attr=$2
  shift 2
  nix-instantiate --eval --read-write-mode --strict --json "$file" -A "$attr" \
    --argstr nixpkgsLib "$NIXPKGS_LIB" "$@"
}

report() { # NAME FILE ATTR [ARGS...]: evaluate, print failures and a summary
  local name=$1 out
  shift
  if ! out=$(eval_json "$@"); then
    echo "FAIL $name: the evaluation failed (see above)"
    return 1
  fi
  python3 - "$name" "$out" <<'PY'
import json, sys
name, result = sys.argv[1], json.loads(sys.argv[2])
for f in result["failures"]:
    print(f"FAIL {name}: {f}")
if result["failures"]:
    print(f"{name}: {len(result['failures'])} of {result['checks']} checks failed")
    sys.exit(1)
print(f"{name}: {result['checks']} checks passed")
PY
}

if [[ -n "${UPDATE_GOLDEN:-}" ]]; then
  nix-instantiate --eval --read-write-mode --strict --json --expr '
    { nixpkgsLib }:
    let lib = import "${nixpkgsLib}/lib";
    in import ./tests/eval/toml.nix { inherit lib; }
      "# The manifest the NixOS module writes for tests/golden/readme-example.nix\n# (the README example). Regenerate: UPDATE_GOLDEN=1 bash tests/eval-modules.sh\n"
      (import ./tests/eval/nixos.nix { inherit nixpkgsLib; }).golden
  ' --argstr nixpkgsLib "$NIXPKGS_LIB" | python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin))' >"$golden.tmp"
  mv "$golden.tmp" "$golden"
  echo "wrote $golden"
fi

status=0

# The README shows the example verbatim, so the golden file is what a reader
# who copies it gets.
python3 - "$example" <<'PY' || status=1
import sys
example = open(sys.argv[1]).read()
if example not in open("README.md").read():
    print(f"FAIL readme: README.md does not contain {sys.argv[1]} verbatim")
    sys.exit(1)
print("readme: the example is in README.md")
PY

report "nixos module" tests/eval/nixos.nix result || status=1

# The VM tests need KVM and nixpkgs; here their Python is at least compiled.
if scripts=$(eval_json tests/eval/vm-scripts.nix "" ); then
  python3 -c '
import ast, json, sys
for name, src in json.load(sys.stdin).items():
    ast.parse(src, f"nix/tests/{name}.nix testScript")
    print(f"vm test {name}: the test script compiles")
' <<<"$scripts" || status=1
else
  echo "FAIL vm tests: their scripts do not evaluate (see above)"
  status=1
fi

if [[ -n "${HOME_MANAGER:-}" ]]; then
  HOME_MANAGER="$(cd "$HOME_MANAGER" && pwd)"
  report "home-manager module" tests/eval/home-manager.nix result \
    --argstr homeManager "$HOME_MANAGER" || status=1
else
  echo "home-manager module: skipped (set HOME_MANAGER to a home-manager checkout to run it)"
fi

# The generated activation shell, run against the real helper: the module's
# command lines and the helper's flags must agree, and a second run must
# change nothing.
helper=${NBC_HELPER:-}
if [[ -z "$helper" ]]; then
  cargo build --quiet --bin nix-binary-cache
  helper=$PWD/target/debug/nix-binary-cache
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/prefix/bin"
ln -s "$helper" "$work/prefix/bin/nix-binary-cache"
hm_args=()
[[ -n "${HOME_MANAGER:-}" ]] && hm_args=(--argstr homeManager "$HOME_MANAGER")
if snippets=$(eval_json tests/eval/snippets.nix "" --argstr helperPrefix "$work/prefix" \
  --argstr root "$work/root" "${hm_args[@]}"); then
  python3 - "$work" "$snippets" <<'PY' || status=1
import json, os, stat, subprocess, sys
work, snippets = sys.argv[1], json.loads(sys.argv[2])
root = f"{work}/root"
failures = []

def run(name, script, env=None):
    # home-manager's `run`: print under DRY_RUN, run otherwise.
    prelude = 'run() { if [[ -v DRY_RUN ]]; then echo "$@"; else "$@"; fi; }\n'
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + script],
                       capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        failures.append(f"{name}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p.stdout + p.stderr

def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)

def expect(name, cond):
    if not cond:
        failures.append(name)

key = f"{root}/system/keys/builder-1.sec"
first = run("nixos key activation", snippets["nixosSigningKey"])
expect("nixos: the key is generated 0600 in a 0700 directory",
       os.path.exists(key) and mode(key) == 0o600 and mode(os.path.dirname(key)) == 0o700)
expect("nixos: the public key is printed with what to do",
       "builder-1:" in first and "trust.publicKeys" in first)
expect("nixos: NAME.pub is written", os.path.exists(f"{root}/system/keys/builder-1.pub"))
before = open(key).read()
again = run("nixos key activation (again)", snippets["nixosSigningKey"])
expect(f"nixos: a second activation is silent and keeps the key, got {again!r}",
       again == "" and open(key).read() == before)

# The post-build-hook: queues OUT_PATHS, then runs the user's own hook with
# the same environment, whose exit status is the hook's.
outs = "/nix/store/00000000000000000000000000000000-a /nix/store/11111111111111111111111111111111-b"
with open(f"{root}/extra-hook", "w") as f:
    f.write(f'#!/bin/sh\necho "$OUT_PATHS" > {root}/extra-hook.ran\nexit 3\n')
os.chmod(f"{root}/extra-hook", 0o755)
p = subprocess.run(["bash", "-c", snippets["nixosHook"]], capture_output=True, text=True,
                   env={**os.environ, "OUT_PATHS": outs, "DRV_PATH": "/nix/store/x.drv"})
expect(f"hook: the user's hook runs with OUT_PATHS and decides the exit status, got {p.returncode}",
       p.returncode == 3 and open(f"{root}/extra-hook.ran").read().strip() == outs)
status = subprocess.run([f"{work}/prefix/bin/nix-binary-cache", "queue", "status", "--json",
                         "--spool", f"{root}/spool"], capture_output=True, text=True)
expect(f"hook: the outputs are queued, got {status.stdout}{status.stderr}",
       status.returncode == 0 and "11111111111111111111111111111111-b" in status.stdout)

if "hmSigningKey" in snippets:
    conf = f"{root}/home/.config/nix/nix.conf"
    hkey = f"{root}/home/.local/share/nix-binary-cache/keys/alice-1.sec"
    for name in ("hmSigningKey", "hmConfigure"):
        run(f"{name} --dry-run", snippets[name], {"DRY_RUN": "1"})
    expect("home-manager: --dry-run writes nothing", not os.path.exists(f"{root}/home"))
    out = run("home-manager key activation", snippets["hmSigningKey"])
    expect("home-manager: the key is generated 0600",
           os.path.exists(hkey) and mode(hkey) == 0o600 and "alice-1:" in out)
    run("home-manager configure", snippets["hmConfigure"])
    text = open(conf).read() if os.path.exists(conf) else ""
    expect(f"home-manager: nix.conf has the cache and its key, got {text!r}",
           "https://s3.example.org/nix-cache" in text and "s3.example.org-1:" in text)
    before = (open(hkey).read(), text)
    run("home-manager key activation (again)", snippets["hmSigningKey"])
    out = run("home-manager configure (again)", snippets["hmConfigure"])
    expect(f"home-manager: a second activation changes nothing, got {out!r}",
           (open(hkey).read(), open(conf).read()) == before and "unchanged" in out)

for f in failures:
    print(f"FAIL activation snippets: {f}")
if failures:
    sys.exit(1)
print("activation snippets and hook: run against the helper, idempotent")
PY
else
  echo "FAIL activation snippets: they do not evaluate (see above)"
  status=1
fi

exit $status
