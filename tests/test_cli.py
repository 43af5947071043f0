"""The `qecat` command line: stages run, bad input is one line on stderr with exit status 2."""

import pandas as pd
from typer.testing import CliRunner

from qecat_core.cli.main import app

runner = CliRunner()


def test_bad_catalog_is_one_line_exit_2(tiny_catalog_dict, write_yaml, tmp_path):
    tiny_catalog_dict["metals"] = ["Cu", "Unobtainium"]
    path = write_yaml(tiny_catalog_dict)
    result = runner.invoke(app, ["enumerate", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: metals")
    assert not (tmp_path / "out" / "candidates.parquet").exists()


def test_enumerate_then_label_a_shard(tiny_catalog_dict, write_yaml, tmp_path):
    tiny_catalog_dict.update(adsorbates=["*O"], facets=["100"], prototypes=[{"kind": "L1_2", "formula": "A3B"}],
                             placement={"max_per_system": 2})
    path = write_yaml(tiny_catalog_dict)
    out = tmp_path / "enum"
    result = runner.invoke(app, ["enumerate", str(path), "-o", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    cands = pd.read_parquet(out / "candidates.parquet")
    result = runner.invoke(app, ["label", str(out / "shards"), "-o", str(tmp_path / "labels.parquet"),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    assert set(labels["sid"]) == set(cands["sid"])
    assert labels["e_ads"].between(-3, 1).all()  # O on Cu/Pt/Cu3Pt with EMT and OC20 references
    assert (tmp_path / "labels.aselmdb").exists()
