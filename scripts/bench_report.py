#!/usr/bin/env python3
"""Reads criterion's results and the callgrind counts, prints the results
table (median, min and max per call or per message, ratio to the baseline)
as Markdown, and draws benches/results.svg."""

import json
import os
import re
import sys

CRITERION = os.path.join("target", "criterion")
BENCH_LOG = os.environ.get("BENCH_LOG", os.path.join("target", "bench.log"))
# The per-call benchmark again, built with every function and loop aligned to 64 bytes.
ALIGNED_LOG = os.path.join("target", "aligned.log")

# The per-call approaches: criterion function, label, criterion group.
PER_CALL = [
    ("uninstrumented", "uninstrumented call", "per_call"),
    ("titus_counted", "`#[counted]`", "per_call"),
    ("titus_count_macro", "`count!`", "per_call"),
    ("shared_atomic", "shared `AtomicU64::fetch_add`", "per_call"),
    ("prometheus_local", "prometheus `LocalIntCounter`", "per_call"),
    ("prometheus", "prometheus `IntCounter`", "per_call"),
    ("metrics_handle", "metrics, cached `Counter` handle", "per_call"),
    ("metrics_macro", "metrics, `counter!` each call", "per_call"),
    ("udp_datagram", "UDP datagram per call (statsd)", "per_call"),
    ("redis_incr", "Redis `INCR` per call", "per_call_redis"),
]

# The pipelines: criterion group, function, messages per run, label.
PIPELINES = [
    ("pipeline", "not_counted", 100000, "not counted"),
    ("pipeline", "titus_count", 100000, "titus-count"),
    ("pipeline", "metrics", 100000, "metrics crate"),
    ("pipeline_redis", "redis_incr", 2000, "Redis `INCR` per message and stage"),
]


def paired(log=BENCH_LOG):
    """The `paired:` lines the benchmarks print (see benches/common), as
    name -> (median, CI low, CI high): time of the baseline over time of the
    other, from interleaved pairs of runs."""
    found = {}
    pattern = re.compile(r"^paired: (\S+): median ([\d.]+) \(95% CI ([\d.]+)-([\d.]+),.*?(\d+) pairs\)")
    try:
        lines = open(log).read().splitlines()
    except FileNotFoundError:
        return found
    for line in lines:
        m = pattern.match(line)
        if m:
            found[m.group(1)] = (float(m.group(2)), float(m.group(3)), float(m.group(4)), int(m.group(5)))
    return found


def load(group, function, param):
    # Criterion's folders: group/function/param, where a benchmark with
    # only a parameter (`flush_batch/100`) has no function folder.
    parts = [str(p) for p in (group, function, param) if str(p)]
    base = os.path.join(CRITERION, *parts, "new")
    try:
        est = json.load(open(os.path.join(base, "estimates.json")))
        sample = json.load(open(os.path.join(base, "sample.json")))
    except FileNotFoundError:
        return None
    per_iter = [t / n for t, n in zip(sample["times"], sample["iters"])]
    return est["median"]["point_estimate"], min(per_iter), max(per_iter)


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.2f} ns"


def per_call_rows(threads):
    rows = []
    base = load("per_call", "uninstrumented", threads)
    for key, label, group in PER_CALL:
        r = load(group, key, threads)
        if r:
            rows.append((key, label, r, r[0] / base[0] if base else None))
    return rows


