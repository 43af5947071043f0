"""Training recipes: YAML files naming the data, the stages and their options; :func:`run_recipe` runs them.

A recipe is a file, or the name of one shipped in ``qecat_core/model/train/configs`` (the recipe of
the shipped model, :data:`DEFAULT_RECIPE`, and the OC20 text recipe ``oc20-text``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from qecat_core.common.atomic import replace_dir_atomic
from qecat_core.common.config import load_yaml_model, validation_message
from qecat_core.common.errors import InputError, QecatError
from qecat_core.model.train.config import DEFAULT_RECIPE, STAGES, Recipe, TrainConfig  # noqa: F401
from qecat_core.model.train.stages import _append_jsonl, _merge, train_stage

# --------------------------------------------------------------------------------------------
# recipes (config files) and the text-table entry point

CONFIG_DIR = Path(__file__).with_name("configs")


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """A training recipe (:class:`~qecat_core.model.train.config.Recipe`): a YAML file, or the name of
    one shipped in ``qecat_core/model/train/configs``; one-line errors naming the file and the field.

    Returns the recipe as a mapping (``data``, ``stages``, ``common``, one mapping per stage) with
    ``_path``, the file it came from.
    """
    p = Path(name_or_path)
    if not p.is_file():
        cand = CONFIG_DIR / f"{name_or_path}.yaml"
        if not cand.is_file():
            names = ", ".join(sorted(x.stem for x in CONFIG_DIR.glob("*.yaml")))
            raise InputError(f"{name_or_path}: no such recipe file or shipped recipe (shipped: {names})")
        p = cand
    recipe = load_yaml_model(p, Recipe, "recipe file")
    for key in ("common", *STAGES):  # each mapping of options is a partial TrainConfig
        try:
            TrainConfig.model_validate(getattr(recipe, key))
        except ValidationError as err:
            raise InputError(validation_message(str(p), err, TrainConfig).replace(f"{p}: ", f"{p}: {key}.", 1)) from None
    rec = recipe.model_dump(exclude_unset=True)
    rec["_path"] = str(p)
    return rec


def stage_config(recipe: dict[str, Any], stage: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    return _merge(_merge(recipe.get("common") or {}, recipe.get(stage) or {}), overrides)


def run_recipe(recipe: dict[str, Any], out_dir: str | Path, train_path=None, val_path=None,
               overrides: dict[str, Any] | None = None, stages: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the recipe's stages in ``out_dir/<stage>``; the final model is copied to ``out_dir/model``."""
    data = recipe.get("data") or {}
    train_path = train_path or data.get("train")
    val_path = val_path or data.get("val")
    if not train_path or not val_path:
        raise InputError(f"{recipe.get('_path', 'recipe')}: give the training and validation data "
                         "(data.train / data.val, or --train / --val)")
    for p in (train_path, val_path):
        if not Path(p).exists():
            raise InputError(f"{p}: no such file (build the dataset first: qecat dataset build -o data/emt-v1)")
    stages = list(stages or recipe.get("stages") or [])
    if not stages:
        raise InputError(f"{recipe.get('_path', 'recipe')}: no stages to run")
    out = Path(out_dir)
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    init = (overrides or {}).get("init_from")
    # graph and text pre-training are independent: with parallel_pretrain they run at the same time in
    # two processes (one core each); align then starts from the graph model with the text model's LM.
    first = stages[:2]
    if sorted(first) == ["graph", "text"] and recipe.get("parallel_pretrain", True):
        import multiprocessing as mp

        from qecat_core.common.pools import Pool, WorkerDied

        jobs = [(st, train_path, val_path, out / st, stage_config(recipe, st, {**(overrides or {}), "init_from": init}))
                for st in first]
        # a dead worker (OOM killer, lost node) breaks the pool at once; no retry here (a stage is long and
        # would likely die again): one line naming the stage, and a rerun resumes both from their checkpoints
        got: dict[str, Any] = {}
        with Pool("train", 2, mp.get_context("spawn"), stop_on_error=False) as pool:  # an error: the other finishes
            try:
                for k, result in pool.map_unordered(_train_job, jobs, lambda ks: "training stage "
                                                    + ", ".join(first[k] for k in ks), retries=0):
                    got[first[k]] = result
            except WorkerDied as exc:
                stopped = [first[k] for k in exc.unfinished if k not in exc.lost]
                raise QecatError(f"train: {exc}" + (f" (stage {', '.join(stopped)} was stopped too)" if stopped else "")
                                 + f"; stages resume from their checkpoints in {out}: rerun to continue") from None
        results.update({st: got[st] for st in first})
        rest = stages[2:] if all(results[st]["done"] for st in first) else []
    else:
        rest = stages
    prev = out / "graph" if "graph" in results else init
    for st in rest:
        c = stage_config(recipe, st, overrides)
        if st == "text":  # the LM's own pre-training starts from scratch (or the overrides' init_from)
            c["init_from"] = init
        elif prev is not None:
            c["init_from"] = str(prev)
        if st == "align" and "text" in stages and (out / "text").exists():
            c["init_lm_from"] = str(out / "text")
        results[st] = train_stage(st, train_path, val_path, out / st, c)
        if st != "text":
            prev = out / st
        if not results[st]["done"]:  # stopped by max_minutes: resumable, later stages wait
            break
    final = out / "model"
    if all(st in results and results[st]["done"] for st in stages):
        _publish(Path(prev) if prev is not None else out / stages[-1], final)
    summary = {"stages": results, "model": str(final) if final.exists() else None,
               "wall_minutes": round((time.perf_counter() - t0) / 60, 2)}
    _append_jsonl(out / "runs.jsonl", {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary})
    return summary


def _train_job(job: tuple) -> dict[str, Any]:
    """:func:`train_stage` of one ``(stage, train, val, out, config)`` (a parallel-pretrain worker)."""
    return train_stage(*job)


def _publish(src: Path, dst: Path) -> None:
    """Copy a model folder (without its resume state) to ``dst`` atomically."""
    import shutil

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("resume"))
    replace_dir_atomic(tmp, dst)


