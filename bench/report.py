#!/usr/bin/env python3
"""Summarises the benchmark results of one bench/run.sh run: reads
provision.json, push.json and startup.json from RESULTS_DIR and writes
RESULTS_DIR/README.md (one table, the machine it ran on) and
RESULTS_DIR/chart.png (push throughput against its baselines, converged
provision time against the aws CLI script).

usage: report.py RESULTS_DIR
"""
import datetime
import json
import os
import platform
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = sys.argv[1]


def load(name):
    with open(os.path.join(out, name + ".json")) as f:
        return json.load(f)


prov, push, start = load("provision"), load("push"), load("startup")


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def memory_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


machine = {
    "cpu": cpu_model(),
    "cores": os.cpu_count(),
    "memory": f"{memory_gib():.0f} GiB",
    "kernel": platform.release(),
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
}


def verdict(ok):
    return "met" if ok else "**not met**"


two_step_ratio = push["two_step_ratio"]
share_of_raw = push["push_mib_s"] / push["raw_mib_s"]
requests = prov["reads"] + prov["writes"]
rows = [
    (
        "converged `provision` vs the same reads by an `aws` CLI script",
        f"{prov['provision_ms']:.1f} ms",
        f"{prov['aws_ms']:.0f} ms",
        f"{prov['ratio']:.0f}× faster",
        "≥ 20×",
        verdict(prov["ratio"] >= 20),
    ),
    (
        "requests of a converged `provision`",
        f"{requests} ({prov['writes']} writes)",
        "",
        "",
        "≤ 12, reads only",
        verdict(requests <= 12 and prov["writes"] == 0),
    ),
    (
        f"`push` of a {push['nar_mib']:.0f} MiB closure vs `nix copy` + `aws s3 sync` "
        f"(median of {push['rounds']} rounds)",
        f"{push['push_mib_s']:.0f} MiB/s",
        f"{push['two_step_mib_s']:.0f} MiB/s",
        f"{two_step_ratio:.2f}×",
        "≥ 2×",
        verdict(two_step_ratio >= 2),
    ),
    (
        "client CPU time of that `push` vs the two-step baseline",
        f"{push['push_cpu_s']:.1f} s",
        f"{push['two_step_cpu_s']:.1f} s",
        f"{push['two_step_cpu_s'] / push['push_cpu_s']:.2f}×",
        "(reported)",
        "",
    ),
    (
        f"`push` vs raw `nix-store --dump \\| zstd -{push['level']}` (no upload)",
        f"{push['push_mib_s']:.0f} MiB/s",
        f"{push['raw_mib_s']:.0f} MiB/s",
        f"{share_of_raw:.2f}×",
        "(reported)",
        "",
    ),
    (
        "cores busy during that `push` (its CPU + the S3 server's, over wall time)",
        f"{push['cores_busy'] * 100:.0f} %",
        "",
        "",
        "(reported)",
        "",
    ),
    (
        "peak memory of that `push`",
        f"{push['push_rss_mib']:.1f} MiB",
        "",
        "",
        "≤ 64 MiB",
        verdict(push["push_rss_mib"] <= 64),
    ),
    (
        f"`push` when all {push['noop_paths']} paths are cached",
        f"{push['noop_median_s']:.3f} s",
        "",
        "",
        "< 1 s",
        verdict(push["noop_median_s"] < 1),
    ),
    (
        "start-up + no-op `keys generate`",
        f"{start['keys_noop_ms']:.1f} ms",
        "",
        "",
        "≤ 20 ms",
        verdict(start["keys_noop_ms"] <= 20),
    ),
    (
        "start-up + no-op `configure`",
        f"{start['configure_noop_ms']:.1f} ms",
        "",
        "",
        "≤ 20 ms",
        verdict(start["configure_noop_ms"] <= 20),
    ),
]

lines = [
    "# Benchmarks",
    "",
    "Made by `bash bench/run.sh` in one run: every ratio compares numbers measured in that",
    "same run, on the same machine, against a SeaweedFS on loopback (the store, the",
    "compressor and the S3 server share the cores).",
    "",
    f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']} of memory,"
    f" Linux {machine['kernel']}",
    f"- Date: {machine['date']}; load average at the end of the push benchmark:"
    f" {push['load']}",
    "",
    "| benchmark | nix-binary-cache | baseline | ratio | target | |",
    "|---|---:|---:|---:|---:|---|",
]
lines += ["| " + " | ".join(r) + " |" for r in rows]
lines += [
    "",
    "![push throughput and provision time](chart.png)",
    "",
    "Details, method and notes: [provision.md](provision.md), [push.md](push.md),",
    "[startup.md](startup.md).",
    "",
]
with open(os.path.join(out, "README.md"), "w") as f:
    f.write("\n".join(lines))

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
names = ["raw dump | zstd\n(no upload)", "nix-binary-cache\npush", "nix copy +\naws s3 sync"]
values = [push["raw_mib_s"], push["push_mib_s"], push["two_step_mib_s"]]
colors = ["#9e9e9e", "#1f77b4", "#ff7f0e"]
bars = left.bar(names, values, color=colors)
left.bar_label(bars, labels=[f"{v:.0f} MiB/s" for v in values], padding=2)
left.set_ylabel("NAR throughput (MiB/s)")
left.set_title(f"push of a {push['nar_mib']:.0f} MiB closure (zstd -{push['level']})")
left.set_ylim(0, max(values) * 1.2)

names = ["nix-binary-cache\nprovision", "aws CLI script\n(same reads)"]
values = [prov["provision_ms"], prov["aws_ms"]]
bars = right.bar(names, values, color=["#1f77b4", "#ff7f0e"])
right.set_yscale("log")
right.bar_label(bars, labels=[f"{v:.0f} ms" for v in values], padding=2)
right.set_ylabel("wall time, converged store (ms, log scale)")
right.set_title(f"converged provision: {prov['ratio']:.0f}× faster")
right.set_ylim(min(values) / 2, max(values) * 4)

fig.suptitle(
    f"{machine['cpu']}, {machine['cores']} cores, {machine['memory']}, {machine['date']}",
    fontsize=9,
    color="#555555",
)
fig.tight_layout()
fig.savefig(os.path.join(out, "chart.png"), dpi=110)
print("\n".join(lines))
