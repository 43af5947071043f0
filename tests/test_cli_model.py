"""`qecat train | evaluate | predict | predict-text`, recipes, the fixed text split and text baselines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from qecat_core.cli.main import app
from qecat_core.common.errors import InputError
from tests.test_model import TINY_MODEL, make_systems

runner = CliRunner()


def _recipe(tmp_path, **extra):
    rec = {"stages": ["graph"], "common": {"batch_size": 8, "num_threads": 1, "model": TINY_MODEL,
                                           "tokenizer_cif_structures": 1, "warmup_frac": 0.0},
           "graph": {"epochs": 2, "lr": 3e-3}, "text": {"epochs": 2, "lr": 3e-3}, **extra}
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(rec))
    return p


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from qecat_core.common.structures import write_aselmdb

    d = tmp_path_factory.mktemp("clidata")
    s = make_systems(40, seed=3)
    write_aselmdb(d / "train.aselmdb", s[:28])
    write_aselmdb(d / "val-id.aselmdb", s[28:])
    return d


def test_recipes_shipped_and_errors(tmp_path):
    from qecat_core.model.train.config import DEFAULT_RECIPE, TrainConfig
    from qecat_core.model.train.recipes import CONFIG_DIR, load_recipe, stage_config

    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == sorted([DEFAULT_RECIPE, "oc20-text"])
    shipped = load_recipe(DEFAULT_RECIPE)
    assert shipped["stages"] == ["graph", "text", "align", "joint"]
    graph = shipped["graph"]
    assert graph["w_disp"] > 0 and graph["model"]["graph"]["displacement_head"] and graph["relaxed"]
    # every stage's merged options are a valid TrainConfig
    for st in shipped["stages"]:
        TrainConfig.model_validate(stage_config(shipped, st))
    assert load_recipe("oc20-text")["stages"] == ["text"]
    bad = tmp_path / "bad.yaml"
    for text, match in [
        ("stages: [graph]\ngraph: {epochz: 3}\n", r"bad.yaml: graph.epochz: unknown field; allowed: seed, epochs"),
        ("stages: [graph]\ncommon: {lr: fast}\n", r"bad.yaml: common.lr: Input should be a valid number"),
        ("stages: [graph]\njoint: {joint: {p_text: 2}}\n", r"bad.yaml: joint.joint.p_text: .*less than or equal to 1"),
        ("stages: [graph]\ntext: {loss: l3}\n", r"bad.yaml: text.loss: Input should be 'l1', 'mse' or 'huber'"),
        ("stages: [pretrain]\n", r"bad.yaml: stages.0: Input should be 'graph', 'text', 'align' or 'joint'"),
        ("stagez: [graph]\n", r"bad.yaml: stagez: unknown field; allowed: data, stages"),
        ("stages: [graph\n", r"bad.yaml: line 2 column 1: malformed YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(InputError, match=match):
            load_recipe(bad)
    with pytest.raises(InputError, match="no such recipe file or shipped recipe"):
        load_recipe("nope")


def test_train_stage_refuses_bad_options(tmp_path):
    from qecat_core.model.train.stages import train_stage

    with pytest.raises(InputError, match=r"graph stage options: batch_size: Input should be greater than or equal to 1"):
        train_stage("graph", tmp_path / "t.aselmdb", tmp_path / "v.aselmdb", tmp_path / "out", {"batch_size": 0})


def test_shipped_checkpoint_was_trained_by_the_shipped_recipe():
    """models/qecat-emt-v1 comes from the default recipe: two graph passes with gradients through the
    move, then align and joint with the graph channel locked (joint keeps its best text-only epoch); the
    options the checkpoint recorded for its last stage are the recipe's."""
    from pathlib import Path

    from qecat_core.model.train.config import DEFAULT_RECIPE
    from qecat_core.model.train.recipes import load_recipe, stage_config

    rec = load_recipe(DEFAULT_RECIPE)
    g = rec["graph"]["model"]["graph"]
    assert g["refine"] and g["refine_grad"] and g["displacement_head"] and rec["graph"]["w_disp"] > 0
    for st in ("align", "joint"):
        assert rec[st]["freeze"] == ["graph", "graph_head", "disp_head"]
    cfg = json.loads((Path(__file__).resolve().parent.parent / "models/qecat-emt-v1/config.json").read_text())
    assert cfg["model"]["graph"]["refine"] and cfg["model"]["graph"]["refine_grad"]
    assert cfg["stage"] == "joint"
    for key, value in stage_config(rec, "joint").items():
        got = cfg["train_config"][key]
        assert ({**got, **value} if isinstance(value, dict) else value) == got, key


