"""Training stages, each resumable, seeded and early-stopped on a validation split.

Stages (``train_stage(stage, ...)``):

* ``graph``: graph channel IS2RE-direct pre-training, L1 on the normalised E_ads (graph head); with
  ``w_disp`` > 0 also the auxiliary IS2RS target: each free atom's relaxation displacement (Å, from the
  ``relaxed`` structures file) predicted by the model's equivariant displacement head.
* ``text``: the same LM on text alone (unaligned CatBERTa-style baseline); takes structure files or a
  parquet with ``text`` and a target column (``target`` / ``e_ads_dft`` / ``e_ads``, eV).
* ``align``: graph-text alignment: symmetric InfoNCE between projected pooled graph and pooled text
  embeddings (learned temperature) + distillation of the detached fused prediction into the text-only
  prediction + supervised L1 on fused, text and graph predictions.
* ``joint``: fine-tuning with a random mix of fused and text-only batches (``p_text``).

A stage starts from ``config['init_from']`` (a model folder, normally the previous stage's ``out_dir``)
or from scratch (new tokenizer trained on the training text, normaliser fitted on the training
targets). Every epoch the optimiser/scheduler state and the current model go to ``out_dir/resume/``
and the best model so far (by the validation MAE of the monitored mode) to ``out_dir``; calling
``train_stage`` again with the same ``out_dir`` continues after the last finished epoch (a larger
``epochs`` extends a finished run; the LR schedule is then stretched to the new length). Shuffling
is seeded per epoch, so a resumed run sees the same batches as an uninterrupted one.
``out_dir/train_log.jsonl`` has one line per epoch; ``out_dir/metrics.json`` the best epoch's
validation metrics (eV).

``config['model']`` (graph / lm / fusion hyper-parameters) applies to a model built from scratch; with
``init_from`` the architecture comes from that folder and only ``model.fusion`` options that need no
new weights (``text_pool``, ``graph_residual``) are taken over.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qecat_core.common.atomic import atomic_path, write_text_atomic
from qecat_core.common.config import validate
from qecat_core.common.errors import InputError, QecatError
from qecat_core.model import checkpoint as ckpt
from qecat_core.model.train.config import STAGES, TrainConfig

log = logging.getLogger(__name__)

MONITOR = {"graph": "graph", "text": "text", "align": "text", "joint": "fused"}
VAL_MODES = {"graph": ("graph",), "text": ("text",), "align": ("fused", "text", "graph"), "joint": ("fused", "text")}

#: Every option's default (:class:`~qecat_core.model.train.config.TrainConfig`) as a plain mapping.
DEFAULT_TRAIN_CONFIG: dict[str, Any] = TrainConfig().model_dump()


def _merge(base: dict, over: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# data and model


def _load_split(path, stage: str, cfg: dict, graph_cfg: dict, limit, relaxed=None) -> Any:
    from qecat_core.model.data import StructureDataset, TextDataset

    if path is None:
        raise QecatError("a training and a validation path are needed")
    if str(path).endswith(".parquet"):
        if stage != "text":
            raise InputError(f"{path}: stage {stage!r} needs structures (.aselmdb ...), a parquet has text only")
        ds = TextDataset(path)
        if limit:
            ds.examples = ds.examples[: int(limit)]
        return ds
    ds = StructureDataset(path, crop_radius=graph_cfg["crop_radius"], max_num_elements=graph_cfg["max_num_elements"],
                          need_text=stage != "graph", need_target=True, limit=limit, relaxed=relaxed)
    if stage == "text":
        for e in ds.examples:
            e.data = None
    return ds


def _build_new_model(train_ds, cfg: dict, train_path):
    from qecat_core.model.fusion import QECatModel, default_model_config
    from qecat_core.model.normalizer import Normalizer
    from qecat_core.model.tokenizer import train_tokenizer

    texts = [e.text for e in train_ds.examples if e.text]
    cif_atoms = []
    n_cif = int(cfg["tokenizer_cif_structures"] or 0)
    if n_cif and not str(train_path).endswith(".parquet"):
        from qecat_core.common.structures import iter_structures

        for i, a in enumerate(iter_structures(train_path)):
            if i >= n_cif:
                break
            cif_atoms.append(a)
    tok = train_tokenizer(texts or ["O</s>Cu (1 1 1)</s>[O Cu atop]"], cif_atoms, cfg["tokenizer_vocab_size"])
    norm = Normalizer.fit(train_ds.targets, train_ds.adsorbates, cfg["per_adsorbate_offsets"])
    mcfg = _merge(default_model_config(), cfg["model"])
    model = QECatModel(mcfg, len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, norm)
    return model, tok


def _param_groups(model, cfg: dict) -> list[dict]:
    frozen = set(cfg["freeze"] or [])
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        top = name.split(".", 1)[0]
        if top in frozen:
            p.requires_grad_(False)
            continue
        decay = p.ndim >= 2 and "embed" not in name and "prefix_type" not in name
        groups.setdefault((top, decay), []).append(p)
    out = []
    for (top, decay), params in sorted(groups.items(), key=lambda kv: kv[0]):
        mult = float(cfg["lr_mult"].get(top, 1.0))
        out.append({"params": params, "lr": cfg["lr"] * mult, "weight_decay": cfg["weight_decay"] if decay else 0.0,
                    "name": f"{top}{'' if decay else '/nodecay'}"})
    return out


def _lr_lambda(cfg: dict, total_steps: int):
    warm = max(1, int(cfg["warmup_frac"] * total_steps))
    floor = float(cfg["min_lr_frac"])

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg["schedule"] == "constant":
            return 1.0
        x = min(1.0, (step - warm) / max(1, total_steps - warm))
        if cfg["schedule"] == "linear":
            return floor + (1 - floor) * (1 - x)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * x))

    return f


# --------------------------------------------------------------------------------------------
# losses per stage


def adsorbate_weights(normalizer, targets: Sequence[float], adsorbates: Sequence[str | None],
                      power: float) -> dict[str, float]:
    """Loss weight per adsorbate key: (s / s_a) ** ``power``, scaled to mean 1 over the examples.

    s_a is the standard deviation of the adsorbate's normalised training targets (after the
    per-adsorbate offsets), s that of all targets. With ``power`` 1 every adsorbate's errors count
    relative to its own spread: an adsorbate whose placements differ by a few meV (``*H``) weighs as
    much as one whose differ by tenths of an eV (``*N2``). Adsorbates with fewer than 2 examples get s.

    >>> from qecat_core.model.normalizer import Normalizer
    >>> e, a = [0.0, 0.2, -1.0, -1.1, -0.9, -1.0], ["*O", "*O", "*H", "*H", "*H", "*H"]
    >>> w = adsorbate_weights(Normalizer.fit(e, a), e, a, 1.0)
    >>> w["H"] > 1 > w["O"], round((2 * w["O"] + 4 * w["H"]) / 6, 6)
    (True, 1.0)
    """
    from qecat_core.model.normalizer import adsorbate_key

    y = normalizer.normalize(torch.tensor(list(targets), dtype=torch.float64), list(adsorbates)).double().numpy()
    keys = [adsorbate_key(a) for a in adsorbates]
    karr = np.array(keys)
    s = float(y.std()) or 1.0
    raw = {}
    for k in sorted(set(keys)):
        yk = y[karr == k]
        sk = float(yk.std()) if len(yk) >= 2 else s
        raw[k] = (s / max(sk, 1e-3 * s)) ** float(power)
    mean = float(np.mean([raw[k] for k in keys]))
    return {k: v / mean for k, v in raw.items()}


def stage_loss(model, batch, stage: str, cfg: dict, rng: random.Random) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of one batch and its parts (floats), for ``stage``.

    With ``cfg['w_pair']`` > 0 the stage's main prediction (graph / text / fused, or the joint stage's
    mode of this batch) also gets :func:`~qecat_core.model.train.losses.pair_loss` over placements of the
    same system (use with ``group_batches`` so that batches hold whole systems). With
    ``cfg['_ads_weights']`` (set by :func:`train_stage` from ``ads_weight_power``) the regression
    losses on E_ads are weighted per adsorbate (:func:`adsorbate_weights`).
    """
    from qecat_core.model.normalizer import adsorbate_key
    from qecat_core.model.train.losses import distillation_loss, info_nce, pair_loss
    from qecat_core.model.train.losses import regression_loss as _regression_loss

    dev = batch.targets.device  # the batch is on the model's device (train_stage moves it)
    y = model.normalizer.normalize(batch.targets.cpu(), batch.adsorbates).to(dev)  # offsets are CPU tensors
    kind = cfg["loss"]
    weights = cfg.get("_ads_weights")
    wb = None if not weights else torch.tensor([weights.get(adsorbate_key(a), 1.0) for a in batch.adsorbates],
                                               device=dev)

    def regression_loss(pred, target, kind):
        return _regression_loss(pred, target, kind, wb)
    parts: dict[str, torch.Tensor] = {}
    if stage == "graph" and cfg["w_disp"]:
        if batch.disp is None:
            raise QecatError("w_disp > 0 needs relaxed positions for every training structure (training option "
                             "'relaxed': a file of relaxed structures with the same sids)")
        disp, main = model.displacement(batch)
        free = batch.graph["tags"] >= 1
        parts["graph"] = regression_loss(main, y, kind)
        parts["disp"] = (disp[free] - batch.disp[free]).norm(dim=-1).mean()
        total = parts["graph"] + float(cfg["w_disp"]) * parts["disp"]
    elif stage == "graph":
        main = model(batch, "graph").pred
        parts["graph"] = regression_loss(main, y, kind)
        total = parts["graph"]
    elif stage == "text":
        main = model(batch, "text").pred
        parts["text"] = regression_loss(main, y, kind)
        total = parts["text"]
    elif stage == "align":
        w = cfg["align"]
        f = model(batch, "fused")
        t = model(batch, "text")
        main = f.pred
        g_pred = model.graph_head(f.graph_emb).squeeze(-1)
        parts["fused"] = regression_loss(f.pred, y, kind)
        parts["text"] = regression_loss(t.pred, y, kind)
        parts["graph"] = regression_loss(g_pred, y, kind)
        zg, zt = model.align_embeddings(f.graph_emb, t.text_emb)
        parts["nce"] = info_nce(zg, zt, model.logit_scale)
        parts["distill"] = distillation_loss(t.pred, f.pred, kind)
        total = (w["w_fused"] * parts["fused"] + w["w_text"] * parts["text"] + w["w_graph"] * parts["graph"]
                 + w["w_nce"] * parts["nce"] + w["w_distill"] * parts["distill"])
    elif stage == "joint":
        w = cfg["joint"]
        mode = "text" if rng.random() < w["p_text"] else "fused"
        out = model(batch, mode)
        main = out.pred
        parts[mode] = regression_loss(out.pred, y, kind)
        total = parts[mode]
        if mode == "fused" and w["w_graph"]:
            parts["graph"] = regression_loss(model.graph_head(out.graph_emb).squeeze(-1), y, kind)
            total = total + w["w_graph"] * parts["graph"]
    else:
        raise QecatError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    if cfg["w_pair"]:
        parts["pair"] = pair_loss(main, y, batch.system_ids, kind)
        total = total + float(cfg["w_pair"]) * parts["pair"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


def system_batches(system_ids: Sequence[str | None], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of dataset indices that keep the placements of a system together.

    Systems are shuffled (seeded by ``generator``) and packed whole into batches of at most
    ``batch_size`` rows; a system larger than ``batch_size`` is split. Rows without a system id are
    systems of one.

    >>> b = system_batches(["a", "b", "a", None, "b"], 2, torch.Generator().manual_seed(0))
    >>> sorted(sorted(x) for x in b)
    [[0, 2], [1, 4], [3]]
    """
    groups: dict[str, list[int]] = {}
    for i, g in enumerate(system_ids):
        groups.setdefault(g if g is not None else f"\0{i}", []).append(i)
    members = list(groups.values())
    order = torch.randperm(len(members), generator=generator).tolist()
    batches: list[list[int]] = []
    cur: list[int] = []
    for k in order:
        rows = members[k]
        if cur and len(cur) + len(rows) > batch_size:
            batches.append(cur)
            cur = []
        while len(rows) > batch_size:
            batches.append(rows[:batch_size])
            rows = rows[batch_size:]
        cur = cur + rows
    if cur:
        batches.append(cur)
    return batches


# --------------------------------------------------------------------------------------------
# resumable loop


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _trim_log(path: Path, stage: str, last_epoch: int) -> None:
    """Drop log lines of epochs not covered by the resume state (written just before a crash)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("stage") != stage or rec.get("epoch", -1) <= last_epoch:
            keep.append(line)
    write_text_atomic(path, "".join(k + "\n" for k in keep))


def transplant_lm(model, tok, source: str | Path) -> None:
    """Copy the language channel (LM + text head) of the model folder ``source`` into ``model``.

    Used to start alignment from a graph-pretrained model and a text-pretrained one; both must share the
    tokenizer (same vocabulary) and the LM architecture, else :class:`InputError`.
    """
    other, otok = ckpt.load_model(source)
    if otok.get_vocab() != tok.get_vocab():
        raise InputError(f"{source}: its tokenizer differs from the graph model's; train both stages on the same data")
    if other.lm.config.to_dict() != model.lm.config.to_dict():
        raise InputError(f"{source}: its LM architecture differs from the graph model's")
    model.lm.load_state_dict(other.lm.state_dict())
    model.text_head.load_state_dict(other.text_head.state_dict())
    if other.training_elements is not None:
        model.training_elements = tuple(sorted(set(model.training_elements or ()) | set(other.training_elements)))


def _save_state(resume_dir: Path, model, tok, opt, sched, state: dict) -> None:
    ckpt.save_model(model, tok, resume_dir)
    with atomic_path(resume_dir / "state.pt", suffix=".pt") as tmp:
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), **state}, tmp)


