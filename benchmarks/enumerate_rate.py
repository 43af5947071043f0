"""Enumerate + shard rate of a catalog (default: the default catalog) on this machine.

    python benchmarks/enumerate_rate.py [--catalog catalogs/bimetallics.yaml] [--workers 2] [--repeat 1]
    python benchmarks/enumerate_rate.py --catalog catalogs/organics-on-metals.yaml --workers 2

Prints candidates/s for the whole `enumerate_catalog` call (slab templates and sites computed from
scratch, shards and index written), CPU time, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import qecat_core  # noqa: F401
from qecat_core.catalog.schema import load_catalog
from qecat_core.enumerate.candidates import enumerate_catalog


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the worker pools)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalog", default="catalogs/bimetallics.yaml", help="catalog YAML")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    load = os.getloadavg()[0]  # 1-minute load average before the runs: other jobs on the cores
    cat = load_catalog(args.catalog)
    results = []
    for _ in range(args.repeat):
        out = tempfile.mkdtemp(prefix="qecat-bench-")
        t0, c0 = time.perf_counter(), _cpu()
        m = enumerate_catalog(cat, out, shard_size=args.shard_size, workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
        shutil.rmtree(out)
        results.append({"candidates": m["n_candidates"], "bulks": m["n_bulks"], "shards": len(m["shards"]),
                        "wall_s": round(wall, 1), "cpu_s": round(_cpu() - c0, 1),
                        "rate_per_s": round(m["n_candidates"] / wall, 1)})
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"catalog": args.catalog, "workers": args.workers, "load_before": round(load, 2), "runs": results,
                      "median_rate_per_s": sorted(r["rate_per_s"] for r in results)[len(results) // 2],
                      "peak_rss_mb": round(rss / 1024)}, indent=1))


if __name__ == "__main__":
    main()
