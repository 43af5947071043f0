"""GPU inference: structures/s and peak GPU memory per mode and batch size, with the CPU figure beside it.

    python benchmarks/gpu_predict.py                # on a CUDA machine: the full table (< ~8 min on one H200)
    python benchmarks/gpu_predict.py --quick        # CPU smoke run (and a short GPU run where there is CUDA)
    python benchmarks/gpu_predict.py --accuracy-only --device cpu   # reduced precision vs fp32 only

Structures: the script enumerates a small catalog of the shipped model's elements (Cu, Pt, Pd, Ag;
111/100; six adsorbates; 336 initial structures) into a temporary folder, featurises them once (tags,
configuration text, crop to the adsorbate + 6 Å: what ``predict_structures`` does per structure on
the CPU) and cycles through them to fill ``--n`` structures per measurement.

Tables (markdown, stdout):

1. ``model``: collate + move to the device + forward pass + the energies back on the host, on the
   featurised structures (what the batch size changes), for each mode (fused, graph, text) at batch
   32, 64, 128, 256, 512, 1024 on CUDA; peak ``torch.cuda.max_memory_allocated`` per row. CPU rows:
   batch 32 per mode, fewer structures.
2. ``end to end``: :func:`qecat_core.model.predict.predict_structures` on the Atoms (featurising on
   the CPU included) at one batch size per device: the rate a user of ``qecat predict`` gets.
3. ``precision``: max and mean |ΔE| (eV) of bf16 (and on CUDA fp16) autocast against fp32 over the
   336 structures, per mode, on each device measured.
4. On CUDA with nvalchemiops installed: the GPU neighbour list (``QECAT_NEIGHBOR_LIST=nvalchemi``)
   against the default PyTorch one: rate and max |ΔE|.

A section that fails prints its error and the others still run. ``--budget-s`` (default 420) stops
starting new GPU measurements once that much time has passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import qecat_core  # noqa: F401  (thread env vars)

ROOT = Path(__file__).resolve().parent.parent
MODES = ("fused", "graph", "text")
GPU_BATCHES = (32, 64, 128, 256, 512, 1024)
CATALOG = {
    "name": "gpu-bench", "seed": 0, "metals": ["Cu", "Pt", "Pd", "Ag"], "pairs": ["Cu-Pt", "Pd-Ag"],
    "include_pure": True, "prototypes": [{"kind": "L1_2", "formula": "A3B"}], "facets": ["111", "100"],
    "slab": {"min_layers": 3, "fixed_layers": 1, "min_lateral": 5.0},
    "adsorbates": ["*H", "*O", "*OH", "*CO", "*N", "*CH3"], "placement": {"max_per_system": 4},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_structures(tmp: Path):
    from qecat_core.catalog.schema import Catalog
    from qecat_core.common.structures import iter_structures
    from qecat_core.enumerate.candidates import enumerate_catalog

    enumerate_catalog(Catalog.model_validate(CATALOG), tmp / "enum", shard_size=1000, workers=1, progress=False)
    return list(iter_structures(tmp / "enum" / "shards"))


def featurise(model, structures):
    from qecat_core.model.data import example_from_atoms

    g = model.config["graph"]
    return [example_from_atoms(a, i, g["crop_radius"], g["max_num_elements"], need_text=True)
            for i, a in enumerate(structures)]


def model_rate(model, tok, examples, mode: str, batch: int, n: int, device) -> dict:
    """Structures/s of collate + to(device) + forward + energies on the host over ``n`` structures."""
    import torch

    from qecat_core.model.data import Collator
    from qecat_core.model.device import synchronize

    collate = Collator(tok, model.config["fusion"]["max_length"], use_graph=mode != "text", use_text=mode != "graph")
    pool = [examples[i % len(examples)] for i in range(max(n, batch))]
    chunks = [pool[i:i + batch] for i in range(0, len(pool), batch)]
    model.eval()
    cuda = device.type == "cuda"
    with torch.inference_mode():
        model(collate(chunks[0]).to(device), mode).energy.tolist()  # warm-up (kernels, allocator)
        synchronize(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for c in chunks:
            model(collate(c).to(device), mode).energy.tolist()
        synchronize(device)
        wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return {"n": len(pool), "wall": wall, "rate": len(pool) / wall, "peak_mib": peak}


def end_to_end(model, tok, structures, mode: str, batch: int, n: int, device) -> dict:
    from qecat_core.model.predict import predict_structures

    pool = [structures[i % len(structures)] for i in range(n)]
    predict_structures(model, pool[:batch], mode, batch_size=batch, tokenizer=tok, progress=False, device=device)
    t0 = time.perf_counter()
    predict_structures(model, pool, mode, batch_size=batch, tokenizer=tok, progress=False, device=device)
    wall = time.perf_counter() - t0
    return {"n": n, "wall": wall, "rate": n / wall}


def energies(model, tok, examples, mode: str, device, dtype, batch: int = 64):
    import numpy as np
    import torch

    from qecat_core.model.data import Collator
    from qecat_core.model.device import autocast

    collate = Collator(tok, model.config["fusion"]["max_length"], use_graph=mode != "text", use_text=mode != "graph")
    out = []
    with torch.inference_mode():
        for i in range(0, len(examples), batch):
            b = collate(examples[i:i + batch]).to(device)
            with autocast(device, dtype):
                out.extend(model(b, mode).energy.tolist())
    return np.asarray(out)


def precision_rows(model, tok, examples, device) -> list[str]:
    import numpy as np
    import torch

    rows = []
    dtypes = [("bf16", torch.bfloat16)] + ([("fp16", torch.float16)] if device.type == "cuda" else [])
    for mode in MODES:
        ref = energies(model, tok, examples, mode, device, None)
        for name, dt in dtypes:
            t0 = time.perf_counter()
            d = np.abs(energies(model, tok, examples, mode, device, dt) - ref)
            rows.append(f"| {device.type} | {mode} | {name} | {len(d)} | {d.max():.4f} | {d.mean():.4f} | "
                        f"{np.quantile(d, 0.99):.4f} | {time.perf_counter() - t0:.1f} s |")
            log(rows[-1])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "qecat-emt-v1"))
    ap.add_argument("--n", type=int, default=2048, help="structures per GPU measurement")
    ap.add_argument("--cpu-n", type=int, default=256, help="structures per CPU measurement")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: few structures, batch 32 only")
    ap.add_argument("--accuracy-only", action="store_true", help="only the reduced-precision table")
    ap.add_argument("--device", default=None, help="with --accuracy-only: cpu | cuda (default: every one here)")
    ap.add_argument("--budget-s", type=float, default=420.0)
    args = ap.parse_args()
    import torch

    from qecat_core.model.checkpoint import load_model

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    gpu = torch.device("cuda", torch.cuda.current_device()) if cuda else None
    cpu = torch.device("cpu")
    if args.quick:
        args.n, args.cpu_n = 128, 64
    name = torch.cuda.get_device_name(gpu) if cuda else "none"
    print(f"torch {torch.__version__}; CUDA: {'yes, ' + name if cuda else 'no (torch.cuda.is_available() is False)'}; "
          f"{args.threads} CPU threads; checkpoint {args.checkpoint}")
    if not cuda:
        print("No CUDA here: GPU rows not measured (run this script on a GPU machine).")
    model, tok = load_model(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        structures = make_structures(Path(tmp))
        examples = featurise(model, structures)
        atoms = sum(int(e.data["pos"].shape[0]) for e in examples) / len(examples)
        print(f"{len(structures)} enumerated structures, {atoms:.1f} atoms each after cropping "
              f"(enumerate + featurise {time.perf_counter() - t0:.1f} s); model {model.model_id}\n")

    devices = [d for d in ([gpu] if cuda else []) + [cpu]
               if args.device is None or d.type == torch.device(args.device).type]
    if args.accuracy_only:
        print("| device | mode | precision | structures | max abs dE (eV) | mean abs dE (eV) | p99 (eV) | time |")
        print("|---|---|---|---|---|---|---|---|")
        for dev in devices:
            model.to(dev)
            print("\n".join(precision_rows(model, tok, examples, dev)))
        return 0

    print("Model rate: collate + to(device) + forward + energies to host, featurised structures")
    print("\n| device | mode | batch | structures | structures/s | peak GPU memory (MiB) |")
    print("|---|---|---|---|---|---|")
    batches = (32, 256) if args.quick else GPU_BATCHES
    if cuda:
        model.to(gpu)
        for mode in MODES:
            for b in batches:
                if time.perf_counter() - t_start > args.budget_s:
                    print(f"| cuda | {mode} | {b} | (skipped: --budget-s {args.budget_s:.0f} s reached) | | |")
                    continue
                try:
                    r = model_rate(model, tok, examples, mode, b, max(args.n, b), gpu)
                    print(f"| cuda | {mode} | {b} | {r['n']} | {r['rate']:.0f} | {r['peak_mib']:.0f} |", flush=True)
                except Exception as exc:  # e.g. out of memory: the other rows still run
                    print(f"| cuda | {mode} | {b} | error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]} | | |")
                    torch.cuda.empty_cache()
    model.to(cpu)
    for mode in MODES:
        r = model_rate(model, tok, examples, mode, 32, args.cpu_n, cpu)
        print(f"| cpu ({args.threads} threads) | {mode} | 32 | {r['n']} | {r['rate']:.0f} | – |", flush=True)

    print("\nEnd to end: predict_structures on Atoms (tags, text, crop, graph data on the CPU, then the model)")
    print("\n| device | mode | batch | structures | structures/s |")
    print("|---|---|---|---|---|")
    for dev, b, n in ([(gpu, 256, min(args.n, 1024))] if cuda else []) + [(cpu, 32, args.cpu_n)]:
        model.to(dev)
        for mode in MODES:
            if dev.type == "cuda" and time.perf_counter() - t_start > args.budget_s:
                print(f"| cuda | {mode} | {b} | (skipped: budget) | |")
                continue
            r = end_to_end(model, tok, structures, mode, b, n, dev)
            print(f"| {dev.type} | {mode} | {b} | {n} | {r['rate']:.0f} |", flush=True)

    if not args.quick:
        print("\nReduced precision vs fp32 (autocast), the enumerated structures")
        if cuda:  # the CPU's: --accuracy-only --device cpu (about a minute on 2 cores)
            print("\n| device | mode | precision | structures | max abs dE (eV) | mean abs dE (eV) | p99 (eV) | time |")
            print("|---|---|---|---|---|---|---|---|")
            model.to(gpu)
            try:
                print("\n".join(precision_rows(model, tok, examples, gpu)))
            except Exception as exc:
                print(f"| cuda | error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]} |")
        print("(on the CPU: python benchmarks/gpu_predict.py --accuracy-only --device cpu)")

    if cuda and not args.quick:
        print("\nGPU neighbour list: nvalchemiops (QECAT_NEIGHBOR_LIST=nvalchemi) vs fairchem's PyTorch one")
        print("\n| mode | batch | neighbour list | structures/s | max abs dE vs torch (eV) |")
        print("|---|---|---|---|---|")
        try:
            import numpy as np
            from fairchem.core.graph.radius_graph_pbc_nvidia import nvalchemiops_installed

            if not nvalchemiops_installed():
                print("| – | – | nvalchemiops not importable | | |")
            elif time.perf_counter() - t_start > args.budget_s + 60:
                print("| – | – | (skipped: budget) | | |")
            else:
                model.to(gpu)
                for mode in ("graph", "fused"):
                    ref = energies(model, tok, examples, mode, gpu, None)
                    r0 = model_rate(model, tok, examples, mode, 256, args.n, gpu)
                    os.environ["QECAT_NEIGHBOR_LIST"] = "nvalchemi"
                    try:
                        e = energies(model, tok, examples, mode, gpu, None)
                        r1 = model_rate(model, tok, examples, mode, 256, args.n, gpu)
                    finally:
                        os.environ.pop("QECAT_NEIGHBOR_LIST", None)
                    print(f"| {mode} | 256 | torch (default) | {r0['rate']:.0f} | 0 |")
                    print(f"| {mode} | 256 | nvalchemi | {r1['rate']:.0f} | {np.abs(e - ref).max():.2e} |", flush=True)
        except Exception as exc:
            print(f"| error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]} | | | | |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
