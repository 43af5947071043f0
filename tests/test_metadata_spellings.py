"""Metadata of structures from elsewhere: ``miller`` / ``adsorbate`` in ``atoms.info`` as users write them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc111, hcp0001
from ase.io import write
from typer.testing import CliRunner

from qecat_core.cli.main import app
from qecat_core.common.errors import InputError
from qecat_core.common.structures import iter_structures
from qecat_core.enumerate.infer import complete_metadata, parse_adsorbate, parse_miller
from qecat_core.model.data import example_from_atoms

SHIPPED = str(Path(__file__).resolve().parent.parent / "models" / "qecat-emt-v1")

MILLER_111 = [111, np.int64(111), "111", " 111 ", "1 1 1", "(1, 1, 1)", "(1 1 1)", "[1, 1, 1]", "1,1,1",
              [1, 1, 1], (1, 1, 1), np.array([1, 1, 1]), np.array([1.0, 1.0, 1.0]), ["1", "1", "1"]]
MILLER_HCP = ["0001", "(0 0 0 1)", "(0, 0, 0, 1)", [0, 0, 0, 1], np.array([0, 0, 0, 1]), 1, "001", (0, 0, 1)]
ADSORBATE_OH = ["*OH", "OH", " OH ", "oh", "OH*"]


def _cu_oh(tags: bool = False) -> Atoms:
    """Cu(111) 2x2x3 with OH in an fcc hollow; ASE's layer tags (left to the inference) or OC20 tags."""
    slab = fcc111("Cu", (2, 2, 3), vacuum=8)
    add_adsorbate(slab, "O", 1.3, "fcc")
    slab += Atoms("H", positions=[slab.positions[-1] + [0, 0, 0.97]])
    slab.info.pop("adsorbate_info", None)  # (ASE's; extxyz cannot write a dict)
    if tags:
        layer = slab.get_tags()
        slab.set_tags([1 if t == 1 else 0 for t in layer[:12]] + [2, 2])
    return slab


def _ru_o() -> Atoms:
    slab = hcp0001("Ru", (2, 2, 3), vacuum=8)
    add_adsorbate(slab, "O", 1.2, "fcc")
    slab.info.pop("adsorbate_info", None)
    return slab


@pytest.fixture(scope="module")
def bare_text() -> str:
    text = example_from_atoms(_cu_oh()).text
    assert text.startswith("OH</s>Cu (1 1 1)</s>[O Cu Cu Cu hollow")
    return text


@pytest.mark.parametrize("tags", [False, True])
@pytest.mark.parametrize("miller", MILLER_111, ids=repr)
def test_miller_spellings_give_the_inferred_text(bare_text, miller, tags):
    a = _cu_oh(tags)
    a.info.update(miller=miller, adsorbate="*OH", sid="x")
    ex = example_from_atoms(a)
    assert ex.text == bare_text and ex.adsorbate == "*OH"


@pytest.mark.parametrize("ads", ADSORBATE_OH)
def test_adsorbate_spellings_give_the_inferred_text(bare_text, ads):
    a = _cu_oh()
    a.info.update(adsorbate=ads, miller=111, sid="x")
    ex = example_from_atoms(a)
    assert ex.text == bare_text and ex.adsorbate == "*OH"
    g = _cu_oh()
    g.info.update(adsorbate=ads, sid="x")  # the graph channel reads the adsorbate alone (energy offsets)
    assert example_from_atoms(g, need_text=False).adsorbate == "*OH"


def test_spellings_through_an_extxyz_file(tmp_path, bare_text):
    """ASE's extxyz turns some spellings into ints or arrays (``miller=0001`` comes back as 1)."""
    rows = []
    for m in MILLER_111:
        for ads in ("OH", "*OH"):
            a = _cu_oh()
            a.info.update(miller=m, adsorbate=ads)
            rows.append(a)
    write(tmp_path / "in.extxyz", rows)
    texts = {example_from_atoms(a).text for a in iter_structures(tmp_path / "in.extxyz")}
    assert texts == {bare_text}
    ru = []
    for m in MILLER_HCP:
        a = _ru_o()
        a.info.update(miller=m, adsorbate="O")
        ru.append(a)
    write(tmp_path / "ru.extxyz", ru)
    texts = {example_from_atoms(a).text for a in iter_structures(tmp_path / "ru.extxyz")}
    assert len(texts) == 1 and texts.pop().startswith("O</s>Ru (0 0 1)</s>[O Ru Ru Ru hollow")


@pytest.mark.parametrize("value,expected", [
    ("1 -1 0", (1, -1, 0)), ("1-10", (1, -1, 0)), ("(1, -1, 0)", (1, -1, 0)), ("-111", (-1, 1, 1)),
    (-111, (-1, 1, 1)), ("211", (2, 1, 1)), (211, (2, 1, 1)), (100, (1, 0, 0)), (10, (0, 1, 0)),
    ("(10 1 1)", (10, 1, 1)), ("10-10", (1, 0, 0)), ("(1 1 -2 0)", (1, 1, 0)), ([1, 1, -2, 0], (1, 1, 0)),
])
def test_parse_miller_other_indices(value, expected):
    assert parse_miller(value) == expected


