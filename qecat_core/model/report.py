"""The evaluation table of issue "QE-Catalytic model": four predictors x validation splits.

Rows: ``graph`` (graph channel alone), ``text (unaligned)`` (the same LM trained on text alone, a
CatBERTa-style baseline), ``text (aligned)`` (text-only mode of the aligned model, no structure) and
``fused`` (structure + text). Columns per split: MAE (eV), fraction within 0.1 eV, configuration
discrimination (mean Spearman rho over systems with >= 2 placements). Rows flagged as anomalous by
the labeller are left out, as in training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from qecat_core.common.errors import InputError

DEFAULT_SPLITS = ("val-id", "val-ood-ads", "val-ood-cat")
PREDICTORS = (("graph", "model", "graph"), ("text (unaligned)", "baseline", "text"),
              ("text (aligned)", "model", "text"), ("fused", "model", "fused"))


def evaluation_table(checkpoint: str | Path, data_dir: str | Path, out_dir: str | Path,
                     baseline: str | Path | None = None, splits=DEFAULT_SPLITS, batch_size: int = 64,
                     limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (and the text-only ``baseline``) on ``data_dir/<split>.aselmdb``.

    Writes ``out_dir/metrics.json``, ``out_dir/table.md`` and parity plots
    ``out_dir/parity_<split>_<predictor>.png``; returns the metrics as a nested dict.
    """
    from qecat_core.model.checkpoint import load_model, weights_hash
    from qecat_core.model.data import StructureDataset
    from qecat_core.model.evaluate import parity_plot, predict_dataset, regression_metrics

    data_dir, out = Path(data_dir), Path(out_dir)
    paths = {s: data_dir / f"{s}.aselmdb" for s in splits}
    for s, p in paths.items():
        if not p.exists():
            raise InputError(f"{p}: no such split file (splits are {', '.join(splits)}; build with qecat dataset build)")
    models = {"model": load_model(checkpoint)}
    if baseline is not None:
        models["baseline"] = load_model(baseline)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "baseline": str(baseline) if baseline else None,
                              "model_id": weights_hash(models["model"][0]),
                              "splits": {}}
    from tqdm.auto import tqdm

    jobs = [(s, name, which, mode) for s in splits for (name, which, mode) in PREDICTORS if which in models]
    bar = tqdm(total=len(jobs), desc="evaluate", unit="run", disable=not progress)
    cache: dict[tuple[str, str], Any] = {}
    for split, name, which, mode in jobs:
        model, tok = models[which]
        key = (split, which)
        if key not in cache:
            gcfg = model.config["graph"]
            cache[key] = StructureDataset(paths[split], crop_radius=gcfg["crop_radius"],
                                          max_num_elements=gcfg["max_num_elements"], need_text=True,
                                          need_target=True, limit=limit)
        df = predict_dataset(model, cache[key], tok, mode, batch_size)
        m = regression_metrics(df["e_ads_true"], df["e_ads_pred"], df["system_id"].tolist())
        result["splits"].setdefault(split, {})[name] = m
        slug = name.replace(" ", "_").replace("(", "").replace(")", "")
        parity_plot(df, out / f"parity_{split}_{slug}.png", title=f"{split} {name}", metrics=m)
        bar.update(1)
    bar.close()
    (out / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "table.md").write_text(markdown_table(result))
    return result


def _f(x: float, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def markdown_table(result: dict[str, Any]) -> str:
    """One row per predictor and split: n, MAE (eV), within 0.1 eV (%), Spearman rho (systems)."""
    lines = ["| split | predictor | n | MAE (eV) | within 0.1 eV | Spearman ρ (systems) | ρ, ties < 10 meV merged (systems) |",
             "|---|---|---|---|---|---|---|"]
    for split, rows in result["splits"].items():
        for name, m in rows.items():
            lines.append(f"| {split} | {name} | {m['n']} | {_f(m['mae'], '.4f')} | "
                         f"{_f(100 * m['within_0.1'], '.1f')}% | {_f(m['spearman'], '.3f')} ({m['n_systems']}) | "
                         f"{_f(m.get('spearman_distinct'), '.3f')} ({m.get('n_systems_distinct', 0)}) |")
    return "\n".join(lines) + "\n"
