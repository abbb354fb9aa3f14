#!/usr/bin/env python3
"""Prints ditail's benchmark figures beside diffusers' (the JSON files of examples/bench.rs
and scripts/bench_reference.py) with the ratios ditail / diffusers (below 1: ditail is
faster or smaller).  No third-party imports.

Usage: python scripts/bench_compare.py ditail.json reference.json [--markdown]
"""

import json
import sys


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    markdown = "--markdown" in sys.argv
    ours, ref = (json.load(open(p)) for p in args[:2])
    mem_key = "peak_vram_bytes" if any("peak_vram_bytes" in r for r in ref["results"].values()) else "peak_rss_bytes"
    head = ["measurement", "ditail s", "diffusers s", "time ratio", "ditail GiB", "diffusers GiB", "memory ratio"]
    rows = []
    for name, r in ref["results"].items():
        o = ours["results"].get(name)
        if o is None:
            continue
        om = o.get(mem_key, o.get("peak_rss_bytes", 0)) / 2**30
        rm = r.get(mem_key, 0) / 2**30
        rows.append([name, f"{o['median_s']:.3f}", f"{r['median_s']:.3f}", f"{o['median_s'] / r['median_s']:.2f}",
                     f"{om:.2f}", f"{rm:.2f}", f"{om / rm:.2f}" if rm else "-"])
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


if __name__ == "__main__":
    main()