@pytest.mark.parametrize("value", ["abc", "", "11", "1111", "1 0 0 1", "(0 0 0)", [1, 1], 1.5, True, None, "1.5 1 1",
                                   {"h": 1}])
def test_parse_miller_rejects(value):
    with pytest.raises(ValueError):
        parse_miller(value)


def test_parse_adsorbate():
    assert parse_adsorbate("CH2CO") == parse_adsorbate("*CH2*CO") == "CH2*CO"  # as OC20 writes it
    assert parse_adsorbate("ch2oh") == "*CH2OH" and parse_adsorbate("NH2N(CH3)2") == "*NH2N(CH3)2"
    for bad in ("XYZ", "OH-", "", 3, None):
        with pytest.raises(ValueError):
            parse_adsorbate(bad)


def _bad_file(tmp_path) -> Path:
    rows = [_cu_oh() for _ in range(4)]
    rows[3].info.update(miller="abc", adsorbate="OH")
    write(tmp_path / "in.extxyz", rows)
    return tmp_path / "in.extxyz"


def test_bad_value_error_names_file_index_key_value(tmp_path):
    path = _bad_file(tmp_path)
    structures = list(iter_structures(path))
    for a in structures[:3]:
        example_from_atoms(a)
    with pytest.raises(InputError) as err:
        example_from_atoms(structures[3])
    msg = str(err.value)
    assert msg == (f"{path}:3: miller = 'abc' is not a Miller index (accepted: 111, \"1 1 1\", \"(1, 1, 1)\", "
                   "[1, 1, 1], hcp \"0001\"); the geometry gives (1 1 1): rerun with --infer-metadata to use it")
    assert "\n" not in msg
    # the graph channel does not read the facet; --infer-metadata takes the geometry's
    assert example_from_atoms(structures[3], need_text=False).adsorbate == "*OH"
    assert example_from_atoms(structures[3], infer_metadata=True).text == example_from_atoms(_cu_oh()).text

    a = _cu_oh()
    a.info.update(adsorbate="XYZ", source="x.extxyz:7")
    with pytest.raises(InputError, match=r"^x\.extxyz:7: adsorbate = 'XYZ' is not an OC20 adsorbate \(accepted: .*"
                                         r"'OH'.*\); the geometry gives \*OH: rerun with --infer-metadata"):
        example_from_atoms(a, need_text=False)
    # inference would not have worked: said so
    ru = _ru_o()
    ru.info.update(miller=[0, 0, 1, 1], source="ru.extxyz:0")
    with pytest.raises(InputError, match=r"^ru\.extxyz:0: miller = \[0, 0, 1, 1\] is not a Miller-Bravais index "
                                         r".*the geometry does not give one either .*fix atoms\.info\['miller'\]"):
        example_from_atoms(ru)
    ru.info["miller"] = "0001"
    assert example_from_atoms(ru, infer_metadata=True).text.startswith("O</s>Ru (0 0 1)</s>")  # given, as a fallback


def test_given_wins_unless_prefer_geometry():
    from qecat_core.common.tags import ensure_tags

    a = ensure_tags(_cu_oh(), "a")
    a.info.update(miller="(2 1 1)", adsorbate="O", bulk_formula="CuX")
    b = a.copy()
    assert complete_metadata(a) == []
    assert (a.info["miller"], a.info["adsorbate"], a.info["bulk_formula"]) == ((2, 1, 1), "*O", "CuX")
    assert complete_metadata(b, prefer_geometry=True) == ["adsorbate", "bulk_formula", "miller"]
    assert (b.info["miller"], b.info["adsorbate"], b.info["bulk_formula"]) == ((1, 1, 1), "*OH", "Cu")


def test_cli_infer_metadata(tmp_path):
    runner = CliRunner()
    path = _bad_file(tmp_path)
    out = tmp_path / "pred.parquet"
    args = ["predict", str(path), "-o", str(out), "--mode", "text", "--checkpoint", SHIPPED]
    r = runner.invoke(app, args)
    errors = [x for x in r.output.splitlines() if x.startswith("error: ")]
    assert r.exit_code == 2 and len(errors) == 1, r.output
    assert f"{path}:3: miller = 'abc'" in errors[0] and "rerun with --infer-metadata" in errors[0]
    assert not out.exists()
    r = runner.invoke(app, [*args, "--infer-metadata"])
    assert r.exit_code == 0, r.output
    pred = pd.read_parquet(out)
    assert len(pred) == 4 and pred["mode"].eq("text").all()
    # all four are the same system: same text, same prediction as the bare structure's
    write(tmp_path / "bare.extxyz", [_cu_oh()])
    r = runner.invoke(app, ["predict", str(tmp_path / "bare.extxyz"), "-o", str(tmp_path / "bare.parquet"),
                            "--mode", "text", "--checkpoint", SHIPPED])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(pred["e_ads_pred"], pd.read_parquet(tmp_path / "bare.parquet")["e_ads_pred"].iloc[0],
                               atol=1e-6)
