"""The text channel on a table of configuration strings (e.g. real OC20 strings with DFT energies).

:func:`train_text_table` trains on a fixed, hashed 80/10/10 split by system and reports the test
MAE (eV) next to the baselines of :func:`text_baselines`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qecat_core.common.atomic import write_json_atomic
from qecat_core.common.errors import InputError
from qecat_core.model.train.recipes import load_recipe, stage_config
from qecat_core.model.train.stages import train_stage

SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def split_table(keys: Sequence[str], salt: str = "qecat-text-split-v1") -> list[str]:
    """Fixed split of a text table by key (normally ``sid``): train 80% / val 10% / test 10%.

    A row's split is ``sha256(salt + key)`` read as a number in [0, 1): below 0.1 -> test, below 0.2 ->
    val, else train. It depends only on the key, so adding rows never moves old ones.

    >>> split_table(["random832777", "random2513894", "random1348342"])
    ['train', 'train', 'train']
    """
    import hashlib

    out = []
    for k in keys:
        u = int.from_bytes(hashlib.sha256((salt + str(k)).encode()).digest()[:8], "big") / 2**64
        out.append("test" if u < SPLIT_FRACTIONS["test"] else
                   "val" if u < SPLIT_FRACTIONS["test"] + SPLIT_FRACTIONS["val"] else "train")
    return out


def _words(text: str) -> list[str]:
    """Words of a configuration string (brackets, parentheses and ``</s>`` split off) and their bigrams."""
    w = re.sub(r"(</s>|\[|\]|\(|\))", r" \1 ", text).split()
    return w + [a + "_" + b for a, b in zip(w, w[1:])]


def text_baselines(train_df, test_df) -> dict[str, float]:
    """MAE (eV) of three text baselines fitted on ``train_df`` (columns text, target, adsorbate).

    mean: the training mean; per_adsorbate_mean: the adsorbate's training mean (global mean for unseen
    adsorbates); tfidf_ridge: scikit-learn's ridge regression on its TF-IDF (sublinear term frequency,
    l2 rows) of word 1-2-grams of the configuration string, alpha chosen on the last 10% of train.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    y_tr = train_df["target"].to_numpy(float)
    y_te = test_df["target"].to_numpy(float)
    out = {"mean": float(np.abs(y_te - y_tr.mean()).mean())}
    means = train_df.groupby("adsorbate")["target"].mean().to_dict()
    pa = np.array([means.get(a, y_tr.mean()) for a in test_df["adsorbate"]])
    out["per_adsorbate_mean"] = float(np.abs(y_te - pa).mean())

    def fit(texts, y, alpha):
        vec = TfidfVectorizer(analyzer=_words, sublinear_tf=True, lowercase=False)
        return vec, Ridge(alpha=alpha).fit(vec.fit_transform(texts), y)

    texts_tr = list(train_df["text"])
    n_fit = int(0.9 * len(texts_tr))
    best = None
    for alpha in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
        vec, model = fit(texts_tr[:n_fit], y_tr[:n_fit], alpha)
        mae = float(np.abs(model.predict(vec.transform(texts_tr[n_fit:])) - y_tr[n_fit:]).mean())
        if best is None or mae < best[0]:
            best = (mae, alpha)
    vec, model = fit(texts_tr, y_tr, best[1])
    out["tfidf_ridge"] = float(np.abs(model.predict(vec.transform(list(test_df["text"]))) - y_te).mean())
    out["tfidf_ridge_alpha"] = best[1]
    return out


def train_text_table(data: str | Path, out_dir: str | Path, text_col: str = "text", target_col: str = "e_ads_dft",
                     key_col: str = "sid", recipe: str | Path | dict = "oc20-text",
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the text channel on a parquet table of configuration strings with a fixed split.

    Writes ``out_dir/splits/{train,val,test}.parquet`` (columns sid, text, target, adsorbate), trains the
    ``text`` stage (early stopping on val), then evaluates the best model once on test and writes
    ``out_dir/report.json`` with the test MAE and the baselines' test MAE (all eV).
    """
    import pandas as pd

    from qecat_core.model.normalizer import adsorbate_from_text

    path = Path(data)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot read parquet ({type(exc).__name__})") from None
    for col, what in ((text_col, "--text-column"), (target_col, "--target-column")):
        if col not in df.columns:
            raise InputError(f"{path}: no column {col!r} ({what}); columns: {', '.join(map(str, df.columns))}")
    if len(df) < 10:
        raise InputError(f"{path}: {len(df)} rows; need at least 10 to split train/val/test")
    keys = df[key_col].astype(str) if key_col in df.columns else pd.Series([str(i) for i in range(len(df))])
    table = pd.DataFrame({"sid": keys.to_numpy(), "text": df[text_col].astype(str).to_numpy(),
                          "target": pd.to_numeric(df[target_col], errors="coerce").to_numpy()})
    table = table[np.isfinite(table["target"])].reset_index(drop=True)
    table["adsorbate"] = [adsorbate_from_text(t) for t in table["text"]]
    table["split"] = split_table(table["sid"])
    out = Path(out_dir)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    from qecat_core.common.atomic import write_parquet_atomic

    parts = {}
    for name in ("train", "val", "test"):
        parts[name] = table[table["split"] == name].drop(columns="split").reset_index(drop=True)
        write_parquet_atomic(parts[name], out / "splits" / f"{name}.parquet")
    rec = recipe if isinstance(recipe, dict) else load_recipe(recipe)
    t0 = time.perf_counter()
    summary = train_stage("text", out / "splits" / "train.parquet", out / "splits" / "val.parquet", out / "model",
                          stage_config(rec, "text", overrides))
    wall = time.perf_counter() - t0
    report = {"data": str(path), "text_column": text_col, "target_column": target_col, "split_key": key_col,
              "split": {k: len(v) for k, v in parts.items()}, "train_minutes": round(wall / 60, 2),
              "done": summary["done"], "best_epoch": summary["best_epoch"], "val_mae": summary["best_mae"]}
    if summary["done"] or summary["best_epoch"] >= 0:
        from qecat_core.model.checkpoint import load_model
        from qecat_core.model.data import TextDataset
        from qecat_core.model.evaluate import evaluate

        model, tok = load_model(out / "model")
        metrics, _ = evaluate(model, TextDataset(out / "splits" / "test.parquet"), tok, modes=["text"])
        report["test"] = {k: metrics["text"][k] for k in ("n", "mae", "rmse", "within_0.1")}
        report["baselines_test_mae"] = text_baselines(parts["train"], parts["test"])
    write_json_atomic(out / "report.json", report)
    return report