def main():
    out = []
    cores = sorted(
        {int(p) for p in os.listdir(os.path.join(CRITERION, "per_call", "uninstrumented")) if p.isdigit()}
    )
    out.append("### Per call (time per call per thread)\n")
    header = "| approach | " + " | ".join(
        f"{t} thread{'s' if t > 1 else ''}: median (min-max) | ratio" for t in cores
    ) + " |"
    out.append(header)
    out.append("|---" * (1 + 2 * len(cores)) + "|")
    tables = {t: per_call_rows(t) for t in cores}
    for i, (key, label, _, _) in enumerate(tables[cores[0]]):
        cells = []
        for t in cores:
            _, _, (med, lo, hi), ratio = tables[t][i]
            cells.append(f"{fmt_ns(med)} ({fmt_ns(lo)}-{fmt_ns(hi)})")
            cells.append(f"{ratio:.2f}x" if ratio else "")
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    pairs = paired()
    aligned = paired(ALIGNED_LOG)
    if any(k.startswith("per_call/") for k in pairs):
        out.append("\nTime per call over the uninstrumented call, from interleaved pairs of runs (each pair runs both")
        out.append("versions back to back, so both see the same machine; median of the pairs' ratios and")
        out.append("its 95% confidence interval). The last columns are the same run in a build with every")
        out.append("function and loop aligned to 64 bytes, which takes code placement out of the comparison:\n")
        builds = [("", pairs)] + ([(", 64-byte aligned", aligned)] if aligned else [])
        columns = [(t, suffix, found) for suffix, found in builds for t in cores]
        out.append("| approach | " + " | ".join(
            f"{t} thread{'s' if t > 1 else ''}{suffix}" for t, suffix, _ in columns) + " |")
        out.append("|---" * (1 + len(columns)) + "|")
        for key, label in [
            ("per_call/titus_counted", "`#[counted]`"),
            ("per_call/titus_count_macro", "`count!`"),
            ("per_call_flusher_running/titus_counted", "`#[counted]`, a flusher flushing every 1 ms"),
        ]:
            cells = []
            for t, _, found in columns:
                r = found.get(f"{key}/{t}")
                # The line holds uninstrumented time over counted time.
                cells.append(f"{1 / r[0]:.2f}x ({1 / r[2]:.2f}-{1 / r[1]:.2f})" if r else "")
            out.append(f"| {label} | " + " | ".join(cells) + " |")

    scaling = [(k.split("/", 1)[1], v) for k, v in pairs.items() if k.startswith("per_call_scaling/")]
    if scaling:
        labels = {key: label for key, label, _ in PER_CALL}
        out.append(f"\nTime per call per thread with {cores[-1]} threads counting at once over one thread")
        out.append("(interleaved pairs of runs, median and 95% confidence interval): what contention costs.\n")
        out.append("| approach | all cores over one thread |")
        out.append("|---|---|")
        for key, r in scaling:
            # The line holds one thread's time over all cores' time.
            out.append(f"| {labels.get(key, key)} | {1 / r[0]:.2f}x ({1 / r[2]:.2f}-{1 / r[1]:.2f}, {r[3]} pairs) |")

    callgrind = os.environ.get("CALLGRIND")
    if callgrind:
        out.append("\n### Instructions per call (callgrind)\n")
        out.append("| function | instructions per call | over uninstrumented |")
        out.append("|---|---|---|")
        counts = dict(line.split() for line in callgrind.strip().splitlines())
        calls = float(counts.pop("calls"))
        plain = float(counts["plain"]) / calls
        for mode, label in [("plain", "uninstrumented"), ("counted", "`#[counted]`"), ("count_macro", "`count!`")]:
            per = float(counts[mode]) / calls
            out.append(f"| {label} | {per:.1f} | {per - plain:+.1f} |")

    out.append("\n### Pipeline (messages per second)\n")
    out.append("| pipeline | median (min-max) | throughput over not counted: paired runs, median (95% CI) |")
    out.append("|---|---|---|")
    for group, key, n, label in PIPELINES:
        r = load(group, key, n)
        if not r:
            continue
        rate = lambda ns: n / (ns / 1e9)
        med, lo, hi = (rate(x) for x in r)
        p = pairs.get(f"pipeline/{key}")
        if key == "not_counted":
            ratio = "1.000x"
        elif p:
            ratio = f"{p[0]:.3f}x ({p[1]:.3f}-{p[2]:.3f}, {p[3]} pairs)"
        else:
            ratio = ""
        out.append(f"| {label} | {med:,.0f}/s ({hi:,.0f}-{lo:,.0f}) | {ratio} |")

    out.append("\n### One flush (one batch, one round trip)\n")
    out.append("| stages in the batch | median (min-max) |")
    out.append("|---|---|")
    for stages in [1, 10, 100, 1000, 10000]:
        r = load("flush_batch", stages, "")
        if r:
            out.append(f"| {stages} | {fmt_ns(r[0])} ({fmt_ns(r[1])}-{fmt_ns(r[2])}) |")

    out.append("\n### One flush as the number of counting threads grows\n")
    out.append("Each thread has counted at 16 sites since the last flush; `flush()` collects every")
    out.append("thread's cells, cuts one batch of 16 stages, sends it and waits for Redis's reply.")
    out.append("Collecting alone is `local_totals()` over the same threads, without Redis.\n")
    out.append("| counting threads | one flush: median (min-max) | collecting alone: median (min-max) |")
    out.append("|---|---|---|")
    for threads in [1, 4, 16, 64]:
        whole = load("flush_threads", threads, "")
        collect = load("collect", threads, "")
        if whole:
            cells = [f"{fmt_ns(r[0])} ({fmt_ns(r[1])}-{fmt_ns(r[2])})" if r else "" for r in (whole, collect)]
            out.append(f"| {threads} | " + " | ".join(cells) + " |")

    print("\n".join(out))
    chart(tables, cores)
    pipeline_chart(pairs)


