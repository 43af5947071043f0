"""Tests for labelling (qecat_core.label), its references, anomaly flags and calculator registry.

Energies in eV, distances in Å. The factories below are used as ``tests.test_label:NAME``
calculator specs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc111, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import write
from ase.optimize import BFGS

import qecat_core  # noqa: F401  (one BLAS thread)
from qecat_core.calculators.registry import calculator_info, get_calculator
from qecat_core.common.errors import InputError, QecatError
from qecat_core.common.structures import iter_structures
from qecat_core.label.anomaly import has_surface_changed, is_desorbed, is_dissociated
from qecat_core.label.references import chemical_potentials, reference_energy
from qecat_core.label.relax import COLUMNS, label, parts_dir, structures_path

# ---------------------------------------------------------------------------------------------
# calculator factories (importable as tests.test_label:<name>)

EVALUATIONS: list[int] = []  # len(atoms) of every CountingEMT evaluation
CRASH_ON: dict[str, str | None] = {"symbol": None}  # raise on structures holding it (simulated crash)


class CountingEMT(EMT):
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        EVALUATIONS.append(len(atoms))
        if CRASH_ON["symbol"] is not None and CRASH_ON["symbol"] in atoms.get_chemical_symbols():
            raise RuntimeError("simulated crash")
        super().calculate(atoms, properties, system_changes)


class ZeroForces(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3))}


class AdsorbateRepulsion(Calculator):
    """E = sum over adsorbate pairs of 1/d (eV, d in Å): pushes adsorbate atoms apart."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pos = self.atoms.positions
        ads = np.nonzero(self.atoms.get_tags() == 2)[0]
        energy, forces = 0.0, np.zeros((len(pos), 3))
        for a in ads:
            for b in ads:
                if a < b:
                    r = pos[a] - pos[b]
                    d = np.linalg.norm(r)
                    energy += 1.0 / d
                    forces[a] += r / d ** 3
                    forces[b] -= r / d ** 3
        self.results = {"energy": energy, "forces": forces}


def counting_emt() -> Calculator:
    return CountingEMT()


def zero_forces() -> Calculator:
    return ZeroForces()


def adsorbate_repulsion() -> Calculator:
    return AdsorbateRepulsion()


# ---------------------------------------------------------------------------------------------
# structures


def cu111(size: tuple[int, int, int] = (2, 2, 3)) -> Atoms:
    """Cu(111) slab with OC20 tags: top layer 1 (free), the rest 0 (fixed)."""
    slab = fcc111("Cu", size, a=3.593, vacuum=8.0)
    slab.set_tags(np.where(slab.get_tags() == 1, 1, 0))
    slab.set_constraint(FixAtoms(mask=slab.get_tags() == 0))
    return slab


def on_cu111(species: Atoms | str, site: str, height: float = 1.5, size: tuple[int, int, int] = (2, 2, 3),
             **info) -> Atoms:
    """``species`` on Cu(111) at ``site``, ``height`` Å above the top layer; ``info`` -> atoms.info."""
    slab = cu111(size)
    ads = Atoms(species) if isinstance(species, str) else species
    n = len(slab)
    add_adsorbate(slab, ads, height, site)
    tags = slab.get_tags()
    tags[n:] = 2
    slab.set_tags(tags)
    slab.set_constraint(FixAtoms(mask=tags == 0))
    slab.info.clear()  # drop ASE's adsorbate_info
    slab.info.update(info)
    return slab


def hydroxyl() -> Atoms:
    return Atoms("OH", [[0, 0, 0], [0, 0, 0.97]])


def write_inputs(path: Path, structures: list[Atoms]) -> Path:
    write(path, structures, format="extxyz")
    return path


def emt_relaxed_energy(atoms: Atoms, fmax: float) -> float:
    atoms = atoms.copy()
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=300)
    return float(atoms.get_potential_energy())


# ---------------------------------------------------------------------------------------------
# tests