def train_stage(stage: str, train_path: str | Path, val_path: str | Path, out_dir: str | Path,
                config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one stage (see module docstring); returns a summary with the best validation metrics (eV).

    ``config``: overrides of the :class:`~qecat_core.model.train.config.TrainConfig` defaults (nested
    dicts merged); a bad key or value raises :class:`InputError` naming it.
    """
    from torch.utils.data import DataLoader

    from qecat_core.model.data import Collator
    from qecat_core.model.evaluate import evaluate

    if stage not in STAGES:
        raise QecatError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    private = {k: v for k, v in (config or {}).items() if k.startswith("_")}
    public = {k: v for k, v in (config or {}).items() if not k.startswith("_")}
    cfg = {**validate(TrainConfig, _merge(DEFAULT_TRAIN_CONFIG, public), f"{stage} stage options").model_dump(),
           **private}
    if cfg["num_threads"]:
        torch.set_num_threads(int(cfg["num_threads"]))
    from qecat_core.model.device import resolve_device

    device = resolve_device(cfg["device"])  # one-line InputError before any data is read
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resume_dir = out / "resume"
    log_path = out / ckpt.TRAIN_LOG
    monitor = cfg["monitor"] or MONITOR[stage]
    seed_everything(int(cfg["seed"]))

    state: dict[str, Any] = {"epoch": -1, "best": math.inf, "best_epoch": -1, "bad_epochs": 0,
                             "stopped_early": False, "step": 0, "best_metrics": None}
    resuming = (resume_dir / "state.pt").is_file()
    if resuming:
        saved = torch.load(resume_dir / "state.pt", map_location="cpu", weights_only=False)
        if saved.get("stage") != stage:
            raise QecatError(f"{out}: holds a resumable '{saved.get('stage')}' run, not '{stage}'; use another out_dir")
        state.update({k: saved[k] for k in state if k in saved})
        if state["stopped_early"] or state["epoch"] + 1 >= int(cfg["epochs"]):
            log.info("%s: stage %s already finished (best epoch %d)", out, stage, state["best_epoch"])
            return _summary(stage, out, state, monitor, cfg)
        model, tok = ckpt.load_model(resume_dir)
        _trim_log(log_path, stage, state["epoch"])
    elif cfg["init_from"]:
        model, tok = ckpt.load_model(cfg["init_from"])
        if cfg["model"].get("fusion"):  # fusion options that need no new weights (e.g. text_pool)
            model.config["fusion"].update(cfg["model"]["fusion"])
        if cfg["init_lm_from"]:
            transplant_lm(model, tok, cfg["init_lm_from"])
    else:
        model, tok = None, None

    from qecat_core.model.fusion import default_model_config

    gcfg = model.config["graph"] if model is not None else _merge(default_model_config(), cfg["model"])["graph"]
    train_ds = _load_split(train_path, stage, cfg, gcfg, cfg["limit_train"],
                           relaxed=cfg["relaxed"] if cfg["w_disp"] and stage == "graph" else None)
    if cfg["w_disp"] and stage == "graph" and any(e.disp is None for e in train_ds.examples):
        raise InputError(f"{train_path}: w_disp > 0 needs 'relaxed': a file of relaxed structures with the "
                         "training sids (or atoms.info['pos_relaxed'] in every training structure)")
    val_ds = _load_split(val_path, stage, cfg, gcfg, cfg["limit_val"])
    if model is None:
        model, tok = _build_new_model(train_ds, cfg, train_path)
    # the elements the model has now been trained on (a fine-tune adds its data's to the earlier ones)
    model.training_elements = tuple(sorted(set(model.training_elements or ()) | train_ds.elements))
    if cfg["ads_weight_power"]:
        cfg["_ads_weights"] = adsorbate_weights(model.normalizer, train_ds.targets, train_ds.adsorbates,
                                                float(cfg["ads_weight_power"]))
        log.info("adsorbate loss weights: %s", {k: round(v, 3) for k, v in cfg["_ads_weights"].items()})
    # the model (before the optimiser is built, so its state lives there too) and every batch go to
    # ``device``; checkpoints are written from it (save_model / weights_hash read through the CPU)
    model.to(device)
    model.train()

    steps_per_epoch = (len(system_batches([e.system_id for e in train_ds.examples], cfg["batch_size"],
                                          torch.Generator().manual_seed(0)))
                       if cfg["group_batches"] else math.ceil(len(train_ds) / cfg["batch_size"]))
    total_steps = steps_per_epoch * int(cfg["epochs"])
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total_steps))
    if resuming:
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if "torch_rng" in saved:  # eSCN's random edge frames draw from the global torch RNG
            torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and device.type == "cuda":  # ... from the CUDA one on a GPU
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
    collate = Collator(tok, model.config["fusion"]["max_length"], use_graph=stage != "text",
                       use_text=stage != "graph")
    val_modes = [m for m in VAL_MODES[stage]]
    if monitor not in val_modes:
        val_modes.append(monitor)
    t_start = time.perf_counter()
    for epoch in range(state["epoch"] + 1, int(cfg["epochs"])):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(int(cfg["seed"]) * 100003 + epoch)
        if cfg["group_batches"]:
            loader = DataLoader(train_ds, batch_sampler=system_batches([e.system_id for e in train_ds.examples],
                                                                       cfg["batch_size"], g), collate_fn=collate)
        else:
            loader = DataLoader(train_ds, batch_size=cfg["batch_size"], shuffle=True, generator=g,
                                collate_fn=collate, drop_last=len(train_ds) > cfg["batch_size"])
        rng = random.Random(int(cfg["seed"]) * 7919 + epoch)
        model.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        n_batches = 0
        from tqdm.auto import tqdm

        for batch in tqdm(loader, desc=f"{stage} epoch {epoch + 1}/{cfg['epochs']}", unit="batch", leave=False,
                          mininterval=5.0, disable=not cfg["progress"]):
            batch = batch.to(device)
            loss, parts = stage_loss(model, batch, stage, cfg, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg["grad_clip"])
            opt.step()
            sched.step()
            state["step"] += 1
            n_batches += 1
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
        train_time = time.perf_counter() - t0
        metrics, _ = evaluate(model, val_ds, tok, modes=val_modes, batch_size=cfg["eval_batch_size"])
        score = metrics[monitor]["mae"]
        improved = score < state["best"] - cfg["min_delta"]
        state["epoch"] = epoch
        if improved:
            state.update(best=score, best_epoch=epoch, bad_epochs=0, best_metrics=metrics)
            ckpt.save_model(model, tok, out, metrics={"stage": stage, "epoch": epoch, "monitor": monitor,
                                                      "val": metrics},
                            extra={"stage": stage, "epoch": epoch, "train_config": cfg})
        else:
            state["bad_epochs"] += 1
        elapsed = time.perf_counter() - t_start
        stop_early = state["bad_epochs"] >= cfg["patience"]
        state["stopped_early"] = stop_early
        state["stage"] = stage
        _save_state(resume_dir, model, tok, opt, sched, {
            **state, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None})
        record = {"stage": stage, "epoch": epoch, "step": state["step"], "lr": sched.get_last_lr()[0],
                  "train": {k: v / counts[k] for k, v in sums.items()}, "batches": n_batches,
                  "val": {m: {k: metrics[m][k] for k in ("mae", "within_0.1", "spearman")} for m in metrics},
                  "monitor": monitor, "best": state["best"], "best_epoch": state["best_epoch"],
                  "improved": improved, "train_seconds": round(train_time, 2),
                  "epoch_seconds": round(time.perf_counter() - t0, 2)}
        _append_jsonl(log_path, record)
        log.info("%s epoch %d: loss %.4f  val %s MAE %.4f eV  (best %.4f @%d)", stage, epoch,
                 record["train"].get("loss", math.nan), monitor, score, state["best"], state["best_epoch"])
        if stop_early:
            log.info("%s: early stop after %d epochs without improvement", stage, cfg["patience"])
            break
        if cfg["max_minutes"] and elapsed > 60 * float(cfg["max_minutes"]):
            log.info("%s: time limit reached after epoch %d; call again to continue", stage, epoch)
            break
    return _summary(stage, out, state, monitor, cfg)


def _summary(stage: str, out: Path, state: dict, monitor: str, cfg: dict) -> dict[str, Any]:
    done = bool(state["stopped_early"]) or state["epoch"] + 1 >= int(cfg["epochs"])
    return {"stage": stage, "out_dir": str(out), "monitor": monitor, "best_mae": state["best"],
            "best_epoch": state["best_epoch"], "epochs_done": state["epoch"] + 1, "done": done,
            "stopped_early": bool(state["stopped_early"]), "val": state.get("best_metrics")}


def train_pipeline(train_path, val_path, out_dir, stages=("graph", "align", "joint"),
                   config: dict[str, Any] | None = None, stage_configs: dict[str, dict] | None = None) -> dict:
    """Run ``stages`` in order in ``out_dir/<stage>``, each initialised from the previous one."""
    out = Path(out_dir)
    prev = (config or {}).get("init_from")
    results = {}
    for st in stages:
        c = _merge(config or {}, (stage_configs or {}).get(st))
        if prev is not None:
            c["init_from"] = str(prev)
        results[st] = train_stage(st, train_path, val_path, out / st, c)
        prev = out / st
    return results
