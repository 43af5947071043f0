"""Builders shared by the screening tests (tests/test_screening.py, tests/integration/test_screen_slurm.py).

A tiny catalog (Cu, Pt, Cu3Pt (111); *O and *OH; <= 3 placements: 18 candidates) and the same with
*H added, enumerated once into a template work folder, and two tiny random-initialised models
saved with ``save_model`` (different weights), so no test depends on the shipped checkpoint.
"""

from __future__ import annotations

from pathlib import Path

CATALOG = {
    "name": "tinyscreen",
    "metals": ["Cu", "Pt"],
    "pairs": ["Cu-Pt"],
    "include_pure": True,
    "prototypes": [{"kind": "L1_2", "formula": "A3B"}],
    "facets": ["111"],
    "slab": {"min_layers": 3, "fixed_layers": 1, "min_lateral": 5.0},
    "adsorbates": ["*O", "*OH"],
    "placement": {"max_per_system": 3},
}
SHARD_SIZE = 5
TINY_MODEL = {
    "graph": {"sphere_channels": 8, "hidden_channels": 8, "edge_channels": 8, "num_distance_basis": 8,
              "num_layers": 1, "max_neighbors": 8},
    "lm": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
           "num_key_value_heads": 1},
    "fusion": {"head_hidden": 16, "align_dim": 8, "max_atom_tokens": 4},
}


def write_catalog(path: Path, **edits) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({**CATALOG, **edits}))
    return path


def make_base(root: Path) -> dict:
    """Catalog files, a pre-enumerated work folder (``work-template``) and two tiny model folders."""
    import pandas as pd
    import torch

    from qecat_core.common.structures import iter_structures
    from qecat_core.model.checkpoint import save_model
    from qecat_core.model.fusion import QECatModel
    from qecat_core.model.normalizer import Normalizer
    from qecat_core.model.tokenizer import train_tokenizer
    from qecat_core.screen.config import ScreenConfig
    from qecat_core.screen.plan import enumerate_candidates

    cat = write_catalog(root / "catalog.yaml")
    cat_h = write_catalog(root / "catalog-h.yaml", adsorbates=["*O", "*OH", "*H"])
    work = root / "work-template"
    enum = enumerate_candidates(ScreenConfig(catalog=cat, work=work, shard_size=SHARD_SIZE, workers=1))
    enum_h = enumerate_candidates(ScreenConfig(catalog=cat_h, work=work, shard_size=SHARD_SIZE, workers=1))
    cands = pd.read_parquet(Path(enum_h.directory) / "candidates.parquet")
    structures = list(iter_structures(Path(enum_h.directory) / "shards"))[:2]
    tok = train_tokenizer(list(cands["text"]) * 2, structures, vocab_size=256)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        norm = Normalizer.fit([-1.0, -0.5, -0.2] * 3, ["*O", "*OH", "*H"] * 3)
        m = QECatModel(TINY_MODEL, len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, norm).eval()
        save_model(m, tok, root / f"model-{seed}")
        models.append(root / f"model-{seed}")
    return {"root": root, "catalog": cat, "catalog_h": cat_h, "work": work, "models": models,
            "n": enum.n_candidates, "n_h": enum_h.n_candidates, "shards": enum.n_shards}


def make_env(base: dict, tmp_path: Path) -> dict:
    """Fresh results and work folders for one test (the enumerations copied in, not redone)."""
    import shutil

    work = tmp_path / "runs"
    shutil.copytree(base["work"], work)
    return {**base, "results": tmp_path / "results", "workdir": work, "tmp": tmp_path}


def screen_config(env: dict, executor: str = "inline", **kw):
    """The screen config of ``env``'s catalog and first model; ``kw`` overrides (``load_screen_config``)."""
    from qecat_core.screen.config import load_screen_config

    args = dict(catalog=env["catalog"], checkpoint=env["models"][0], results=env["results"], work=env["workdir"],
                shard_size=SHARD_SIZE, workers=1, executor=executor, batch_size=4)
    args.update(kw)
    return load_screen_config(None, **args)


def read_predictions(results: Path):
    """Every prediction row under ``results`` (empty frame with sid/model_id when none)."""
    import pandas as pd

    files = sorted(Path(results).glob("predictions/*/*/*/part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame(
        columns=["sid", "model_id"])


def screen_and_stop_a_job(cfg, workdir: Path, key: str, stop, poll: float = 0.01, timeout: float = 600):
    """Run ``run_screen(cfg)`` in a thread; as soon as a job holds a shard lock whose JSON has ``key``
    (``pid`` for local jobs, ``job`` for SLURM ones), call ``stop(info[key])`` once.

    Returns ``(result, stopped)``: the run's ``ScreenResult`` and the value stopped (None when every
    shard finished first).
    """
    import json
    import threading
    import time

    from qecat_core.screen.pipeline import run_screen

    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run_screen(cfg)))
    t.start()
    stopped = None
    deadline = time.time() + timeout
    locks = Path(workdir) / "tinyscreen" / "predictions"
    while t.is_alive() and time.time() < deadline and stopped is None:
        for lock in locks.rglob(".*.lock"):
            try:
                info = json.loads(lock.read_text() or "null")
            except (OSError, json.JSONDecodeError):
                continue
            if info and info.get(key):
                stop(info[key])
                stopped = info[key]
                break
        time.sleep(poll)
    t.join(timeout=timeout + 300)
    return box["r"], stopped