def test_e_ads_matches_independent_emt_relaxation(tmp_path):
    system = on_cu111("O", "fcc", size=(3, 3, 3), sid="cu-o-fcc", adsorbate="*O", miller=(1, 1, 1))
    df = label(write_inputs(tmp_path / "in.extxyz", [system]), tmp_path / "labels.parquet", workers=1,
               progress=False)

    clean = system[system.get_tags() != 2]
    e_system, e_slab = emt_relaxed_energy(system, 0.05), emt_relaxed_energy(clean, 0.05)
    gas = {}
    for name in ("H2", "H2O"):
        mol = molecule(name)
        mol.set_cell([14.0] * 3)
        mol.center()
        gas[name] = emt_relaxed_energy(mol, 0.01)
    expected = e_system - e_slab - (gas["H2O"] - gas["H2"])

    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    row = df.iloc[0]
    assert row["sid"] == "cu-o-fcc"
    assert row["e_ads"] == pytest.approx(expected, abs=1e-3)
    assert row["e_total"] == pytest.approx(e_system, abs=1e-3)
    assert row["e_slab"] == pytest.approx(e_slab, abs=1e-3)
    assert row["e_ads"] == pytest.approx(row["e_total"] - row["e_slab"] - row["e_ref"], abs=1e-9)
    assert -2.0 < row["e_ads"] < 0.0
    assert bool(row["converged"]) and not bool(row["anomaly"])
    assert row["fmax_final"] < 0.05 and row["n_atoms"] == 28 and row["adsorbate_formula"] == "O"
    assert (row["calculator"], row["calculator_version"]) == calculator_info("emt")
    assert row["adsorbate"] == "*O" and row["miller"] == "[1, 1, 1]"

    relaxed = list(iter_structures(structures_path(tmp_path / "labels.parquet")))
    assert len(relaxed) == 1 and relaxed[0].info["sid"] == "cu-o-fcc"
    assert relaxed[0].info["e_ads"] == pytest.approx(row["e_ads"])
    assert list(relaxed[0].get_tags()).count(2) == 1


def test_resume_relaxes_only_new_systems(tmp_path):
    spec = "tests.test_label:counting_emt"
    first = [on_cu111("O", "fcc"), on_cu111("O", "hcp"), on_cu111("H", "ontop")]
    out = tmp_path / "labels.parquet"
    EVALUATIONS.clear()
    df1 = label(write_inputs(tmp_path / "a.extxyz", first), out, calculator=spec, workers=1, progress=False)
    assert len(df1) == 3 and df1["sid"].str.startswith("h-").all()
    n_slab = len(cu111())
    assert n_slab in EVALUATIONS  # the clean slab was relaxed
    parts = parts_dir(out)
    before = {p.name: p.read_bytes() for p in parts.glob("chunk-*")}

    EVALUATIONS.clear()
    new = [on_cu111("H", "fcc"), on_cu111("O", "ontop", height=1.9)]
    df2 = label(write_inputs(tmp_path / "b.extxyz", first + new), out, calculator=spec, workers=1,
                progress=False)

    assert len(df2) == 5 and df2["sid"].is_unique
    assert list(df2["sid"][:3]) == list(df1["sid"])
    pd.testing.assert_frame_equal(df2.iloc[:3].reset_index(drop=True), df1)
    # Only the two new systems were relaxed: no slab, no gas molecule, one evaluation per BFGS step.
    new_rows = df2.iloc[3:]
    assert set(EVALUATIONS) == {n_slab + 1}
    assert len(EVALUATIONS) == int((new_rows["n_steps"] + 1).sum())
    after = {p.name: p.read_bytes() for p in parts.glob("chunk-*")}
    assert all(after[name] == data for name, data in before.items())  # earlier chunks untouched
    added = sorted(set(after) - set(before))
    assert [Path(a).suffix for a in added] == [".aselmdb", ".parquet"]
    assert set(pd.read_parquet(parts / added[1])["sid"]) == set(new_rows["sid"])
    relaxed = list(iter_structures(structures_path(out)))
    assert [a.info["sid"] for a in relaxed] == list(df2["sid"])

    EVALUATIONS.clear()  # a third run has nothing to do
    df3 = label(tmp_path / "b.extxyz", out, calculator=spec, workers=1, progress=False)
    assert EVALUATIONS == [] and df3.equals(df2)


