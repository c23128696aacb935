#!/usr/bin/env python3
"""Writes a synthetic, realistically compressible set of package trees for
the push benchmark: many small files (text and code-like binaries) spread
over package directories, plus a few large files (a log-like text, a
code-like binary, already-compressed data, a mix). Deterministic for a seed.

usage: gen_closure.py OUTDIR SIZE_MIB [SEED]
"""
import itertools
import os
import random
import sys

out, size_mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 42)
total = size_mib * 1024 * 1024

# Text: words from a made-up vocabulary, with the skewed frequencies of
# real text, in lines of varying length.
syllables = ["ka", "lo", "mi", "ne", "ra", "so", "ti", "vu", "ex", "in", "at", "or", "ul",
             "pre", "con", "str", "ing", "ment", "_", "(", ")", "{", "}", ";", "=", "0x"]
words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(8000)]
cum_weights = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(words))))
def text_block(n):
    stream = rng.choices(words, cum_weights=cum_weights, k=n // 4)
    parts, i = [], 0
    while i < len(stream):
        k = rng.randint(3, 14)
        parts.append(" " * (4 * rng.randint(0, 3)) + " ".join(stream[i:i + k]) + "\n")
        i += k
    return "".join(parts).encode()[:n]
TEXT = text_block(6 * 1024 * 1024)

# Code-like binary: "instructions" drawn from a table, so it compresses
# like machine code (about 2:1), not like noise.
table = [rng.randbytes(rng.choice([2, 3, 4, 5, 6, 8])) for _ in range(1500)]
table_weights = list(itertools.accumulate(1.0 / (i + 1) ** 0.8 for i in range(len(table))))
CODE = b"".join(rng.choices(table, cum_weights=table_weights, k=1_500_000))

def slice_of(pool, n):
    if n >= len(pool):
        return (pool * (n // len(pool) + 1))[:n]
    i = rng.randrange(0, len(pool) - n)
    return pool[i:i + n]

def content(kind, n):
    if kind == "text":
        return slice_of(TEXT, n)
    if kind == "code":
        return slice_of(CODE, n)
    if kind == "random":
        return rng.randbytes(n)
    # mixed: stretches of each
    parts, size = [], 0
    while size < n:
        k = rng.choice(["text", "code", "code", "random"])
        m = min(n - size, rng.randint(16 * 1024, 1024 * 1024))
        parts.append(content(k, m))
        size += m
    return b"".join(parts)

os.makedirs(out, exist_ok=True)
large_share = 0.4
large_kinds = ["text", "code", "mixed", "random", "code"]
for i, kind in enumerate(large_kinds):
    n = int(total * large_share / len(large_kinds))
    with open(os.path.join(out, f"large-{i}-{kind}.bin"), "wb") as f:
        done = 0
        while done < n:
            m = min(n - done, 8 * 1024 * 1024)
            f.write(content(kind, m))
            done += m

small_total = total - int(total * large_share)
packages = max(8, size_mib // 8)
per_package = small_total // packages
for p in range(packages):
    root = os.path.join(out, f"pkg-{p:04d}")
    written = 0
    n_file = 0
    while written < per_package:
        sub = rng.choice(["bin", "lib", "share/doc", "share/locale", "include", "lib/python"])
        d = os.path.join(root, sub)
        os.makedirs(d, exist_ok=True)
        n = min(per_package - written, int(2 ** rng.uniform(8, 17.5)))
        kind = "code" if sub in ("bin", "lib") else rng.choice(["text"] * 5 + ["code"] * 2 + ["random"])
        path = os.path.join(d, f"f{n_file:05d}")
        with open(path, "wb") as f:
            f.write(content(kind, n))
        if sub == "bin":
            os.chmod(path, 0o755)
        written += n
        n_file += 1
    os.makedirs(os.path.join(root, "share/empty"), exist_ok=True)
    # A small package may have drawn no bin/ file; the link needs the dir.
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    os.symlink("../lib", os.path.join(root, "bin/lib-link"))