def test_split_table_is_fixed_and_stable():
    from qecat_core.model.train.text_table import split_table

    keys = [f"random{i}" for i in range(4000)]
    s = split_table(keys)
    frac = {k: s.count(k) / len(s) for k in ("train", "val", "test")}
    assert abs(frac["test"] - 0.1) < 0.02 and abs(frac["val"] - 0.1) < 0.02
    assert split_table(keys[:100] + ["new1", "new2"])[:100] == s[:100]  # adding rows moves none


def test_text_baselines_order():
    from qecat_core.model.train.text_table import text_baselines

    rng = np.random.default_rng(0)
    ads = rng.choice(["H", "O", "OH", "CO"], 600)
    metal = rng.choice(["Cu", "Pt", "Ag"], 600)
    base = {"H": -0.5, "O": -1.0, "OH": -1.5, "CO": 0.3}
    shift = {"Cu": 0.0, "Pt": -0.4, "Ag": 0.5}
    y = np.array([base[a] + shift[m] for a, m in zip(ads, metal)]) + rng.normal(0, 0.02, 600)
    df = pd.DataFrame({"text": [f"{a}</s>{m} (1 1 1)</s>[{a[0]} {m} atop]" for a, m in zip(ads, metal)],
                       "target": y, "adsorbate": ads})
    b = text_baselines(df[:500], df[500:])
    assert b["tfidf_ridge"] < b["per_adsorbate_mean"] < b["mean"]
    assert b["tfidf_ridge"] < 0.1  # the metal is a word the ridge sees


ALLOW = ["--allow-unseen-elements"]