def test_crash_mid_run_loses_and_duplicates_nothing(tmp_path):
    spec = "tests.test_label:counting_emt"
    inputs = write_inputs(tmp_path / "in.extxyz", [on_cu111("O", "fcc"), on_cu111("O", "hcp"),
                                                  on_cu111("H", "fcc")])
    out = tmp_path / "labels.parquet"
    chemical_potentials(spec)  # gas references first (H2 and H2O would crash below)
    CRASH_ON["symbol"] = "H"  # the third system fails after the first two were relaxed
    try:
        with pytest.raises(QecatError, match="simulated crash"):
            label(inputs, out, calculator=spec, workers=1, progress=False)
    finally:
        CRASH_ON["symbol"] = None

    saved = pd.concat([pd.read_parquet(p) for p in parts_dir(out).glob("chunk-*.parquet")])
    assert len(saved) == 2 and not out.exists()
    EVALUATIONS.clear()
    df = label(inputs, out, calculator=spec, workers=1, progress=False)
    assert len(df) == 3 and df["sid"].is_unique
    assert set(df["sid"][:2]) == set(saved["sid"])
    assert len(EVALUATIONS) == int(df["n_steps"].iloc[2]) + 1  # only the third system was relaxed


def test_parallel_workers_match_serial(tmp_path):
    systems = [on_cu111("O", "fcc"), on_cu111(hydroxyl(), "ontop", height=1.9), on_cu111("H", "hcp")]
    inputs = write_inputs(tmp_path / "in.extxyz", systems)
    serial = label(inputs, tmp_path / "serial.parquet", workers=1, progress=False)
    parallel = label(inputs, tmp_path / "parallel.parquet", workers=2, progress=False)
    assert list(parallel["sid"]) == list(serial["sid"])
    np.testing.assert_allclose(parallel["e_ads"], serial["e_ads"], atol=1e-9)
    assert len(list(iter_structures(structures_path(tmp_path / "parallel.parquet")))) == 3


def test_anomaly_flags_from_label(tmp_path):
    far = on_cu111("O", "fcc", height=6.0, sid="far")
    near = on_cu111("O", "fcc", height=1.2, sid="near")
    df = label(write_inputs(tmp_path / "d.extxyz", [far, near]), tmp_path / "d.parquet",
               calculator="tests.test_label:zero_forces", workers=1, progress=False).set_index("sid")
    assert df.loc["far", "desorbed"] and df.loc["far", "anomaly"]
    assert not df.loc["near", "desorbed"] and not df.loc["near", "anomaly"]
    assert df.loc["far", "converged"] and df.loc["far", "e_ads"] == 0.0

    oh = on_cu111(hydroxyl(), "ontop", height=1.9, sid="oh")
    df = label(write_inputs(tmp_path / "r.extxyz", [oh]), tmp_path / "r.parquet",
               calculator="tests.test_label:adsorbate_repulsion", workers=1, progress=False)
    assert bool(df.loc[0, "dissociated"]) and bool(df.loc[0, "anomaly"])
    assert not df.loc[0, "surface_changed"] and not df.loc[0, "not_converged"]

    high = on_cu111("O", "fcc", height=2.5, sid="slow")
    df = label(write_inputs(tmp_path / "s.extxyz", [high]), tmp_path / "s.parquet", steps=2, workers=1,
               progress=False)
    assert df.loc[0, "n_steps"] == 2 and df.loc[0, "not_converged"] and not df.loc[0, "converged"]


