"""Catalog validation: precise one-line errors naming file, field and what is allowed."""

import pytest

from qecat_core.catalog.bulks import bulk_specs
from qecat_core.catalog.schema import Catalog, load_catalog
from qecat_core.common.errors import CatalogError


def test_default_catalog_is_valid_and_spans_all_pairs(tmp_path):
    from tests.conftest import REPO

    cat = load_catalog(REPO / "catalogs" / "bimetallics.yaml")
    assert len(cat.pair_list()) == 15
    labels = [b.label for b in bulk_specs(cat)]
    assert {"Cu", "Ag", "Au", "Ni", "Pd", "Pt"} <= set(labels)
    assert "Cu3Pt-L1_2" in labels and "CuPt3-L1_2" in labels and "CuPt-L1_0" in labels
    assert {(1, 1, 1), (1, 0, 0), (1, 1, 0), (2, 1, 1)} <= set(cat.facets)
    assert len(cat.adsorbates) >= 8


def test_vegard_lattice_constant(tiny_catalog_dict):
    cat = Catalog.model_validate(tiny_catalog_dict)
    spec = {b.label: b for b in bulk_specs(cat)}["Cu3Pt-L1_2"]
    assert spec.lattice_constant == pytest.approx(0.75 * 3.593 + 0.25 * 3.927)


@pytest.mark.parametrize(
    "edit, field, words",
    [
        (lambda d: d["metals"].append("Xx"), "metals", "unknown or non-fcc element 'Xx'"),
        (lambda d: d["metals"].append("Fe"), "metals", "allowed:"),
        (lambda d: d.update(facets=["11"]), "facets", "three integers"),
        (lambda d: d.update(facets=["abc"]), "facets", "not a Miller index"),
        (lambda d: d.update(facets=[[0, 0, 0]]), "facets", "not all zero"),
        (lambda d: d.update(adsorbates=["*XYZ"]), "adsorbates", "unknown adsorbate SMILES '*XYZ'"),
        (lambda d: d.update(pairs=[]), "(top level)", "pairs is empty"),
        (lambda d: d.update(pairs=["Cu-Ag"]), "(top level)", "'Ag', which is not in metals"),
        (lambda d: d.update(prototypes=[{"kind": "B2"}]), "prototypes.0.kind", "L1_2"),
        (lambda d: d.update(prototypes=[{"kind": "random", "fraction_b": 1.5}]), "prototypes.0.fraction_b", "less than 1"),
        (lambda d: d.update(bogus=1), "bogus", "unknown field"),
        (lambda d: d.pop("name"), "name", "required field is missing"),
        (lambda d: d.update(slab={"min_layers": 2, "fixed_layers": 2}), "slab", "fixed_layers"),
    ],
)
def test_bad_catalog_gives_one_line_error(tiny_catalog_dict, write_yaml, edit, field, words):
    edit(tiny_catalog_dict)
    path = write_yaml(tiny_catalog_dict)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {field}")
    assert words in msg


def test_malformed_yaml_names_line(write_yaml):
    path = write_yaml("name: x\nmetals: [Cu, Pt\nadsorbates: ['*O']\n")
    with pytest.raises(CatalogError, match=r"catalog.yaml: line \d+ column \d+: malformed YAML"):
        load_catalog(path)


def test_not_a_mapping_and_missing_file(write_yaml, tmp_path):
    with pytest.raises(CatalogError, match="expected a mapping"):
        load_catalog(write_yaml("- just\n- a list\n"))
    with pytest.raises(CatalogError, match="catalog file not found"):
        load_catalog(tmp_path / "nope.yaml")


def test_content_hash_ignores_formatting(tiny_catalog_dict, write_yaml):
    import yaml

    a = load_catalog(write_yaml(tiny_catalog_dict, "a.yaml"))
    b = load_catalog(write_yaml("# comment\n" + yaml.safe_dump(tiny_catalog_dict, default_flow_style=True), "b.yaml"))
    assert a.content_hash() == b.content_hash()
    tiny_catalog_dict["adsorbates"].append("*H")
    c = load_catalog(write_yaml(tiny_catalog_dict, "c.yaml"))
    assert c.content_hash() != a.content_hash()


def test_relaxed_lattice_constants_with_emt(tiny_catalog_dict):
    tiny_catalog_dict["lattice"] = "relaxed"
    specs = {b.label: b for b in bulk_specs(Catalog.model_validate(tiny_catalog_dict))}
    # EMT's own fcc minima (docs/data.md): Cu 3.593, Pt 3.927 Å
    assert specs["Cu"].lattice_constant == pytest.approx(3.593, abs=0.01)
    assert specs["Pt"].lattice_constant == pytest.approx(3.927, abs=0.01)
    vegard = 0.75 * 3.593 + 0.25 * 3.927
    assert abs(specs["Cu3Pt-L1_2"].lattice_constant - vegard) < 0.08
    assert specs["Cu3Pt-L1_2"].lattice_constant != pytest.approx(vegard, abs=1e-6)


def test_fields_added_later_keep_old_catalog_hashes(tiny_catalog_dict):
    """``bulks`` and ``lattice_facets`` (hcp/bcc/file bulks) count in the hash only when not default, and
    OC20 adsorbates dump as the plain strings they were: catalogs written before keep their hashes
    (and their cached enumerations)."""
    import copy

    a = Catalog.model_validate(tiny_catalog_dict)
    d = copy.deepcopy(tiny_catalog_dict)
    d.update(bulks=[], lattice_facets={"hcp": ["0001", "10-10"], "bcc": ["110", "100"]})
    assert Catalog.model_validate(d).content_hash() == a.content_hash()
    assert a.model_dump(mode="json")["adsorbates"] == ["*O", "*OH"]
    d["bulks"] = [{"element": "Ru"}]
    assert Catalog.model_validate(d).content_hash() != a.content_hash()
