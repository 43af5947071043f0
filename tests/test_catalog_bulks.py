"""Catalogs beyond the fcc prototypes and the OC20 adsorbates: hcp and bcc metals, bulks from files,
molecules by SMILES (``bulks:``, ``lattice_facets:``, ``adsorbates: [{smiles: ..., binding: ...}]``)."""

import numpy as np
import pandas as pd
import pytest
from ase.constraints import FixAtoms

from qecat_core.catalog.bulks import bulk_specs
from qecat_core.catalog.schema import Catalog, load_catalog
from qecat_core.common.errors import CatalogError
from qecat_core.enumerate.candidates import enumerate_catalog, iter_candidates
from qecat_core.enumerate.describe import describe_atoms
from qecat_core.enumerate.slabs import atomic_layers

SLAB = {"min_layers": 4, "fixed_layers": 2, "min_lateral": 5.0}


def _cands(cat):
    return list(iter_candidates(cat, workers=1, progress=False))


def _frame(cands):
    return pd.DataFrame([c.meta for c in cands])


def _write_b2_cif(path, a=2.95):
    import warnings

    from pymatgen.core import Lattice, Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Structure(Lattice.cubic(a), ["Cu", "Zn"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(path))
    return path


def _check_slab_tags(atoms, fixed_layers, tol=0.3):
    """OC20 tags: 0 = the bottom ``fixed_layers`` layers (and FixAtoms on exactly them), 1 = the rest
    of the slab, 2 = the adsorbate, last and above the slab."""
    tags = atoms.get_tags()
    assert set(np.unique(tags)) == {0, 1, 2}
    slab = np.nonzero(tags != 2)[0]
    layers = atomic_layers(atoms.positions[slab, 2], tol)
    assert set(layers[tags[slab] == 0]) == set(range(fixed_layers))
    assert layers[tags[slab] == 1].min() == fixed_layers
    fixed = [c for c in atoms.constraints if isinstance(c, FixAtoms)][0].get_indices()
    assert set(fixed) == set(np.nonzero(tags == 0)[0])
    ads = np.nonzero(tags == 2)[0]
    assert ads.min() == len(slab) and atoms.positions[ads, 2].min() > atoms.positions[slab, 2].max()


# ----------------------------------------------------------------------------------------------
# one-line errors for every new field
@pytest.mark.parametrize(
    "edit, field, words",
    [
        (lambda d, p: d.update(bulks=[{"element": "Xx"}]), "bulks.0.element", "unknown element 'Xx'"),
        (lambda d, p: d.update(bulks=[{"element": "Mn"}]), "bulks.0.lattice", "not fcc, hcp or bcc"),
        (lambda d, p: d.update(bulks=[{"element": "Cu", "lattice": "hcp"}]), "bulks.0", "needs a:"),
        (lambda d, p: d.update(bulks=[{"element": "Ru", "colour": "red"}]), "bulks.0", "unknown field 'colour'"),
        (lambda d, p: _write_b2_cif(p / "b2.cif") and d.update(bulks=[{"element": "Ru", "file": "b2.cif"}]),
         "bulks.0", "not both"),
        (lambda d, p: d.update(bulks=[{"element": "Fe", "c": 4.0}]), "bulks.0", "c: is only for hcp"),
        (lambda d, p: d.update(bulks=[{"element": "Cu"}]), "bulks", "'Cu' is listed twice"),
        (lambda d, p: d.update(bulks=[{"file": "missing.cif"}]), "bulks.0.file", "cannot read"),
        (lambda d, p: (p / "junk.cif").write_text("this is not a crystal\n") and d.update(bulks=[{"file": "junk.cif"}]),
         "bulks.0.file", "cannot read"),
        (lambda d, p: d.update(bulks=[{"element": "Ru", "facets": ["111"]}]), "bulks.0.facets", "Miller-Bravais"),
        (lambda d, p: d.update(bulks=[{"element": "Ru", "facets": ["1011"]}]), "bulks.0.facets", "i = -(h + k)"),
        (lambda d, p: d.update(bulks=[{"element": "Fe", "facets": ["0001"]}]), "bulks.0.facets",
         "4-index (Miller-Bravais) facet; a bcc lattice has three"),
        (lambda d, p: d.update(bulks=[{"element": "Fe", "facets": ["4 1 0"]}]), "bulks.0.facets", "-3..3"),
        (lambda d, p: _write_b2_cif(p / "b2.cif") and d.update(bulks=[{"file": "b2.cif", "facets": ["10-10"]}]),
         "bulks.0.facets", "this file's cell (not hexagonal)"),
        (lambda d, p: d.update(lattice_facets={"hcp": ["111"]}), "lattice_facets.hcp", "Miller-Bravais"),
        (lambda d, p: d.update(lattice_facets={"bcc": ["11-20"]}), "lattice_facets.bcc", "4-index"),
        (lambda d, p: d.update(facets=["0001"]), "facets", "4-index (Miller-Bravais) facet is for hcp bulks"),
        (lambda d, p: d.update(adsorbates=[{"smiles": "C(C", "binding": 0}]), "adsorbates.0.smiles",
         "cannot parse SMILES 'C(C'"),
        (lambda d, p: d.update(adsorbates=[{"smiles": "*OCC"}]), "adsorbates.0.smiles", "binding:"),
        (lambda d, p: d.update(adsorbates=[{"smiles": "CCO", "binding": [3]}]), "adsorbates.0.binding",
         "binding index 3 is out of range: SMILES 'CCO' has 3 heavy atoms (0..2)"),
        (lambda d, p: d.update(adsorbates=[{"smiles": "CCO", "binding": "S"}]), "adsorbates.0.binding", "has no S atom"),
        (lambda d, p: d.update(adsorbates=[{"smiles": "CCO", "binding": [0, "C", "C"]}]), "adsorbates.0.binding",
         "no further C atom"),
        (lambda d, p: d.update(adsorbates=[{"smiles": "CCO", "bindnig": 0}]), "adsorbates.0", "unknown field 'bindnig'"),
        (lambda d, p: d.update(adsorbates=["*O", "*XYZ"]), "adsorbates.1", "unknown adsorbate SMILES '*XYZ'"),
        (lambda d, p: d.update(adsorbates=[{"smiles": "CCO", "binding": 2}, {"smiles": "OCC", "binding": "O"}]),
         "adsorbates", "'*OCC' twice"),
        (lambda d, p: d.update(adsorbates=[{"file": "nope.xyz"}]), "adsorbates.0.file", "cannot read"),
        (lambda d, p: (p / "m.xyz").write_text("1\n\nO 0 0 0\n") and d.update(adsorbates=[{"smiles": "CO", "file": "m.xyz"}]),
         "adsorbates.0", "both smiles and file"),
        (lambda d, p: [d.pop("metals"), d.pop("pairs"), d.pop("prototypes")], "(top level)", "nothing to enumerate"),
    ],
)
def test_bad_new_fields_give_one_line_errors(tiny_catalog_dict, write_yaml, tmp_path, edit, field, words):
    edit(tiny_catalog_dict, tmp_path)
    path = write_yaml(tiny_catalog_dict)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {field}: "), msg
    assert words in msg, msg


def test_bulk_entries_lattice_constants_and_facets():
    cat = Catalog.model_validate({
        "name": "x", "bulks": ["Ru", {"element": "Zn"}, {"element": "Fe", "a": 2.83}, {"element": "Pt"},
                               {"element": "Cu", "lattice": "hcp", "a": 2.55, "facets": ["10-10"]}],
        "lattice_facets": {"hcp": ["0001", [1, 0, 0]]}, "adsorbates": ["*O"]})
    specs = {s.label: s for s in bulk_specs(cat)}
    assert list(specs) == ["Ru-hcp", "Zn-hcp", "Fe-bcc", "Pt", "Cu-hcp"]
    ru, zn = specs["Ru-hcp"], specs["Zn-hcp"]  # ASE's reference states: a and c/a
    assert (ru.lattice_constant, ru.c) == pytest.approx((2.70, 2.70 * 1.584))
    assert zn.c / zn.lattice_constant == pytest.approx(1.856)
    assert ru.facets == ((0, 0, 1), (1, 0, 0)) and specs["Cu-hcp"].facets == ((1, 0, 0),)
    assert specs["Cu-hcp"].c == pytest.approx(2.55 * (8 / 3) ** 0.5)  # ideal c/a where the element is not hcp
    assert specs["Fe-bcc"].lattice_constant == 2.83 and specs["Fe-bcc"].facets == ((1, 1, 0), (1, 0, 0))
    assert specs["Pt"].lattice == "fcc" and specs["Pt"].lattice_constant == pytest.approx(3.927)  # as metals: [Pt]
    assert cat.elements()["metals"] == ["Cu", "Fe", "Pt", "Ru", "Zn"]


def test_relaxed_hcp_where_the_calculator_supports_the_element():
    cat = Catalog.model_validate({"name": "x", "lattice": "relaxed", "adsorbates": ["*O"],
                                  "bulks": [{"element": "Cu", "lattice": "hcp", "a": 2.6}, "Ru"]})
    specs = {s.label: s for s in bulk_specs(cat)}
    cu = specs["Cu-hcp"]  # EMT's hcp Cu: nearest neighbours as in its fcc (3.593 / sqrt 2), c/a near ideal
    assert cu.lattice_constant == pytest.approx(3.593 / 2 ** 0.5, abs=0.02)
    assert cu.c / cu.lattice_constant == pytest.approx((8 / 3) ** 0.5, abs=0.03)
    assert specs["Ru-hcp"].lattice_constant == 2.70  # EMT has no Ru: the reference state is kept


# ----------------------------------------------------------------------------------------------
def test_cif_bulk_round_trip(tmp_path, write_yaml):
    _write_b2_cif(tmp_path / "CuZn-B2.cif")
    data = {"name": "b2", "bulks": [{"file": "CuZn-B2.cif", "name": "CuZn-B2", "facets": ["110", "100"]}],
            "slab": SLAB, "adsorbates": ["*O", "*OH"], "placement": {"max_per_system": 4}}
    path = write_yaml(data)
    cat = load_catalog(path)  # the file is found next to the catalog, wherever the tests run from
    manifest = enumerate_catalog(cat, tmp_path / "enum", workers=1, progress=False)
    df = pd.read_parquet(tmp_path / "enum" / "candidates.parquet")
    assert len(df) == manifest["n_candidates"] > 0 and df["sid"].is_unique
    assert set(df["bulk"]) == {"CuZn-B2"} and set(df["bulk_formula"]) == {"CuZn"} and set(df["prototype"]) == {"file"}
    assert set(df["metal_a"]) == {"Cu"} and set(df["metal_b"]) == {"Zn"} and set(df["fraction_b"]) == {0.5}
    assert set(df["miller"]) == {"(1 1 0)", "(1 0 0)"}
    # (1 0 0) alternates Cu and Zn planes: both terminations
    assert df.loc[df.miller == "(1 0 0)", "top"].nunique() == 2
    from qecat_core.common.structures import iter_structures

    for shard in manifest["shards"]:
        for atoms in iter_structures(tmp_path / "enum" / "shards" / shard["shard"]):
            slab = atoms[atoms.get_tags() != 2]
            syms = slab.get_chemical_symbols()
            assert set(syms) == {"Cu", "Zn"}
            if atoms.info["miller"] == "(1 1 0)":  # every (110) plane is CuZn
                assert syms.count("Cu") == syms.count("Zn")
            _check_slab_tags(atoms, fixed_layers=2)
            assert atoms.info["text"].startswith(f"{atoms.info['adsorbate'].replace('*', '')}</s>CuZn "
                                                 f"{atoms.info['miller']}</s>[")
    # the file's bytes are part of the catalog's hash (an edited file is enumerated again)
    before = cat.content_hash()
    _write_b2_cif(tmp_path / "CuZn-B2.cif", a=3.0)
    assert load_catalog(path).content_hash() != before


def test_hcp_and_bcc_candidates():
    cat = Catalog.model_validate({
        "name": "hb", "bulks": [{"element": "Ru"}, {"element": "Fe"}], "lattice_facets": {"hcp": ["0001"], "bcc": ["110"]},
        "slab": SLAB, "adsorbates": ["*O", "*OH"], "placement": {"max_per_system": 6}})
    cands = _cands(cat)
    df = _frame(cands)
    ru, fe = df[df.bulk == "Ru-hcp"], df[df.bulk == "Fe-bcc"]
    assert set(ru["miller"]) == {"(0 0 1)"} and set(fe["miller"]) == {"(1 1 0)"}
    assert set(ru["prototype"]) == {"hcp"} and set(fe["prototype"]) == {"bcc"}
    assert all(t.startswith(f"{a.replace('*', '')}</s>Ru (0 0 1)</s>[") for t, a in zip(ru.text, ru.adsorbate))
    assert all(t.startswith(f"{a.replace('*', '')}</s>Fe (1 1 0)</s>[") for t, a in zip(fe.text, fe.adsorbate))
    # hcp (0001) is close-packed: fcc and hcp hollows; bcc (110) is not: 3-fold hollows, two bridges
    for ads in ("*O", "*OH"):
        assert set(ru.loc[ru.adsorbate == ads, "site_type"]) == {"top", "bridge", "hollow-fcc", "hollow-hcp"}
        fe_sites = fe.loc[fe.adsorbate == ads, "site_type"].tolist()
        assert set(fe_sites) == {"top", "bridge", "hollow-3fold"} and fe_sites.count("bridge") == 2
    for c in cands:
        _check_slab_tags(c.atoms, fixed_layers=2)
    from qecat_core.enumerate.placement import inplane_displacements

    hollow = next(c.atoms for c in cands if c.meta["bulk"] == "Ru-hcp" and c.meta["site_type"] == "hollow-hcp")
    slab = hollow[hollow.get_tags() != 2]
    z = np.unique(np.round(slab.positions[:, 2], 3))
    assert np.allclose(np.diff(z), 2.70 * 1.584 / 2, atol=1e-3)  # (0001) planes c/2 apart
    # ABAB: the hcp hollow sits over an atom of the second layer
    second = np.abs(slab.positions[:, 2] - z[-2]) < 0.1
    d = inplane_displacements(slab.positions[second], hollow.positions[len(slab), :2], hollow.cell)
    assert np.linalg.norm(d, axis=1).min() < 0.3


def test_smiles_adsorbate_binding_by_index_and_by_element():
    base = {"name": "s", "bulks": ["Pt"], "facets": ["111"], "slab": SLAB, "placement": {"max_per_system": 4}}
    by_index = Catalog.model_validate({**base, "adsorbates": [{"smiles": "CCO", "binding": [2]}]})
    by_element = Catalog.model_validate({**base, "adsorbates": [{"smiles": "CCO", "binding": "O"}]})
    assert by_index.adsorbate_names() == by_element.adsorbate_names() == ["*OCC"]
    cands = _cands(by_element)
    assert [c.meta["sid"] for c in cands] == [c.meta["sid"] for c in _cands(by_index)]
    assert {c.meta["site_type"] for c in cands} == {"top", "bridge", "hollow-fcc", "hollow-hcp"}
    for c in cands:
        atoms = c.atoms
        tags = atoms.get_tags()
        slab, ads = np.nonzero(tags != 2)[0], np.nonzero(tags == 2)[0]
        assert atoms[ads].get_chemical_formula() == "C2H6O"
        # ethanol bound by O is an OC20 adsorbate: the candidates take its OC20 name, the name the
        # structure reads back as (qecat describe / predict on the bare structure give the same string)
        assert c.meta["adsorbate"] == "*OHCH2CH3" and c.meta["binding_element"] == "O"
        assert c.meta["text"].startswith("OHCH2CH3</s>Pt (1 1 1)</s>[O Pt")
        bare = atoms.copy()
        bare.info = {}
        assert describe_atoms(bare)["text"] == c.meta["text"]
        # the O is the adsorbate atom nearest the surface (lowest, and nearest in units of the
        # covalent-radii sums), and the only one bound to it
        from ase.data import covalent_radii

        rel = [(atoms.get_distances(int(i), slab, mic=True) / (covalent_radii[atoms.numbers[i]]
                                                             + covalent_radii[atoms.numbers[slab]])).min() for i in ads]
        assert ads[int(np.argmin(rel))] == len(slab) + 2 and min(rel) < 1.1 < sorted(rel)[1]
        assert atoms.positions[ads, 2].argmin() == 2
        assert c.meta["text"].count("[") - c.meta["text"].count("[Pt") == 1  # one bracket: the O's
    # a ring by several binding atoms lies flat
    flat = Catalog.model_validate({**base, "adsorbates": [{"smiles": "c1ccccc1", "binding": [0, 1, 2, 3, 4, 5]}]})
    assert flat.adsorbate_names() == ["*c1*c*c*c*c*c1"]
    methanethiol = Catalog.model_validate({**base, "adsorbates": [{"smiles": "CS", "binding": "S"}]})
    assert {c.meta["adsorbate"] for c in _cands(methanethiol)} == {"*SC"}  # not an OC20 adsorbate
    for c in _cands(flat):
        ring = c.atoms.positions[np.nonzero(c.atoms.get_tags() == 2)[0][:6], 2]
        assert np.ptp(ring) < 0.05


def test_molecule_file_adsorbate(tmp_path, write_yaml):
    from ase.io import write

    from qecat_core.catalog.adsorbates import embed_smiles

    write(tmp_path / "methanethiol.xyz", embed_smiles("CS"))
    path = write_yaml({"name": "f", "bulks": ["Cu"], "facets": ["111"], "slab": SLAB,
                       "adsorbates": [{"file": "methanethiol.xyz", "binding": "S"}], "placement": {"max_per_system": 2}})
    cat = load_catalog(path)
    assert cat.adsorbate_names() == ["*SC"] and cat.elements()["adsorbates"] == ["C", "H", "S"]
    cands = _cands(cat)
    assert cands and all(c.meta["binding_element"] == "S" and c.meta["adsorbate"] == "*SC" for c in cands)


def test_same_native_candidates_under_floating_point_noise(tmp_path, monkeypatch):
    """hcp, bcc and CIF bulks, OC20 and SMILES adsorbates: moves of 1e-12 Å of the cut templates, the
    realized slabs and the RDKit geometries change no sid (nor text)."""
    import dataclasses

    import qecat_core.catalog.adsorbates as adsorbates
    import qecat_core.enumerate.candidates as en
    import qecat_core.enumerate.sites as sites
    import qecat_core.enumerate.slabs as slabs

    _write_b2_cif(tmp_path / "b2.cif")
    cat = Catalog.model_validate({
        "name": "noise", "bulks": [{"element": "Ru", "facets": ["0001", "10-10"]}, {"element": "Fe", "facets": ["110", "100"]},
                                   {"file": str(tmp_path / "b2.cif"), "name": "CuZn-B2", "facets": ["110", "100"]}],
        "slab": SLAB, "adsorbates": ["*O", {"smiles": "CCO", "binding": "O"}, {"smiles": "c1ccsc1", "binding": "S"}],
        "placement": {"max_per_system": 4}})

    def run() -> list[tuple[str, str]]:
        slabs._TEMPLATES.clear()
        sites._SITES.clear()
        adsorbates.embed_smiles.cache_clear() if hasattr(adsorbates.embed_smiles, "cache_clear") else None
        return [(c.meta["sid"], c.meta["text"]) for c in _cands(cat)]

    clean = run()
    assert {b for b in _frame(_cands(cat))["bulk"]} == {"Ru-hcp", "Fe-bcc", "CuZn-B2"}
    rng = np.random.default_rng(0)
    cut, realize, embed = slabs._cut_templates, en.realize_slab, adsorbates.embed_smiles

    def noisy(atoms):
        atoms = atoms.copy()
        atoms.positions += rng.normal(0.0, 1e-12, atoms.positions.shape)
        return atoms

    monkeypatch.setattr(slabs, "_cut_templates",
                        lambda *a: tuple(dataclasses.replace(t, atoms=noisy(t.atoms)) for t in cut(*a)))
    monkeypatch.setattr(en, "realize_slab", lambda *a, **k: noisy(realize(*a, **k)))
    monkeypatch.setattr(adsorbates, "embed_smiles", lambda smiles: noisy(embed(smiles)))
    moved = run()
    slabs._TEMPLATES.clear()
    sites._SITES.clear()
    assert moved == clean