def test_anomaly_functions_use_periodic_minimum_image():
    oh = on_cu111(hydroxyl(), "ontop", height=1.9)
    broken = oh.copy()
    broken.positions[-1] += [3.0, 0.0, 0.0]
    assert is_dissociated(oh, broken) and not is_dissociated(oh, oh.copy())
    # H moved by one cell vector: the same bond through the periodic boundary
    wrapped = oh.copy()
    wrapped.positions[-1] += oh.cell[0]
    assert not is_dissociated(oh, wrapped)

    o_far = on_cu111("O", "ontop", height=1.8)
    assert not is_desorbed(o_far)
    o_far.positions[-1] += 2 * o_far.cell[1]  # outside the cell in x/y, still on top of an atom
    assert not is_desorbed(o_far)
    o_far.positions[-1, 2] += 4.0
    assert is_desorbed(o_far)

    slab = cu111()
    assert not has_surface_changed(slab, slab.copy())
    moved = slab.copy()
    top = np.nonzero(slab.get_tags() == 1)[0][0]
    moved.positions[top, 2] += 3.0
    assert has_surface_changed(slab, moved)
    system = on_cu111("O", "fcc")
    restructured = system.copy()
    restructured.positions[top, 2] += 3.0
    assert not has_surface_changed(slab, slab.copy(), system) and has_surface_changed(slab, slab, restructured)


def test_references_and_calculator_registry():
    mus = chemical_potentials("emt")
    assert mus == pytest.approx({"H": 0.535, "O": 0.809, "C": -0.138, "N": 0.131}, abs=2e-3)
    assert reference_energy(["C", "O", "H", "H"], mus) == pytest.approx(mus["C"] + mus["O"] + 2 * mus["H"])
    with pytest.raises(QecatError, match="Fe"):
        reference_energy(["Fe", "O"], mus)
    import ase

    assert calculator_info("emt") == ("emt", ase.__version__)
    assert isinstance(get_calculator("tests.test_label:zero_forces"), ZeroForces)
    with pytest.raises(QecatError, match="emt.*chgnet.*MODULE:FACTORY"):
        get_calculator("vasp")
    with pytest.raises(QecatError, match="no attribute"):
        get_calculator("tests.test_label:nope")


def test_bad_inputs_raise_one_line_errors(tmp_path):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.extxyz") as err:
        label(empty, tmp_path / "x.parquet", workers=1, progress=False)
    assert "\n" not in str(err.value)

    fe = fcc111("Fe", (3, 3, 3), a=3.6, vacuum=8.0)
    add_adsorbate(fe, "O", 1.5, "fcc")
    fe.info.clear()
    fe.set_tags([0] * len(fe))  # tags inferred: O above the slab is the adsorbate
    with pytest.raises(InputError, match=r"fe\.extxyz.*Fe") as err:
        label(write_inputs(tmp_path / "fe.extxyz", [fe]), tmp_path / "fe.parquet", workers=1, progress=False)
    assert "\n" not in str(err.value) and "emt" in str(err.value)

    bare = cu111()
    bare.set_tags([0] * len(bare))
    bare.info.clear()
    with pytest.raises(InputError, match="bare.extxyz"):
        label(write_inputs(tmp_path / "bare.extxyz", [bare]), tmp_path / "b.parquet", workers=1, progress=False)

    with pytest.raises(QecatError, match="allowed"):
        label(empty, tmp_path / "x.parquet", calculator="gaussian", progress=False)


def test_changed_settings_are_refused(tmp_path):
    inputs = write_inputs(tmp_path / "in.extxyz", [on_cu111("O", "fcc")])
    label(inputs, tmp_path / "l.parquet", workers=1, progress=False)
    with pytest.raises(QecatError, match="fmax"):
        label(inputs, tmp_path / "l.parquet", fmax=0.02, workers=1, progress=False)


