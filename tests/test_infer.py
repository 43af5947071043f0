"""Adsorbate, bulk formula and Miller index read off bare structures (qecat_core.enumerate.infer)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bcc110, fcc100, fcc110, fcc111, fcc211, hcp0001

from qecat_core.enumerate.infer import complete_metadata, identify_adsorbate, infer_miller, slab_formula


def _with_adsorbate(slab: Atoms, smiles: str, height: float = 1.8) -> Atoms:
    from qecat_core.catalog.adsorbates import get_adsorbate

    slab = slab.copy()
    slab.set_tags(1)
    mol = get_adsorbate(smiles).oriented()
    top = slab.positions[np.argmax(slab.positions[:, 2])]
    mol.positions += top + [0, 0, height]
    mol.set_tags(2)
    return slab + mol


@pytest.mark.parametrize("build,size,miller", [
    (fcc111, (3, 3, 4), (1, 1, 1)), (fcc100, (3, 3, 4), (1, 0, 0)), (fcc110, (3, 3, 4), (1, 1, 0)),
    (fcc211, (3, 3, 4), (2, 1, 1)), (fcc111, (2, 2, 3), (1, 1, 1)),
])
def test_miller_of_fcc_slabs(build, size, miller):
    slab = _with_adsorbate(build("Pt", size, vacuum=8.0), "*OH")
    assert infer_miller(slab) == miller
    rot = slab.copy()
    rot.rotate(37, "z", rotate_cell=True)  # any in-plane orientation of the cell
    assert infer_miller(rot) == miller


def test_miller_of_catalog_templates_in_the_cubic_cell():
    """L1_2 slabs are cut from the cubic cell: the inferred index is the catalog's. Pure and random fcc
    slabs are cut from the primitive cell, whose (1 1 0) is the cubic (1 0 0)."""
    from qecat_core.enumerate.slabs import slab_templates

    for kind, cut, expected in (("L1_2", (2, 1, 1), (2, 1, 1)), ("L1_2", (1, 1, 0), (1, 1, 0)),
                                ("fcc", (1, 1, 0), (1, 0, 0)), ("fcc", (2, 1, 1), (1, 1, 0))):
        slab = slab_templates(kind, cut, 6.0, 4, 5.0, 0.3)[0].atoms
        assert infer_miller(_with_adsorbate(slab, "*O")) == expected, (kind, cut)


def test_hcp_and_bcc_slabs_in_the_oc20_three_index_form():
    assert infer_miller(_with_adsorbate(hcp0001("Ru", (3, 3, 4), vacuum=8.0), "*O")) == (0, 0, 1)
    assert infer_miller(_with_adsorbate(bcc110("Fe", (3, 3, 4), vacuum=8.0), "*O")) == (1, 1, 0)


@pytest.mark.parametrize("smiles", ["*H", "*O", "*OH", "*CO", "*CHO", "*COH", "*OCH3", "*CH2OH", "*N2", "*NH2",
                                    "*OCHO", "*COOH"])
def test_adsorbate_identified_including_isomers(smiles):
    slab = _with_adsorbate(fcc111("Cu", (3, 3, 4), vacuum=8.0), smiles)
    assert identify_adsorbate(slab) == smiles


def test_adsorbate_across_the_cell_boundary_and_unknown():
    slab = _with_adsorbate(fcc111("Cu", (3, 3, 4), vacuum=8.0), "*OH")
    o = slab.cell[0] - [0.1, 0.0, 0.0] + [0.0, 0.0, slab.positions[-2, 2]]  # O just inside the cell edge
    slab.positions[-2:] = [o, o + [0.3, 0.0, 0.93]]  # H just outside: wrapped to the other side
    slab.wrap()
    assert slab.get_distance(-2, -1) > 5.0
    assert identify_adsorbate(slab) == "*OH"
    odd = slab.copy()
    odd[-1].symbol = "Cl"
    assert identify_adsorbate(odd) is None


def test_complete_metadata_fills_only_what_is_missing():
    slab = fcc111("Cu", (3, 3, 4), vacuum=8.0)
    slab.symbols[::4] = "Pt"
    a = _with_adsorbate(slab, "*CO")
    assert slab_formula(a[a.get_tags() != 2]) == "Cu3Pt"
    assert complete_metadata(a) == ["adsorbate", "bulk_formula", "miller"]
    assert (a.info["adsorbate"], a.info["bulk_formula"], a.info["miller"]) == ("*CO", "Cu3Pt", (1, 1, 1))
    b = _with_adsorbate(slab, "*CO")
    b.info.update(adsorbate="*COH", miller=(2, 1, 1))  # given values win
    assert complete_metadata(b) == ["bulk_formula"] and b.info["adsorbate"] == "*COH"
