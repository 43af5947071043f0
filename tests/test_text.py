"""Golden configuration strings for hand-built systems (CatBERTa / OC20 string layout)."""

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc100, fcc111

from qecat_core.enumerate.text import configuration_text


def _tag(slab, n_layers):
    per = len(slab) // n_layers
    # ASE tags layers 1 (top) .. n; OC20: bottom layers 0, top layer 1
    slab.set_tags([1 if t == 1 else 0 for t in slab.get_tags()][: per * n_layers])
    return slab


def test_o_in_fcc_hollow_of_pt111():
    slab = _tag(fcc111("Pt", (3, 3, 3), vacuum=8.0), 3)
    add_adsorbate(slab, "O", 1.2, "fcc")
    slab.set_tags(list(slab.get_tags()[:-1]) + [2])
    pt10 = " ".join(["Pt"] * 10)
    expected = f"O</s>Pt (1 1 1)</s>[O Pt Pt Pt hollow [{pt10} O] [{pt10} O] [{pt10} O]]"
    assert configuration_text(slab, "O", "Pt", (1, 1, 1)) == expected


def test_co_atop_pt_in_cu100():
    slab = _tag(fcc100("Cu", (2, 2, 3), a=3.7, vacuum=8.0), 3)
    top = np.nonzero(slab.get_tags() == 1)[0]
    slab[top[0]].symbol = "Pt"
    co = Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.15]])  # C down
    co.positions[:, :2] += slab.positions[top[0], :2]
    co.positions[:, 2] += slab.positions[top[0], 2] + 1.9
    co.set_tags([2, 2])
    atoms = slab + co
    # Pt in a (100) surface: 4 in-plane + 4 below, all Cu; only C of CO binds
    assert configuration_text(atoms, "CO", "CuPt", (1, 0, 0)) == (
        "CO</s>CuPt (1 0 0)</s>[C Pt atop [Pt Cu Cu Cu Cu Cu Cu Cu Cu C]]"
    )


def test_each_binding_atom_gets_its_bracket():
    slab = _tag(fcc100("Cu", (2, 2, 3), vacuum=8.0), 3)
    top = slab.positions[slab.get_tags() == 1]
    # two H atoms atop two different surface atoms: two brackets, in atom order
    h = Atoms("H2", positions=[top[0] + [0, 0, 1.5], top[3] + [0, 0, 1.5]], tags=[2, 2])
    text = configuration_text(slab + h, "H2", "Cu", (1, 0, 0))
    cu9 = " ".join(["Cu"] * 9)
    assert text == f"H2</s>Cu (1 0 0)</s>[H Cu atop [{cu9} H]][H Cu atop [{cu9} H]]"


def test_no_adsorbate_is_an_error():
    slab = _tag(fcc111("Cu", (2, 2, 3), vacuum=8.0), 3)
    with pytest.raises(ValueError, match="no adsorbate"):
        configuration_text(slab, "O", "Cu", (1, 1, 1))


def test_format_matches_oc20_strings():
    from tests.conftest import SHARED

    path = SHARED / "data" / "oc20-text" / "oc20_val_text_8k.parquet"
    if not path.exists():
        pytest.skip("shared OC20 strings not available")
    import re

    pattern = re.compile(r"^[^<]+</s>\S+ \(-?\d+ -?\d+ -?\d+\)</s>(\[[A-Z][a-z]?( [A-Z][a-z]?)+ (atop|bridge|hollow)( \[[^\[\]]+\])+\])+$")
    oc20 = pd.read_parquet(path)["text"].head(500)
    assert np.mean([bool(pattern.match(t)) for t in oc20]) > 0.95
    # ours, generated from structures, match the same pattern
    slab = _tag(fcc111("Pt", (3, 3, 3), vacuum=8.0), 3)
    add_adsorbate(slab, "O", 1.2, "hcp")
    slab.set_tags(list(slab.get_tags()[:-1]) + [2])
    assert pattern.match(configuration_text(slab, "O", "Pt", (1, 1, 1)))
