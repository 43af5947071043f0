"""Any adsorbate on any surface: molecules perceived with RDKit, fcc/hcp/bcc slabs, ``qecat describe``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import add_adsorbate, bcc110, fcc111, hcp0001
from ase.io import write
from typer.testing import CliRunner

from qecat_core.cli.main import app
from qecat_core.common.tags import ensure_tags
from qecat_core.enumerate.describe import describe_atoms, describe_structures
from qecat_core.enumerate.infer import (
    adsorbate_molecule,
    complete_metadata,
    infer_adsorbate,
    infer_surface,
)
from qecat_core.enumerate.molecules import molecule_smiles
from qecat_core.model.data import example_from_atoms

PT10 = " ".join(["Pt"] * 10)


def molecule(smiles: str, seed: int = 7) -> Atoms:
    """A 3D molecule from RDKit's ETKDG (fixed seed) and MMFF."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(m, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(m)
    return Atoms([a.GetSymbol() for a in m.GetAtoms()], positions=m.GetConformer().GetPositions())


def index_of(mol: Atoms, symbol: str) -> int:
    return mol.get_chemical_symbols().index(symbol)


def upright(mol: Atoms, b: int) -> Atoms:
    """``mol`` with atom ``b`` at the origin and the rest of the molecule above it (+z)."""
    mol = mol.copy()
    mol.positions -= mol.positions[b]
    mol.rotate(np.delete(mol.positions, b, axis=0).mean(axis=0), (0, 0, 1))
    return mol


def pt111() -> Atoms:
    slab = fcc111("Pt", (3, 3, 4), vacuum=10.0)
    slab.set_tags([0] * 18 + [1] * 18)
    slab.info.pop("adsorbate_info", None)  # (ASE's; extxyz cannot write a dict)
    return slab


def on_slab(slab: Atoms, mol: Atoms, anchor: int, xy, height: float) -> Atoms:
    """``mol`` with atom ``anchor`` ``height`` Å above the slab's top, over ``xy``; tags 2."""
    mol = mol.copy()
    mol.positions += np.array([xy[0], xy[1], slab.positions[:, 2].max() + height]) - mol.positions[anchor]
    mol.set_tags(2)
    return slab.copy() + mol


def acetamide_on_pt() -> Atoms:
    slab = pt111()
    mol = molecule("CC(N)=O")
    o = index_of(mol, "O")
    return on_slab(slab, upright(mol, o), o, slab.positions[-1, :2], 2.1)  # O atop


def methanethiol_on_pt() -> Atoms:
    slab = pt111()
    mol = molecule("CS")
    s = index_of(mol, "S")
    return on_slab(slab, upright(mol, s), s, slab.positions[-1, :2], 2.3)  # S atop


def benzene_on_pt() -> Atoms:
    """Benzene flat, 2.1 Å above a 3-fold hollow, every other C over a Pt atom."""
    slab = pt111()
    t0 = slab.positions[-1]
    v1, v2 = slab.cell[0] / 3, slab.cell[1] / 3  # nearest-neighbour vectors, 60 degrees apart
    hollow = t0 + (v1 + v2) / 3  # the centre of the triangle t0, t0 + v1, t0 + v2
    mol = molecule("c1ccccc1")
    mol.positions -= mol.positions.mean(axis=0)
    heavy = mol.positions[[s == "C" for s in mol.get_chemical_symbols()]]
    mol.rotate(np.linalg.svd(heavy)[2][2], (0, 0, 1))  # ring plane -> xy
    c0 = index_of(mol, "C")
    mol.rotate(np.append(mol.positions[c0, :2], 0.0), np.append(t0[:2] - hollow[:2], 0.0))
    mol.positions += [hollow[0], hollow[1], slab.positions[:, 2].max() + 2.1]
    mol.set_tags(2)
    return slab + mol


# ---------------------------------------------------------------------------------------------------
# golden strings


