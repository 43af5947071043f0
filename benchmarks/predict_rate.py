"""`qecat predict` throughput (structures/s) per mode with a model checkpoint.

    python benchmarks/predict_rate.py [--checkpoint models/qecat-emt-v1] \
        [--input data/emt-v1/candidates/shards/shard-00000.aselmdb] [--threads 2] [--repeats 3]

Two figures per mode (fused, graph, text):
* ``cli``: wall time of the whole command ``qecat predict INPUT -o OUT --mode M`` in a fresh process
  (Python start, imports, checkpoint load, reading and featurising the structures, inference, Parquet),
  the number a user sees;
* ``in_process``: median of ``repeats`` calls of :func:`qecat_core.model.predict.predict_structures`
  on the same file with the model already loaded (reading + featurising + inference).
Default input: the first shard (1,000 initial structures, 40-80 atoms) of the default catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import qecat_core  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "qecat-emt-v1"))
    ap.add_argument("--input", default=str(ROOT / "data/emt-v1/candidates/shards/shard-00000.aselmdb"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--modes", default="fused,graph,text")
    args = ap.parse_args()
    import torch

    from qecat_core.common.structures import iter_structures
    from qecat_core.model.checkpoint import load_model
    from qecat_core.model.predict import predict_structures

    n = sum(1 for _ in iter_structures(args.input))
    model, tok = load_model(args.checkpoint)
    out = {"input": args.input, "n": n, "threads": args.threads, "batch_size": args.batch_size,
           "torch": torch.__version__, "cpus": os.cpu_count(), "modes": {}}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    qecat = str(Path(sys.executable).with_name("qecat"))
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([qecat, "predict", args.input, "-o", f"{tmp}/p.parquet", "--mode", mode, "--checkpoint",
                            args.checkpoint, "--threads", str(args.threads), "--batch-size", str(args.batch_size)],
                           check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cli = time.perf_counter() - t0
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            predict_structures(model, args.input, mode, batch_size=args.batch_size, tokenizer=tok, progress=False,
                               num_threads=args.threads)
            walls.append(time.perf_counter() - t0)
        w = statistics.median(walls)
        out["modes"][mode] = {"cli_wall_s": round(cli, 2), "cli_structures_per_s": round(n / cli, 1),
                              "in_process_wall_s": round(w, 2), "in_process_structures_per_s": round(n / w, 1)}
        print(mode, out["modes"][mode], file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