def test_train_predict_evaluate_cli(tmp_path, data):
    rec = _recipe(tmp_path)
    r = runner.invoke(app, ["train", "graph", "--config", str(rec), "--train", str(data / "train.aselmdb"),
                            "--val", str(data / "val-id.aselmdb"), "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "graph: best val graph MAE" in r.output and (tmp_path / "m" / "config.json").is_file()
    ck = str(tmp_path / "m")

    out = tmp_path / "pred.parquet"
    # the model trained on Cu and Pt systems; val-id also holds Ag ones: refused, nothing written ...
    r = runner.invoke(app, ["predict", str(data / "val-id.aselmdb"), "-o", str(out), "--checkpoint", ck])
    assert r.exit_code == 2 and "val-id.aselmdb:4: contains Ag, which model" in r.output and not out.exists()
    r = runner.invoke(app, ["predict", str(data / "train.aselmdb"), "-o", str(out), "--checkpoint", ck])
    assert r.exit_code == 0 and list(pd.read_parquet(out).columns) == ["sid", "e_ads_pred", "mode", "model_id"]
    # ... unless asked for, and then marked
    for mode in ("fused", "graph", "text"):
        r = runner.invoke(app, ["predict", str(data / "val-id.aselmdb"), "-o", str(out), "--mode", mode,
                                "--checkpoint", ck, *ALLOW])
        assert r.exit_code == 0, r.output
        df = pd.read_parquet(out)
        assert list(df.columns) == ["sid", "e_ads_pred", "mode", "model_id", "unseen_elements"] and len(df) == 12
        assert (df["mode"] == mode).all() and np.isfinite(df["e_ads_pred"]).all()
        assert df["sid"].str.contains("-").all()  # from atoms.info['sid']
        assert (df["unseen_elements"] == df["sid"].str.startswith("Ag-").map({True: "Ag", False: ""})).all()

    texts = pd.DataFrame({"text": [a.info["text"] for a in make_systems(5, seed=9)]})
    texts.to_parquet(tmp_path / "t.parquet")
    r = runner.invoke(app, ["predict-text", str(tmp_path / "t.parquet"), "-o", str(tmp_path / "pt.parquet"),
                            "--checkpoint", ck])
    assert r.exit_code == 0, r.output
    pt = pd.read_parquet(tmp_path / "pt.parquet")
    assert len(pt) == 5 and list(pt["sid"]) == [f"row-{i}" for i in range(5)]
    # text mode from structures and from the same strings agree
    same = pd.DataFrame({"text": [a.info["text"] for a in make_systems(40, seed=3)[28:]]})
    same.to_parquet(tmp_path / "same.parquet")
    runner.invoke(app, ["predict", str(data / "val-id.aselmdb"), "-o", str(out), "--mode", "text", "--checkpoint", ck,
                        *ALLOW])
    r = runner.invoke(app, ["predict-text", str(tmp_path / "same.parquet"), "-o", str(tmp_path / "ps.parquet"),
                            "--checkpoint", ck])
    assert r.exit_code == 2 and "same.parquet: row 4 (sid row-4): contains Ag" in r.output
    runner.invoke(app, ["predict-text", str(tmp_path / "same.parquet"), "-o", str(tmp_path / "ps.parquet"),
                        "--checkpoint", ck, *ALLOW])
    np.testing.assert_allclose(pd.read_parquet(out)["e_ads_pred"], pd.read_parquet(tmp_path / "ps.parquet")["e_ads_pred"],
                               atol=1e-6)

    # bare structures (an .extxyz with tags but no metadata): adsorbate, bulk and facet read off the
    # geometry give the same predictions as the dataset's metadata
    from ase.io import write

    bare = []
    for a in make_systems(40, seed=3)[28:]:
        b = a.copy()
        b.info = {"sid": a.info["sid"]}
        bare.append(b)
    write(tmp_path / "bare.extxyz", bare)
    for mode in ("fused", "graph"):
        runner.invoke(app, ["predict", str(data / "val-id.aselmdb"), "-o", str(out), "--mode", mode, "--checkpoint", ck,
                            *ALLOW])
        r = runner.invoke(app, ["predict", str(tmp_path / "bare.extxyz"), "-o", str(tmp_path / "bare.parquet"),
                                "--mode", mode, "--checkpoint", ck, *ALLOW])
        assert r.exit_code == 0, r.output
        np.testing.assert_allclose(pd.read_parquet(tmp_path / "bare.parquet")["e_ads_pred"],
                                   pd.read_parquet(out)["e_ads_pred"], atol=1e-5)
    from ase.build import add_adsorbate, hcp0001

    ru = hcp0001("Ru", (2, 2, 3), vacuum=6.0)
    add_adsorbate(ru, "O", 1.2, "fcc")
    write(tmp_path / "ru.extxyz", ru)
    r = runner.invoke(app, ["predict", str(tmp_path / "ru.extxyz"), "-o", str(tmp_path / "ru.parquet"), "--checkpoint", ck])
    errors = [x for x in r.output.splitlines() if x.startswith("error: ")]  # (the progress bar is on stderr)
    assert r.exit_code == 2 and len(errors) == 1 and "ru.extxyz:0: " in errors[0] and "atoms.info['miller']" in errors[0]
    assert not (tmp_path / "ru.parquet").exists()

    r = runner.invoke(app, ["evaluate", "--checkpoint", ck, "--baseline", ck, "--data-dir", str(data),
                            "--splits", "val-id", "-o", str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(res["splits"]["val-id"]) == {"graph", "text (unaligned)", "text (aligned)", "fused"}
    assert (tmp_path / "eval" / "parity_val-id_fused.png").stat().st_size > 0
    assert "| val-id | fused | 12 |" in (tmp_path / "eval" / "table.md").read_text()


def test_cli_errors_are_one_line(tmp_path, data):
    (tmp_path / "empty.xyz").write_text("")
    cases = [
        ["predict", str(tmp_path / "empty.xyz"), "-o", str(tmp_path / "o.parquet"), "--checkpoint", str(tmp_path)],
        ["predict", str(data / "val-id.aselmdb"), "-o", str(tmp_path / "o.parquet"), "--checkpoint", str(tmp_path)],
        ["predict-text", str(tmp_path / "missing.parquet"), "-o", str(tmp_path / "o.parquet")],
        ["train", "pipeline", "--config", "nope", "-o", str(tmp_path / "x")],
        ["evaluate", "--checkpoint", str(tmp_path), "--data-dir", str(tmp_path)],
    ]
    for args in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, r.output)
    assert not (tmp_path / "o.parquet").exists()


def test_train_text_table_cli(tmp_path):
    rows = [{"sid": a.info["sid"], "text": a.info["text"], "e_ads_dft": a.info["e_ads"]} for a in make_systems(60, seed=5)]
    pd.DataFrame(rows).to_parquet(tmp_path / "oc.parquet")
    rec = _recipe(tmp_path, stages=["text"])
    r = runner.invoke(app, ["train", "text", "--data", str(tmp_path / "oc.parquet"), "--text-column", "text",
                            "--target-column", "e_ads_dft", "--config", str(rec), "-o", str(tmp_path / "oc")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "oc" / "report.json").read_text())
    assert sum(rep["split"].values()) == 60 and rep["test"]["n"] == rep["split"]["test"]
    assert set(rep["baselines_test_mae"]) >= {"mean", "per_adsorbate_mean", "tfidf_ridge"}
    r = runner.invoke(app, ["train", "text", "--data", str(tmp_path / "oc.parquet"), "--target-column", "dft",
                            "--config", str(rec), "-o", str(tmp_path / "oc2")])
    assert r.exit_code == 2 and "no column 'dft' (--target-column)" in r.output


def test_discrimination_merges_near_ties():
    from qecat_core.model.evaluate import regression_metrics

    # system a: two placements 3 meV apart (one minimum) + one distinct; system b: only a near-tie
    t = [0.000, 0.003, 0.500, 1.000, 1.004]
    p = [0.010, 0.000, 0.450, 1.020, 1.000]
    g = ["a", "a", "a", "b", "b"]
    m = regression_metrics(t, p, g)
    assert m["n_systems"] == 2 and m["spearman"] < 0.5  # both near-ties ranked the wrong way round
    assert m["n_systems_distinct"] == 1 and m["spearman_distinct"] > 0.8


def test_recipe_pretrains_graph_and_text_in_parallel_then_aligns(tmp_path, data):
    import torch

    from qecat_core.model.checkpoint import load_model
    from qecat_core.model.train.recipes import load_recipe, run_recipe
    from qecat_core.model.train.stages import transplant_lm

    rec_path = _recipe(tmp_path, stages=["graph", "text", "align"], align={"epochs": 1},
                       graph={"epochs": 1}, text={"epochs": 1})
    s = run_recipe(load_recipe(rec_path), tmp_path / "run", data / "train.aselmdb", data / "val-id.aselmdb")
    assert set(s["stages"]) == {"graph", "text", "align"} and all(r["done"] for r in s["stages"].values())
    assert (tmp_path / "run" / "model" / "config.json").is_file() and not (tmp_path / "run" / "model" / "resume").exists()
    # transplant: the graph model's text path becomes the text model's
    g, gt = load_model(tmp_path / "run" / "graph")
    t, _ = load_model(tmp_path / "run" / "text")
    transplant_lm(g, gt, tmp_path / "run" / "text")
    for (n, a), (_, b) in zip(g.lm.state_dict().items(), t.lm.state_dict().items()):
        assert torch.equal(a, b), n
    # a model with another vocabulary is refused
    rows = [{"sid": f"x{i}", "text": f"Zz{i} qq", "e_ads_dft": float(i)} for i in range(40)]
    pd.DataFrame(rows[:30]).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame(rows[30:]).to_parquet(tmp_path / "b.parquet")
    from qecat_core.model.train.stages import train_stage

    train_stage("text", tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "other",
                {"epochs": 1, "batch_size": 8, "model": TINY_MODEL, "num_threads": 1})
    with pytest.raises(InputError, match="tokenizer differs"):
        transplant_lm(g, gt, tmp_path / "other")
