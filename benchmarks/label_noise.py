"""How reproducible the labels' placement ranking is: relabel a split from imperceptibly moved starts.

    python benchmarks/label_noise.py --data-dir data/emt-v1 --split val-id --sigma 0.001 --repeats 3

Every flag-free structure of the split is relaxed again from its *initial* structure with the
labeller's protocol (EMT, BFGS on the free atoms, fmax 0.05 eV/Å, at most 300 steps), once as
stored (which must reproduce the label's total energy: a check of the protocol) and ``--repeats``
times with every free atom moved by a Gaussian of ``--sigma`` Å per coordinate (seeded). How well
the relabelled energies rank a system's placements against the labels measures how much of that
ranking a start known only to within ``--sigma`` still determines. (A moved start can also break a
symmetry that the dataset's exact starts keep, so this is a sensitivity, not a proven ceiling.)

E_ads of a rerun = label E_ads + (rerun total energy − label total energy): the clean slab and the
gas references are unchanged.

Prints the per-system Spearman ρ (``discrimination``, the metric of ``qecat evaluate``) of each
rerun against the labels, of the mean of the reruns against the labels, and (``--checkpoint``) the
model's fused ρ against the labels and against the mean of the reruns.

``--maxstep`` (Å) changes the protocol: BFGS moves no atom by more than that in one step (the
labeller uses ASE's default, 0.2 Å). The unperturbed rerun is then a relabelling of its own: it is
compared with the labels, and the moved reruns and their mean are scored against it instead of the
labels. (With the labeller's protocol the unperturbed rerun *is* the labels, so both readings agree.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from multiprocessing import get_context

import numpy as np
import pandas as pd

import qecat_core  # noqa: F401

_CALC: dict = {}


def perturbed(atoms, sid: str, sigma: float, seed: int):
    """A copy of ``atoms`` with every free atom moved by N(0, sigma²) Å per coordinate (seeded by sid)."""
    from qecat_core.common.hashing import fixed_mask

    atoms = atoms.copy()
    if sigma > 0:
        rng = np.random.default_rng([seed, int(hashlib.sha256(sid.encode()).hexdigest()[:12], 16)])
        free = ~fixed_mask(atoms)
        atoms.positions[free] += rng.normal(0.0, sigma, size=(int(free.sum()), 3))
    return atoms


def _rerun(task: tuple[str, object, float, int, float, int, float | None]) -> tuple[str, int, float, int]:
    from qecat_core.calculators.registry import get_calculator
    from qecat_core.label.relax import relax

    sid, atoms, sigma, seed, fmax, steps, maxstep = task
    if "emt" not in _CALC:
        _CALC["emt"] = get_calculator("emt")
    atoms = perturbed(atoms, sid, sigma, seed)
    energy, n, _, _ = relax(atoms, _CALC["emt"], fmax, steps, maxstep)
    return sid, seed, energy, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="data/emt-v1")
    ap.add_argument("--split", default="val-id")
    ap.add_argument("--sigma", type=float, default=0.001, help="Å, per coordinate of each free atom")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fmax", type=float, default=0.05, help="eV/Å (the labeller's default)")
    ap.add_argument("--steps", type=int, default=300, help="(the labeller's default)")
    ap.add_argument("--maxstep", type=float, default=None,
                    help="Å, BFGS's largest step (default: ASE's 0.2 Å, the labeller's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="also score this model's fused prediction")
    ap.add_argument("-o", "--out", default=None, help="write the reruns' energies to this parquet")
    args = ap.parse_args()
    if args.repeats < 1 or args.sigma <= 0:
        ap.error("--repeats must be >= 1 and --sigma > 0 (the unperturbed rerun always runs as the check)")
    if args.maxstep is not None and args.maxstep <= 0:
        ap.error("--maxstep must be > 0 (Å)")

    from tqdm import tqdm

    from qecat_core.common.structures import iter_structures
    from qecat_core.model.evaluate import discrimination

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    labels = pd.read_parquet(f"{args.data_dir}/labels.parquet", columns=["sid", "e_ads", "e_total", "anomaly"])
    labels = labels[~labels["anomaly"]].set_index("sid")
    initial, system = {}, {}
    for atoms in iter_structures(f"{args.data_dir}/{args.split}.aselmdb"):
        sid = atoms.info["sid"]
        if sid in labels.index:
            initial[sid] = atoms
            system[sid] = atoms.info["system_id"]
    seeds = [0] + list(range(1, args.repeats + 1))
    tasks = [(sid, atoms, 0.0 if s == 0 else args.sigma, s, args.fmax, args.steps, args.maxstep)
             for s in seeds for sid, atoms in initial.items()]
    t0 = time.perf_counter()
    with get_context("spawn").Pool(args.workers) as pool:
        out = list(tqdm(pool.imap_unordered(_rerun, tasks, chunksize=8), total=len(tasks), desc="relax"))
    runs = pd.DataFrame(out, columns=["sid", "seed", "e_total", "n_steps"])
    print(f"{len(initial)} flag-free {args.split} structures x {len(seeds)} runs in "
          f"{time.perf_counter() - t0:.0f} s ({args.workers} processes)")
    if args.out:
        runs.to_parquet(args.out)

    wide = runs.pivot(index="sid", columns="seed", values="e_total")
    lab = labels.loc[wide.index]
    dev0 = np.abs(wide[0] - lab["e_total"])
    print(f"unperturbed rerun vs label total energy: max |diff| {dev0.max():.2e} eV "
          f"({int((dev0 > 1e-6).sum())} of {len(dev0)} differ by > 1 µeV)")
    groups = [system[s] for s in wide.index]
    y = lab["e_ads"].to_numpy()
    reruns = {s: y + (wide[s] - lab["e_total"]).to_numpy() for s in seeds[1:]}
    ref, ref_name = y, "labels"
    if args.maxstep is not None:  # another protocol: its own unperturbed relabelling is the reference
        ref, ref_name = y + (wide[0] - lab["e_total"]).to_numpy(), f"unperturbed rerun (maxstep {args.maxstep} Å)"
        d = ref - y
        print(f"{ref_name} vs labels: MAE {np.abs(d).mean():.4f} eV, > 0.1 eV {(np.abs(d) > 0.1).mean():.1%}, "
              f"rho {discrimination(y, ref, groups)[0]:.3f}; median BFGS steps "
              f"{runs[runs.seed == 0].n_steps.median():.0f}")
    for s, e in reruns.items():
        d = e - ref
        rho, n = discrimination(ref, e, groups)
        print(f"rerun {s} (sigma {args.sigma} Å) vs {ref_name}: MAE {np.abs(d).mean():.4f} eV, "
              f"|diff| > 10 meV {(np.abs(d) > 0.01).mean():.1%}, > 0.1 eV {(np.abs(d) > 0.1).mean():.1%}, "
              f"rho {rho:.3f} ({n} systems)")
    mean = np.mean(list(reruns.values()), axis=0)
    rho, n = discrimination(ref, mean, groups)
    print(f"mean of the {len(reruns)} reruns vs {ref_name}: rho {rho:.3f} ({n} systems)")
    if len(reruns) >= 2:
        pair = [discrimination(reruns[a], reruns[b], groups)[0] for a in reruns for b in reruns if a < b]
        print(f"rerun vs rerun: rho {np.mean(pair):.3f} (mean of {len(pair)} pairs)")

    if args.checkpoint:
        import torch

        from qecat_core.model.checkpoint import load_model
        from qecat_core.model.data import StructureDataset
        from qecat_core.model.evaluate import predict_dataset

        torch.set_num_threads(args.workers)
        model, tok = load_model(args.checkpoint)
        ds = StructureDataset([initial[s] for s in wide.index])
        yp = predict_dataset(model, ds, tok, "fused").set_index("sid").loc[wide.index, "e_ads_pred"].to_numpy()
        for name, target in (("labels", y), (f"mean of the {len(reruns)} reruns", mean)):
            rho, n = discrimination(target, yp, groups)
            print(f"{args.checkpoint} fused vs {name}: MAE {np.abs(target - yp).mean():.4f} eV, rho {rho:.3f} ({n} systems)")
        # the model's own sensitivity: the same moved starts as rerun 1
        moved = StructureDataset([perturbed(initial[s], s, args.sigma, 1) for s in wide.index])
        ym = predict_dataset(model, moved, tok, "fused").set_index("sid").loc[wide.index, "e_ads_pred"].to_numpy()
        print(f"moving the starts as in rerun 1 changes the fused prediction by {np.abs(ym - yp).mean():.4f} eV "
              f"(mean |diff|; the label by {np.abs(reruns[1] - y).mean():.4f} eV); "
              f"rho of the moved prediction vs labels {discrimination(y, ym, groups)[0]:.3f}")


if __name__ == "__main__":
    main()