def test_hcp0001_ru_with_o():
    slab = hcp0001("Ru", (2, 2, 4), vacuum=8.0)
    add_adsorbate(slab, "O", 1.2, "fcc")
    slab.info.pop("adsorbate_info", None)
    row = describe_atoms(slab)  # ASE's layer tags: re-tagged
    ru10 = " ".join(["Ru"] * 10)
    assert row["text"] == f"O</s>Ru (0 0 1)</s>[O Ru Ru Ru hollow [{ru10} O] [{ru10} O] [{ru10} O]]"
    assert (row["adsorbate"], row["lattice"], row["miller"], row["site_type"]) == ("*O", "hcp", "(0 0 1)", "hollow")
    assert row["inferred"] == "adsorbate,bulk_formula,lattice,miller" and row["error"] is None
    assert example_from_atoms(slab).text == row["text"]  # qecat predict: the same string


def test_bcc110_fe_with_oh():
    slab = bcc110("Fe", (2, 2, 4), vacuum=8.0)
    add_adsorbate(slab, "O", 1.3, "hollow")
    slab += Atoms("H", positions=[slab.positions[-1] + [0, 0, 0.97]])
    slab.info.pop("adsorbate_info", None)
    row = describe_atoms(slab)
    fe11 = " ".join(["Fe"] * 11)
    assert row["text"] == f"OH</s>Fe (1 1 0)</s>[O Fe Fe Fe hollow [{fe11} O] [{fe11} O] [{fe11} O]]"
    assert (row["adsorbate"], row["smiles"], row["lattice"]) == ("*OH", "*[OH]", "bcc")
    assert example_from_atoms(slab).text == row["text"]


def test_acetamide_binding_through_o():
    a = acetamide_on_pt()
    row = describe_atoms(a)
    assert row["text"] == f"O=C(C)N</s>Pt (1 1 1)</s>[O Pt atop [{PT10} O]]"
    assert (row["adsorbate"], row["formula"], row["binding_atoms"], row["bond_orders"]) == (
        "*O=C(C)N", "C2H5NO", "O", True)
    assert example_from_atoms(a).text == row["text"]


def test_methanethiol_binding_through_s():
    a = methanethiol_on_pt()
    row = describe_atoms(a)
    assert row["text"] == f"SC</s>Pt (1 1 1)</s>[S Pt atop [{PT10} S]]"
    assert row["adsorbate"] == "*SC" and row["formula"] == "CH4S"
    untagged = a.copy()
    untagged.set_tags(0)  # S counts as an adsorbate element
    assert (ensure_tags(untagged).get_tags() == a.get_tags()).all()
    assert describe_atoms(untagged)["text"] == row["text"]


def test_benzene_flat_on_pt111():
    a = benzene_on_pt()
    row = describe_atoms(a)
    assert row["adsorbate"] == "*c1c*cc*cc1" and row["binding_atoms"] == "C C C"
    assert row["site_type"] == "atop atop atop"
    assert row["text"] == "c1ccccc1</s>Pt (1 1 1)</s>" + f"[C Pt atop [{PT10} C]]" * 3


# ---------------------------------------------------------------------------------------------------
# canonical SMILES