def chart(tables, cores):
    """A horizontal bar chart of per-call cost, log scale, one bar per thread count."""
    rows = tables[cores[0]]
    width, left, bar, gap = 900, 290, 9, 8
    height = 40 + len(rows) * (bar * len(cores) + gap) + 40
    import math

    lo, hi = 1.0, 1e6
    scale = lambda ns: left + (math.log10(max(ns, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (width - left - 20)
    colors = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5"]
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">']
    svg.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    svg.append(f'<text x="{left}" y="20" font-size="14">Cost of counting one call (time per call per thread, log scale)</text>')
    y = 40
    for i, (key, label, _, _) in enumerate(rows):
        svg.append(f'<text x="{left - 8}" y="{y + bar * len(cores) / 2 + 4}" text-anchor="end">{label.replace("`", "")}</text>')
        for j, t in enumerate(cores):
            med = tables[t][i][2][0]
            svg.append(f'<rect x="{left}" y="{y}" width="{scale(med) - left:.1f}" height="{bar - 1}" fill="{colors[j % 4]}"/>')
            svg.append(f'<text x="{scale(med) + 4:.1f}" y="{y + bar - 1}" font-size="10">{fmt_ns(med)}</text>')
            y += bar
        y += gap
    for p in range(0, 7):
        x = scale(10 ** p)
        svg.append(f'<line x1="{x:.1f}" y1="35" x2="{x:.1f}" y2="{y}" stroke="#ddd"/>')
        svg.append(f'<text x="{x:.1f}" y="{y + 14}" text-anchor="middle" font-size="10">{fmt_ns(10 ** p)}</text>')
    for j, t in enumerate(cores):
        svg.append(f'<rect x="{left + j * 120}" y="{y + 22}" width="10" height="10" fill="{colors[j % 4]}"/>')
        svg.append(f'<text x="{left + j * 120 + 14}" y="{y + 31}">{t} thread{"s" if t > 1 else ""}</text>')
    svg.append("</svg>")
    with open(os.path.join("benches", "results.svg"), "w") as f:
        f.write("\n".join(svg))


def pipeline_chart(pairs):
    """A horizontal bar chart of pipeline throughput, messages per second."""
    rows = []
    for group, key, n, label in PIPELINES:
        r = load(group, key, n)
        if r:
            p = pairs.get(f"pipeline/{key}")
            note = f" ({p[0]:.3f}x paired)" if p else ""
            rows.append((label.replace("`", ""), n / (r[0] / 1e9), note))
    if not rows:
        return
    width, left, bar, gap = 900, 290, 18, 10
    height = 50 + len(rows) * (bar + gap) + 20
    top = max(rate for _, rate, _ in rows)
    scale = lambda rate: left + rate / top * (width - left - 140)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">']
    svg.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    svg.append(f'<text x="{left}" y="20" font-size="14">Titus-like pipeline throughput (messages per second, median)</text>')
    y = 40
    for label, rate, note in rows:
        svg.append(f'<text x="{left - 8}" y="{y + bar - 5}" text-anchor="end">{label}</text>')
        svg.append(f'<rect x="{left}" y="{y}" width="{max(scale(rate) - left, 1):.1f}" height="{bar}" fill="#2b6cb0"/>')
        svg.append(f'<text x="{scale(rate) + 6:.1f}" y="{y + bar - 5}">{rate:,.0f}/s{note}</text>')
        y += bar + gap
    svg.append("</svg>")
    with open(os.path.join("benches", "pipeline.svg"), "w") as f:
        f.write("\n".join(svg))


if __name__ == "__main__":
    sys.exit(main())
