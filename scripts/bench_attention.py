#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention at the shapes of `examples/bench_attention.rs`.

Same layers, batch and timing (median of N runs after a warm-up), same JSON, so that
`scripts/bench_attention.sh` can print the ratios ditail / PyTorch. The self-attention
rows include Ditail's q/k mix done the way the reference implementation does it (tensor
ops before SDPA), since that is what a PyTorch user of Ditail runs.

    .venv/bin/python scripts/bench_attention.py --device cuda --dtype fp16 --json torch.json
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F

SD15 = [(4096, 8, 40), (1024, 8, 80), (256, 8, 160), (64, 8, 160)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--tokens", default=",".join(str(s[0]) for s in SD15))
    p.add_argument("--json")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    dtype = torch.float16 if a.dtype == "fp16" else torch.float32
    tokens = {int(t) for t in a.tokens.split(",")}
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def measure(f):
        f()
        sync()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        out = f()
        sync()
        # Peak bytes beyond the inputs; torch has no such figure for the CPU.
        mem = torch.cuda.max_memory_allocated() - base if cuda else None
        del out
        times = []
        for _ in range(max(a.runs, 1)):
            t = time.perf_counter()
            out = f()
            sync()
            times.append(time.perf_counter() - t)
            del out
        times.sort()
        return times[len(times) // 2], mem

    rows = []
    print(f"attention on torch {a.device} ({a.dtype}), batch 3, median of {a.runs} runs")
    with torch.inference_mode():
        for n, heads, d in [s for s in SD15 if s[0] in tokens]:
            c = heads * d
            side = int(n ** 0.5)
            mask = (torch.arange(n, device=dev) % side < side // 2).to(dtype).view(1, n, 1)
            for kind, n_kv in [("self", n), ("cross", 77)]:
                q = torch.randn(3, n, c, device=dev, dtype=dtype)
                k = torch.randn(3, n_kv, c, device=dev, dtype=dtype)
                v = torch.randn(3, n_kv, c, device=dev, dtype=dtype)

                def split(t):
                    b, m, _ = t.shape
                    return t.view(b, m, heads, d).transpose(1, 2)

                def sdpa(q=q, k=k, v=v, kind=kind):
                    if kind == "self":
                        src_q, src_k = q[:1], k[:1]
                        q = torch.cat([src_q, q[1:] + (src_q - q[1:]) * mask])
                        k = torch.cat([src_k, k[1:] + (src_k - k[1:]) * mask])
                    o = F.scaled_dot_product_attention(split(q), split(k), split(v))
                    return o.transpose(1, 2).reshape(3, -1, c)

                layer = f"{kind} {n}x{n_kv} {heads}x{d}"
                seconds, mem = measure(sdpa)
                shown = f"{mem / 2**20:>9.1f} MiB" if mem is not None else "      n/a"
                print(f"{layer:>26}  {'torch sdpa':<18} {seconds * 1e3:>10.3f} ms  {shown}")
                rows.append({"layer": layer, "method": "torch sdpa", "seconds": seconds, "bytes": mem})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"backend": a.device, "dtype": a.dtype, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