@pytest.mark.parametrize("build", [acetamide_on_pt, methanethiol_on_pt, benzene_on_pt])
def test_smiles_invariant_under_moves_and_atom_order(build):
    a = build()
    ref = adsorbate_molecule(a).smiles
    rng = np.random.default_rng(3)
    n_slab = int((a.get_tags() != 2).sum())
    for k in range(6):
        b = a.copy()
        ads = np.arange(n_slab, len(b))
        # rotate the adsorbate about the normal through its centre, move it by a lattice vector and wrap
        centre = b.positions[ads].mean(axis=0)
        rot = Atoms(positions=b.positions[ads] - centre)
        rot.rotate(120 * k, "z")
        b.positions[ads] = rot.positions + centre + (k % 3) * b.cell[0] / 3 + (k // 3) * b.cell[1] / 3
        b.wrap()
        perm = np.concatenate([rng.permutation(n_slab), n_slab + rng.permutation(len(ads))])
        b = b[perm]
        assert adsorbate_molecule(b).smiles == ref, k


@pytest.mark.parametrize("smiles,binding,expected", [
    ("CC(N)=O", ["O"], "*O=C(C)N"), ("CS", ["S"], "*SC"), ("OCC", ["O"], "*OCC"),
    ("c1ccccc1", [], "c1ccccc1"), ("OCCO", ["O", "O"], "*OCC*O"), ("C=C", ["C", "C"], "*C=*C"),
])
def test_smiles_invariant_under_rotation_and_permutation(smiles, binding, expected):
    from scipy.spatial.transform import Rotation

    mol = molecule(smiles)
    sym = mol.get_chemical_symbols()
    bind = [i for i, s in enumerate(sym) if s in binding][:len(binding)]  # (OCCO, C=C: both ends)
    rng = np.random.default_rng(0)
    seen = set()
    for trial in range(10):
        perm = rng.permutation(len(sym))
        inv = np.argsort(perm)
        pos = mol.positions @ Rotation.random(random_state=trial).as_matrix().T + rng.normal(0, 5, 3)
        seen.add(molecule_smiles([sym[i] for i in perm], pos[perm], [int(inv[i]) for i in bind]).smiles)
    assert seen == {expected}


def test_meta_binding_on_a_ring_is_canonical():
    mol = molecule("c1ccccc1")
    c = [i for i, s in enumerate(mol.get_chemical_symbols()) if s == "C"]
    ring = sorted(c, key=lambda i: np.arctan2(*(mol.positions[i] - mol.positions[c].mean(axis=0))[:2]))
    out = {molecule_smiles(mol.get_chemical_symbols(), mol.positions, [ring[k], ring[(k + 2) % 6]]).smiles
           for k in range(6)}
    assert out == {"*c1ccc*cc1"}


def test_radicals_and_fragments_are_written_from_connectivity():
    m = molecule("CCO")
    o = index_of(m, "O")
    hydroxyl = next(i for i in range(len(m)) if m[i].symbol == "H" and m.get_distance(i, o) < 1.1)
    keep = [i for i in range(len(m)) if i != hydroxyl]
    r = molecule_smiles(m[keep].get_chemical_symbols(), m[keep].positions, [keep.index(o)])
    assert (r.smiles, r.formula, r.bond_orders) == ("*[O]CC", "C2H5O", False)  # ethoxy: a radical
    apart = m.copy()
    apart.positions[hydroxyl] += 3 * (apart.positions[hydroxyl] - apart.positions[o])  # an H atom apart
    r = molecule_smiles(apart.get_chemical_symbols(), apart.positions, [o])
    assert (r.smiles, r.bond_orders) == ("*[O]CC.[H]", False)  # not [O-]CC.[H+]


# ---------------------------------------------------------------------------------------------------
# surfaces


def test_sn_fcc111_slab_is_fcc111():
    slab = fcc111("Sn", (3, 3, 4), a=4.6, vacuum=8.0)
    add_adsorbate(slab, "O", 1.1, "fcc")
    slab.info.pop("adsorbate_info", None)
    a = ensure_tags(slab)
    assert infer_surface(a).lattice == "fcc" and infer_surface(a).miller == (1, 1, 1)
    row = describe_atoms(slab)
    assert row["text"].startswith("O</s>Sn (1 1 1)</s>[O Sn Sn Sn hollow")


@pytest.mark.parametrize("build,miller,lattice", [
    (lambda: hcp0001("Zn", (3, 3, 4), vacuum=8.0), (0, 0, 1), "hcp"),
    (lambda: bcc110("Fe", (3, 3, 4), vacuum=8.0), (1, 1, 0), "bcc"),
    (lambda: fcc111("Cu", (3, 3, 4), vacuum=8.0), (1, 1, 1), "fcc"),
])
def test_lattice_and_miller_of_alloys_and_rotated_cells(build, miller, lattice):
    slab = build()
    slab.symbols[::3] = "Ni" if lattice != "hcp" else "Cd"  # an alloy: the lattice of its sites
    slab.set_tags(1)
    slab.rotate(23, "z", rotate_cell=True)
    assert (infer_surface(slab).lattice, infer_surface(slab).miller) == (lattice, miller)
    squeezed = slab.copy()
    squeezed.positions[:, 2] *= 0.95  # a strained slab keeps its lattice
    assert infer_surface(squeezed).miller == miller


def test_facet_is_a_spelling_of_lattice_and_miller():
    slab = hcp0001("Ru", (2, 2, 3), vacuum=8.0)  # 3 layers: too thin for the geometry to tell hcp
    add_adsorbate(slab, "O", 1.2, "fcc")
    slab.info.pop("adsorbate_info", None)
    a = ensure_tags(slab.copy())
    assert infer_surface(a).miller is None
    a.info["facet"] = "hcp(0001)"
    assert complete_metadata(a) == ["adsorbate", "bulk_formula"] and a.info["miller"] == (0, 0, 1)
    row = describe_atoms(_with_info(slab, facet="hcp(0001)"))
    assert (row["lattice"], row["miller"], row["given"]) == ("hcp", "(0 0 1)", "lattice,miller")
    assert row["text"].startswith("O</s>Ru (0 0 1)</s>[O Ru Ru Ru hollow")


def _with_info(atoms: Atoms, **info) -> Atoms:
    out = atoms.copy()
    out.info.update(info)
    return out


def test_oc20_adsorbates_keep_their_oc20_names():
    slab = pt111()
    mol = molecule("CO")  # methanol, bound through O: OC20's *OHCH3
    o = index_of(mol, "O")
    a = on_slab(slab, upright(mol, o), o, slab.positions[-1, :2], 2.2)
    assert infer_adsorbate(a) == "*OHCH3" and adsorbate_molecule(a).smiles == "*OC"


# ---------------------------------------------------------------------------------------------------
# qecat describe


def _fg_like_file(tmp_path) -> tuple:
    good = [acetamide_on_pt(), methanethiol_on_pt(), benzene_on_pt()]
    bare_slab = pt111()
    bare_slab.set_tags(0)
    rows = [good[0], bare_slab, good[1], good[2]]
    for r in rows:
        r.set_constraint()
    rows[2].info["sid"] = "my-thiol"
    path = tmp_path / "mixed.extxyz"
    write(path, rows)
    return path, good


def test_describe_one_error_row_and_the_rest_described(tmp_path):
    path, good = _fg_like_file(tmp_path)
    df = describe_structures(path)
    assert len(df) == 4 and df["error"].notna().tolist() == [False, True, False, False]
    assert "no adsorbate atoms" in df["error"][1] and df["source"][1] == f"{path}:1"
    assert df["sid"][2] == "my-thiol" and df["sid"][0].startswith("h-") and df["sid"][1].startswith("h-")
    assert df["adsorbate"].tolist()[2:] == ["*SC", "*c1c*cc*cc1"]
    assert df["text"][0] == describe_atoms(good[0])["text"]
    assert set(df["given"].dropna()) == {""} and (df["inferred"][0] == "adsorbate,bulk_formula,lattice,miller")


def test_cli_describe(tmp_path):
    path, _ = _fg_like_file(tmp_path)
    out = tmp_path / "d.parquet"
    r = CliRunner().invoke(app, ["describe", str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "3 described, 1 with errors" in r.output
    df = pd.read_parquet(out)
    assert len(df) == 4 and list(df.columns)[:3] == ["sid", "source", "adsorbate"]
    assert df["miller"].isna().tolist() == [False, True, False, False] and set(df["miller"].dropna()) == {"(1 1 1)"}
    r = CliRunner().invoke(app, ["describe", str(tmp_path / "missing.extxyz"), "-o", str(out)])
    assert r.exit_code == 2 and "no such file" in r.output
