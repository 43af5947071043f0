"""Metadata inferred from bare fg-dft structures vs. the source's: molecular formula and facet, per lattice.

    python benchmarks/fg_inference.py [--path FILE] [--tags keep|drop] [--positions initial|relaxed]

Reads ``fg_train.extxyz`` (``../shared/data/fg-dft``: GAME-Net's FG-dataset, closed-shell C/H/O/N/S
molecules on fcc(111), hcp(0001) and bcc(110) of 14 metals), strips every structure to numbers,
positions, cell, pbc and tags (no ``atoms.info`` key, no ``move_mask``; ``--tags drop`` drops the tags
too, so that :func:`qecat_core.common.tags.ensure_tags` infers them), and describes it as ``qecat
describe`` does (:func:`qecat_core.enumerate.describe.describe_atoms`). A structure counts as right

* for the molecule when the formula of the inferred adsorbate (the OC20 adsorbate's atoms, or the
  RDKit SMILES read back with its hydrogens) equals the Hill formula of the source's ``molecule`` key;
* for the facet when the inferred lattice and Miller index equal the source's ``facet``.

Prints the table of docs/structures.md ("Structures from elsewhere: inferred metadata on fg-dft") and how the adsorbates were named.
About 1.5 min on one core.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fg-dft" / "fg_train.extxyz"


def adsorbate_formula(name: str | None) -> str | None:
    """Hill formula of an inferred adsorbate: an OC20 SMILES (its atoms) or an RDKit SMILES (with its Hs)."""
    from rdkit import Chem, rdBase

    from qecat_core.catalog.adsorbates import load_adsorbates
    from qecat_core.enumerate.molecules import hill_formula

    if not name:
        return None
    oc20 = load_adsorbates().get(name)
    if oc20 is not None:
        return hill_formula(oc20.atoms.get_chemical_symbols())
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(name.replace("*", ""))
    if mol is None:
        return None
    return hill_formula([a.GetSymbol() for a in Chem.AddHs(mol).GetAtoms()])


def _unmarked(smiles: str | None) -> str | None:
    """RDKit's canonical SMILES of a perceived SMILES without its binding marks."""
    from rdkit import Chem, rdBase

    if not smiles:
        return None
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles.replace("*", ""))
    return Chem.MolToSmiles(mol) if mol is not None else smiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", type=Path, default=DEFAULT)
    ap.add_argument("--tags", choices=("keep", "drop"), default="keep", help="keep the OC20 tags, or infer them")
    ap.add_argument("--positions", choices=("initial", "relaxed"), default="initial",
                    help="initial (POSCAR) or relaxed (pos_relaxed, CONTCAR) positions")
    ap.add_argument("--limit", type=int, default=None, help="only the first N structures")
    args = ap.parse_args()

    import ase.io
    from ase import Atoms

    from qecat_core.catalog.adsorbates import load_adsorbates
    from qecat_core.enumerate.describe import describe_atoms
    from qecat_core.enumerate.infer import parse_facet

    t0 = time.perf_counter()
    source = ase.io.read(args.path, index=":" if args.limit is None else f":{args.limit}")
    n_by = collections.Counter()
    right = collections.Counter()
    naming = collections.Counter()
    errors = collections.Counter()
    per_molecule: dict[str, set] = collections.defaultdict(set)
    for src in source:
        pos = src.arrays["pos_relaxed"] if args.positions == "relaxed" else src.positions
        bare = Atoms(numbers=src.numbers, positions=pos, cell=src.cell, pbc=src.pbc,
                     tags=src.get_tags() if args.tags == "keep" else None)
        row = describe_atoms(bare, name=str(src.info["sid"]))
        lattice, miller = parse_facet(src.info["facet"])
        want = str(src.info["molecule"]).split(":", 1)[1]
        ok_formula = adsorbate_formula(row["adsorbate"]) == want
        ok_facet = row["lattice"] == lattice and row["miller"] == "(" + " ".join(map(str, miller)) + ")"
        for key in (lattice, "all"):
            n_by[key] += 1
            right[key, "formula"] += ok_formula
            right[key, "facet"] += ok_facet
            right[key, "both"] += ok_formula and ok_facet
        per_molecule[str(src.info["molecule_uid"])].add(_unmarked(row["smiles"]))
        if row["error"]:
            errors[row["error"].split(": ", 1)[-1][:60]] += 1
        if row["adsorbate"]:
            naming["OC20 adsorbate" if row["adsorbate"] in load_adsorbates() else "RDKit SMILES"] += 1
            naming["bond orders from the geometry" if row["bond_orders"] else "connectivity only"] += 1
            naming["bound (1.1 x covalent radii)" if row["binding_atoms"] else "no atom bound (no '*')"] += 1
    dt = time.perf_counter() - t0

    print(f"{args.path.name}: {n_by['all']} structures, positions {args.positions}, tags {args.tags}, "
          f"{dt:.0f} s\n")
    print("| lattice | structures | formula right | facet right | both |")
    print("|---|---:|---:|---:|---:|")
    for key in ("fcc", "hcp", "bcc", "all"):
        n = n_by[key]
        if not n:
            continue
        cells = [f"{right[key, c]} ({100 * right[key, c] / n:.1f} %)" for c in ("formula", "facet", "both")]
        print(f"| {key if key != 'all' else '**all**'} | {n} | " + " | ".join(cells) + " |")
    print()
    for what, n in naming.items():
        print(f"- {what}: {n}")
    same = sum(len(v) == 1 for v in per_molecule.values())
    print(f"- molecules (molecule_uid) all of whose structures give one SMILES (without '*', canonical): "
          f"{same} of {len(per_molecule)}")
    for what, n in errors.most_common(5):
        print(f"- error ({n}): {what}")


if __name__ == "__main__":
    main()
