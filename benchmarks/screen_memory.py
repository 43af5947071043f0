"""Peak memory of a screening run at two sizes (the pipeline streams: no step holds all structures).

    python benchmarks/screen_memory.py --sizes 10000 100000 --workers 2 [--checkpoint DIR]
    python benchmarks/screen_memory.py --sizes 10000 100000 --phases rerun   # after a full run

For each size, two fresh processes (so each peak is its own): ``enumerate`` (catalog -> shards;
the pool workers are children) and ``screen`` (``run_screen`` with the local executor; the jobs are
children). Each reports ``ru_maxrss`` of itself (``driver_mb``) and of its largest child
(``children_mb``). Flat driver memory from 10k to 100k candidates means only per-candidate
metadata (~1 kB/candidate in pandas) grows, never structures. ``rerun`` (not in the default
phases) screens again with the results folder removed but the per-shard outputs kept: every shard
comes from cache, so it measures the driver alone (plan, collect, rank) in about a minute.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _screen_common import catalog_for, default_checkpoint  # noqa: E402


def _peaks() -> dict:
    return {"driver_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def _phase(phase: str, n: int, args) -> dict:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("warp").setLevel(logging.ERROR)
    from qecat_core.screen.config import load_screen_config
    from qecat_core.screen.pipeline import run_screen
    from qecat_core.screen.plan import enumerate_candidates

    catalog, name = catalog_for(n, args.out)
    cfg = load_screen_config(None, catalog=catalog, checkpoint=args.checkpoint, executor="local",
                             workers=args.workers, shard_size=args.shard_size, results=args.out / f"results-{n}",
                             work=args.out / "work", limit=n)
    t0 = time.perf_counter()
    if phase == "enumerate":
        enum = enumerate_candidates(cfg)
        info = {"enumerated": enum.n_candidates, "shards": enum.n_shards}
    else:
        import shutil

        shutil.rmtree(args.out / f"results-{n}", ignore_errors=True)
        if phase == "screen":
            shutil.rmtree(args.out / "work" / name / "predictions", ignore_errors=True)
        s = run_screen(cfg).summary
        assert s["status"] == "ok", s["failed"]
        info = {"new": s["new"], "jobs": s["shards"]["jobs"]}
    return {"phase": phase, "n": n, "wall_s": round(time.perf_counter() - t0, 1), **info, **_peaks()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--checkpoint", default=default_checkpoint())
    p.add_argument("--out", type=Path, default=Path("/tmp/qecat-bench-memory"))
    p.add_argument("--phases", nargs="+", choices=["enumerate", "screen", "rerun"], default=["enumerate", "screen"])
    p.add_argument("--phase", choices=["enumerate", "screen", "rerun"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:  # child process: one phase, one size
        print(json.dumps(_phase(args.phase, args.sizes[0], args)))
        return
    rows = []
    for n in args.sizes:
        for phase in args.phases:
            cmd = [sys.executable, __file__, "--phase", phase, "--sizes", str(n), "--workers", str(args.workers),
                   "--shard-size", str(args.shard_size), "--checkpoint", args.checkpoint, "--out", str(args.out)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{phase} {n} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps({"workers": args.workers, "shard_size": args.shard_size, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
