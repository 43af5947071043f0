"""Screening overhead: end-to-end ``run_screen`` wall time vs pure model inference on the same candidates.

    python benchmarks/screen_overhead.py --n 10000 --workers 2 [--checkpoint DIR] [--mode fused]

1. A catalog with at least ``n`` candidates (``bimetallics.yaml`` with more OC20 adsorbates if
   needed) is enumerated into ``--out`` (cached by catalog hash: not part of either timing; its
   time is reported); the screen takes exactly ``n`` candidates (``limit``, lowest sid hash).
2. **Pure inference**: ``workers`` processes (spawned), each loads the checkpoint and runs
   :func:`predict_structures` over its share of the same shards (the screen's own job split), with
   no orchestration, no locks and nothing written. ``pure_predict_s`` is the slowest worker's
   prediction time (model loaded); ``pure_with_load_s`` the wall from spawning to the last worker done.
3. **Screen**: :func:`qecat_core.screen.pipeline.run_screen` with the local submitit executor, fresh
   results and shard outputs (enumeration cached): planning, job start-up and model loads,
   atomic per-shard writes, collection into the results dataset, ranking, run summary.

``overhead = screen_s / pure_predict_s - 1`` (goal: <= 0.20); ``overhead_vs_load`` uses
``pure_with_load_s``. Prints one JSON object. Use idle cores: both sides use ``workers`` processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _screen_common import catalog_for, default_checkpoint  # noqa: E402

import qecat_core  # noqa: F401,E402


def _pure_worker(args):
    checkpoint, mode, batch_size, tasks = args
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.getLogger("warp").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    from qecat_core.common.structures import iter_structures
    from qecat_core.model.checkpoint import load_model
    from qecat_core.model.predict import predict_structures

    t0 = time.perf_counter()
    model, tok = load_model(checkpoint)
    t1 = time.perf_counter()
    n = 0
    for shard, sids in tasks:
        wanted = None if sids is None else set(sids)
        structures = (a for a in iter_structures(shard) if wanted is None or a.info["sid"] in wanted)
        df = predict_structures(model, structures, mode=mode, batch_size=batch_size, tokenizer=tok, progress=False,
                                num_threads=1)
        n += len(df)
    return t1 - t0, time.perf_counter() - t1, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--checkpoint", default=default_checkpoint())
    p.add_argument("--mode", default="fused")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("/tmp/qecat-bench-screen"))
    args = p.parse_args()

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("warp").setLevel(logging.ERROR)
    from qecat_core.screen.config import load_screen_config
    from qecat_core.screen.pipeline import run_screen
    from qecat_core.screen.plan import enumerate_candidates, plan_screen

    catalog, _ = catalog_for(args.n, args.out)
    results, work = args.out / "results", args.out / "work"
    cfg = load_screen_config(None, catalog=catalog, checkpoint=args.checkpoint, mode=args.mode, executor="local",
                             workers=args.workers, shard_size=args.shard_size, batch_size=args.batch_size,
                             results=results, work=work, limit=args.n)
    t0 = time.perf_counter()
    enum = enumerate_candidates(cfg)
    t_enum = time.perf_counter() - t0
    for d in (results, work / enum.name / "predictions", work / enum.name / "submitit"):
        shutil.rmtree(d, ignore_errors=True)
    plan = plan_screen(cfg, enum=enum)
    jobs = [(args.checkpoint, args.mode, args.batch_size, [(t.shard, t.sids) for t in job]) for job in plan.jobs]

    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        pure = pool.map(_pure_worker, jobs)
    pure_with_load = time.perf_counter() - t0
    pure_predict = max(p[1] for p in pure)
    assert sum(p[2] for p in pure) == args.n, "pure inference did not see every candidate"

    t0 = time.perf_counter()
    result = run_screen(cfg)
    screen_s = time.perf_counter() - t0
    s = result.summary
    assert s["status"] == "ok" and s["new"] == args.n, s["failed"]
    print(json.dumps({
        "n": args.n, "workers": args.workers, "mode": args.mode, "model_id": s["model_id"],
        "shards": s["shards"], "enumerate_s": round(t_enum, 1), "enumerated": enum.n_candidates,
        "pure_load_s": [round(p[0], 1) for p in pure], "pure_predict_s": round(pure_predict, 1),
        "pure_with_load_s": round(pure_with_load, 1), "screen_s": round(screen_s, 1),
        "overhead": round(screen_s / pure_predict - 1, 3),
        "overhead_vs_load": round(screen_s / pure_with_load - 1, 3),
        "rate_screen_per_s": round(args.n / screen_s, 1), "goal": "overhead <= 0.20",
    }, indent=1))


if __name__ == "__main__":
    main()
