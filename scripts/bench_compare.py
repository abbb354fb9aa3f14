#!/usr/bin/env python3
"""Prints ditail's benchmark figures beside diffusers' (the JSON files of examples/bench.rs
and scripts/bench_reference.py) with the ratios ditail / diffusers (below 1: ditail is
faster or smaller).  No third-party imports.

Usage: python scripts/bench_compare.py ditail.json reference.json [--markdown]

Several rounds (bench.sh run more than once, so that both sides meet the machine's slow
and fast moments; on a virtual machine whose host takes cycles, one side can run through
a slow minute the other did not): give comma-separated lists, e.g.
`a/ditail.json,b/ditail.json a/reference.json,b/reference.json`. Each side's runs of a
measurement are pooled over the rounds and their median taken; memory is the largest peak;
the ratio of each round is listed too.
"""

import json
import sys


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    markdown = "--markdown" in sys.argv
    ours_rounds, ref_rounds = ([json.load(open(p)) for p in arg.split(",")] for arg in args[:2])
    ours, ref = pool(ours_rounds), pool(ref_rounds)
    rounds = len(ours_rounds) > 1 or len(ref_rounds) > 1
    mem_key = "peak_vram_bytes" if any("peak_vram_bytes" in r for r in ref["results"].values()) else "peak_rss_bytes"
    head = ["measurement", "ditail s", "diffusers s", "time ratio", "ditail GiB", "diffusers GiB", "memory ratio"]
    if rounds:
        head.append("ratio per round")
    rows = []
    for name, r in ref["results"].items():
        o = ours["results"].get(name)
        if o is None:
            continue
        om = o.get(mem_key, o.get("peak_rss_bytes", 0)) / 2**30
        rm = r.get(mem_key, 0) / 2**30
        rows.append([name, f"{o['median_s']:.3f}", f"{r['median_s']:.3f}", f"{o['median_s'] / r['median_s']:.2f}",
                     f"{om:.2f}", f"{rm:.2f}", f"{om / rm:.2f}" if rm else "-"])
        if rounds:
            per = [a["results"][name]["median_s"] / b["results"][name]["median_s"]
                   for a, b in zip(ours_rounds, ref_rounds)
                   if name in a["results"] and name in b["results"]]
            rows[-1].append(" ".join(f"{x:.2f}" for x in per))
    print(f"ditail: {ours.get('backend')} {ours.get('dtype')}, {ours.get('threads')} threads; "
          f"diffusers: {ref.get('device')} {ref.get('dtype')}, {ref.get('threads')} threads, torch {ref.get('torch')}")
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        for r in [head] + rows:
            print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))


def pool(rounds: list) -> dict:
    """One side's rounds as one: each measurement's runs pooled (median of all), memory the
    largest peak; the first round's other fields."""
    if len(rounds) == 1:
        return rounds[0]
    out = dict(rounds[0])
    results = {}
    for name in rounds[0]["results"]:
        present = [r["results"][name] for r in rounds if name in r["results"]]
        runs = sorted(t for p in present for t in p.get("runs_s", [p["median_s"]]))
        merged = dict(present[0])
        half = len(runs) // 2
        merged["median_s"] = runs[half] if len(runs) % 2 else (runs[half - 1] + runs[half]) / 2
        merged["runs_s"] = runs
        for key in ("peak_rss_bytes", "peak_vram_bytes"):
            if key in merged:
                merged[key] = max(p.get(key, 0) for p in present)
        results[name] = merged
    out["results"] = results
    return out


if __name__ == "__main__":
    main()