def test_warm_start_continues_earlier_relaxations_to_a_tighter_fmax(tmp_path):
    systems = [on_cu111("O", "fcc", height=2.2, sid="o"), on_cu111("H", "ontop", height=1.9, sid="h"),
               on_cu111(hydroxyl(), "fcc", height=1.6, sid="oh")]
    extra = on_cu111("N", "hcp", height=2.0, sid="n")  # not in the earlier run: starts from scratch
    loose = label(write_inputs(tmp_path / "a.extxyz", systems), tmp_path / "loose.parquet", fmax=0.3,
                  workers=1, progress=False).set_index("sid")
    inputs = write_inputs(tmp_path / "b.extxyz", [*systems, extra])
    warm = label(inputs, tmp_path / "warm.parquet", fmax=0.01, steps=500, workers=1, progress=False,
                 warm_start=tmp_path / "loose.parquet").set_index("sid")
    cold = label(inputs, tmp_path / "cold.parquet", fmax=0.01, steps=500, workers=1,
                 progress=False).set_index("sid")
    assert list(warm.index) == ["o", "h", "oh", "n"]
    assert (warm["fmax_final"] < 0.01).all() and not warm["anomaly"].any()
    # the same end points as one relaxation to fmax 0.01, in fewer steps than that took
    assert np.allclose(warm["e_ads"], cold["e_ads"], atol=2e-3)
    assert np.allclose(warm["e_slab"], cold["e_slab"], atol=1e-3)
    assert (warm.loc[["o", "h", "oh"], "e_total"] <= loose["e_total"] + 1e-9).all()
    assert warm.loc[["o", "h", "oh"], "n_steps"].sum() < cold.loc[["o", "h", "oh"], "n_steps"].sum()
    assert warm.loc["n", "n_steps"] == cold.loc["n", "n_steps"]
    relaxed = {a.info["sid"]: a for a in iter_structures(structures_path(tmp_path / "warm.parquet"))}
    assert relaxed["oh"].info["e_total"] == pytest.approx(warm.loc["oh", "e_total"])

    # rows the earlier run flagged dissociated are kept as they were, not relaxed again
    spec = "tests.test_label:adsorbate_repulsion"
    oh = [on_cu111(hydroxyl(), "ontop", height=1.9, sid="oh")]
    first = label(write_inputs(tmp_path / "r.extxyz", oh), tmp_path / "r1.parquet", calculator=spec,
                  fmax=0.3, workers=1, progress=False)
    again = label(tmp_path / "r.extxyz", tmp_path / "r2.parquet", calculator=spec, fmax=0.01, workers=1,
                  progress=False, warm_start=tmp_path / "r1.parquet")
    assert bool(first.loc[0, "dissociated"]) and bool(again.loc[0, "dissociated"])
    assert again.loc[0, "e_ads"] == first.loc[0, "e_ads"] and again.loc[0, "n_steps"] == first.loc[0, "n_steps"]

    # a warm start from other structures under the same sid, or from itself, is refused
    other = [on_cu111("O", "fcc", size=(3, 3, 3), sid="o")]
    with pytest.raises(InputError, match=r"loose\.aselmdb: sid o has other atoms .* same inputs"):
        label(write_inputs(tmp_path / "c.extxyz", other), tmp_path / "c.parquet", fmax=0.01, workers=1,
              progress=False, warm_start=tmp_path / "loose.parquet")
    with pytest.raises(QecatError, match="another run's output"):
        label(inputs, tmp_path / "warm.parquet", fmax=0.01, workers=1, progress=False,
              warm_start=tmp_path / "warm.parquet")
    with pytest.raises(InputError, match=r"nowhere\.aselmdb: missing"):
        label(inputs, tmp_path / "d.parquet", fmax=0.01, workers=1, progress=False,
              warm_start=tmp_path / "nowhere.parquet")


def test_script_piped_on_stdin_labels_in_process_instead_of_hanging(tmp_path):
    # forkserver workers re-run __main__ from its path; '<stdin>' does not exist, so a pool would
    # restart failing workers forever. label() must fall back to one process and say so.
    import subprocess
    import sys

    write_inputs(tmp_path / "in.extxyz", [on_cu111("O", "fcc", sid="a"), on_cu111("H", "ontop", sid="b")])
    script = ("from qecat_core.label.relax import label\n"
              f"df = label({str(tmp_path / 'in.extxyz')!r}, {str(tmp_path / 'out.parquet')!r}, workers=2, "
              "progress=False)\nprint(len(df), df['anomaly'].sum())\n")
    run = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=180,
                         cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["2", "0"]
    assert "cannot re-import: labelling in this process (workers=1)" in run.stderr
