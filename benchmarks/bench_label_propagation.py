"""Time and peak memory of one label propagation (``clipkit.blocks.label_propagation``) as the node count grows.

Random unit features (N, D) and C random class seeds, ReCLIP's projection of the seeds, the official settings (k 20,
alpha 0.99, 20 CG iterations in float64). Each size runs in a fresh subprocess so that its peak memory is its own:
CUDA max allocated on a GPU, the growth of the process's max RSS over its state before the propagation on the CPU.
Prints one row per N (time of the kNN, graph and CG phases, peak memory) and the growth exponents between sizes
(``cost ~ N^e``): the exact top-k is O(N^2 D) in time and O(N (k + C) + chunk N) in memory.

    python benchmarks/bench_label_propagation.py                        # N = 10k, 50k, 100k; D 512; C 397; CPU
    python benchmarks/bench_label_propagation.py --sizes 76129 --device cuda   # SUN397's train split on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def run_one(n: int, dim: int, classes: int, device_name: str, threads: int, chunk_rows: int, cg_dtype: str) -> dict:
    """One propagation over ``classes`` seeds + ``n`` features; returns its timings and peak memory."""
    import torch
    import torch.nn.functional as F

    from clipkit.blocks.label_propagation import label_propagation, projection_without_first_direction

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    generator = torch.Generator().manual_seed(0)
    seeds = F.normalize(torch.randn(classes, dim, generator=generator), dim=-1).to(device)
    features = F.normalize(torch.randn(n, dim, generator=generator), dim=-1).to(device)
    projection = projection_without_first_direction(seeds, cut_dim=768)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        base = max_rss_mib()
    timings = {}
    start = time.perf_counter()
    result = label_propagation(seeds, features, projection, k=20, alpha=0.99, maxiter=20, tol=1e-6,
                               chunk_rows=chunk_rows or None, cg_dtype=getattr(torch, cg_dtype), timings=timings)
    total = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else max_rss_mib())
    return {"n": n, "total_s": total, **{f"{k}_s": v for k, v in timings.items()},
            "peak_mib": peak - base, "inputs_mib": (n + classes) * dim * 4 / 2**20,
            "cg_iterations": int(result.cg_iterations.max()), "device": device_name,
            "threads": torch.get_num_threads()}


def growth(rows, key):
    """Exponent e of ``cost ~ N^e`` between successive sizes."""
    return [math.log(b[key] / a[key]) / math.log(b["n"] / a["n"]) if a[key] > 0 and b[key] > 0 else float("nan")
            for a, b in zip(rows, rows[1:])]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,50000,100000", help="comma-separated numbers of image nodes N")
    parser.add_argument("--dim", type=int, default=512, help="feature width D (ViT-B: 512)")
    parser.add_argument("--classes", type=int, default=397, help="number of classes C (SUN397: 397)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--chunk-rows", type=int, default=0, help="rows per top-k block (0 = 256 MB blocks)")
    parser.add_argument("--cg-dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--json", default="", help="also write the rows to this JSON file")
    parser.add_argument("--single", type=int, default=0, help=argparse.SUPPRESS)  # internal: one size, JSON out
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(run_one(args.single, args.dim, args.classes, args.device, args.threads, args.chunk_rows,
                                 args.cg_dtype)))
        return 0

    rows = []
    print(f"label propagation, D={args.dim}, C={args.classes}, k=20, 20 CG iterations in {args.cg_dtype}, "
          f"device {args.device}")
    print(f"{'N':>8} {'total s':>9} {'knn s':>8} {'graph s':>8} {'cg s':>8} {'peak MiB':>9} {'inputs MiB':>10}")
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, os.path.abspath(__file__), "--single", str(n), "--dim", str(args.dim), "--classes",
               str(args.classes), "--device", args.device, "--threads", str(args.threads), "--chunk-rows",
               str(args.chunk_rows), "--cg-dtype", args.cg_dtype]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"N={n} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            return 1
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{n:>8} {row['total_s']:>9.2f} {row['knn_s']:>8.2f} {row['graph_s']:>8.2f} {row['cg_s']:>8.2f} "
              f"{row['peak_mib']:>9.0f} {row['inputs_mib']:>10.0f}", flush=True)
    if len(rows) > 1:
        for key, label in (("total_s", "time"), ("knn_s", "kNN time"), ("cg_s", "CG time"), ("peak_mib", "memory")):
            exps = ", ".join(f"{e:.2f}" for e in growth(rows, key))
            print(f"growth of {label} between successive N: N^({exps})")
        dense = rows[-1]["n"] ** 2 * 4 / 2**30
        print(f"(a dense fp32 N x N affinity at N={rows[-1]['n']} alone would take {dense:.1f} GiB)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
