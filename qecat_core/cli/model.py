"""``qecat train | evaluate | predict | predict-text``: the model's subcommands (registered on the main CLI).

Energies are adsorption energies in eV throughout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from qecat_core.cli.common import fail, quiet_warnings
from qecat_core.common.errors import InputError, QecatError
from qecat_core.model.train.config import DEFAULT_RECIPE

train_app = typer.Typer(no_args_is_help=True, help="Train the QE-Catalytic model (resumable stages, recipes in "
                                                   "qecat_core/model/train/configs).")


def _quiet() -> None:
    import logging

    quiet_warnings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("httpx", "fairchem", "transformers", "torch"):
        logging.getLogger(name).setLevel(logging.WARNING)


def resolve_checkpoint(path: Optional[Path]) -> Path:
    from qecat_core.screen.config import resolve_checkpoint as _resolve

    return _resolve(path)


def _overrides(epochs, lr, threads, max_minutes, init_from, lm, limit_train=None, device=None) -> dict:
    o: dict = {}
    if device is not None:
        o["device"] = device
    if epochs is not None:
        o["epochs"] = epochs
    if lr is not None:
        o["lr"] = lr
    if threads is not None:
        o["num_threads"] = threads
    if max_minutes is not None:
        o["max_minutes"] = max_minutes
    if init_from is not None:
        o["init_from"] = str(init_from)
    if lm is not None:
        o["model"] = {"lm": {"init_path": str(lm)}}
    if limit_train is not None:
        o["limit_train"] = limit_train
    return o


Epochs = Annotated[Optional[int], typer.Option(min=1, help="epochs (overrides the recipe)")]
Lr = Annotated[Optional[float], typer.Option(help="peak learning rate (overrides the recipe)")]
Threads = Annotated[Optional[int], typer.Option(min=1, help="torch threads (recipe default: 1)")]
MaxMin = Annotated[Optional[float], typer.Option(help="stop resumably after the epoch that passes this many minutes")]
InitFrom = Annotated[Optional[Path], typer.Option(help="model folder to start from")]
Lm = Annotated[Optional[Path], typer.Option("--lm", help="local Qwen2/Qwen3 checkpoint + tokenizer folder for the LM")]
TrainDevice = Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N (overrides the recipe; "
                                                         "default auto: CUDA when available)")]


@train_app.command("pipeline")
def train_pipeline_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="run folder (one subfolder per stage; final model in OUT/model)")],
    config: Annotated[str, typer.Option("--config", help="recipe name (qecat_core/model/train/configs) or YAML path; "
                                                    "default: the shipped model's")] = DEFAULT_RECIPE,
    train: Annotated[Optional[Path], typer.Option(help="training structures (.aselmdb ...); default from the recipe")] = None,
    val: Annotated[Optional[Path], typer.Option(help="validation structures; default from the recipe")] = None,
    epochs: Epochs = None, lr: Lr = None, threads: Threads = None, max_minutes: MaxMin = None,
    init_from: InitFrom = None, lm: Lm = None, device: TrainDevice = None,
) -> None:
    """Run all stages of a recipe (default emt-v1: graph -> align -> joint). Rerun to resume."""
    _quiet()
    from qecat_core.model.train.recipes import load_recipe, run_recipe

    try:
        rec = load_recipe(config)
        s = run_recipe(rec, out, train, val, _overrides(epochs, lr, threads, max_minutes, init_from, lm,
                                                        device=device))
    except QecatError as exc:
        fail(exc)
    for st, r in s["stages"].items():
        typer.echo(f"{st}: best val {r['monitor']} MAE {r['best_mae']:.4f} eV at epoch {r['best_epoch']} "
                   f"({r['epochs_done']} epochs{', done' if r['done'] else ', unfinished: rerun to continue'})")
    typer.echo(f"model -> {s['model']}  ({s['wall_minutes']} min)")


def _stage_cmd(stage: str):
    def cmd(
        out: Annotated[Path, typer.Option("-o", "--out", help="output model folder (resumable)")],
        train: Annotated[Optional[Path], typer.Option(help="training structures (.aselmdb ...)")] = None,
        val: Annotated[Optional[Path], typer.Option(help="validation structures")] = None,
        config: Annotated[Optional[str], typer.Option("--config", help="recipe name or YAML path (default: the shipped "
                                                      "model's; oc20-text with --data)")] = None,
        data: Annotated[Optional[Path], typer.Option(help="text stage: a parquet table, split 80/10/10 by sid hash")] = None,
        text_column: Annotated[str, typer.Option(help="text stage with --data: column of configuration strings")] = "text",
        target_column: Annotated[str, typer.Option(help="text stage with --data: target column (eV)")] = "e_ads_dft",
        epochs: Epochs = None, lr: Lr = None, threads: Threads = None, max_minutes: MaxMin = None,
        init_from: InitFrom = None, lm: Lm = None, device: TrainDevice = None,
    ) -> None:
        _quiet()
        from qecat_core.model.train.recipes import load_recipe, stage_config
        from qecat_core.model.train.stages import train_stage
        from qecat_core.model.train.text_table import train_text_table

        ov = _overrides(epochs, lr, threads, max_minutes, init_from, lm, device=device)
        try:
            if data is not None:
                if stage != "text":
                    raise InputError(f"--data (a text table) is for 'qecat train text'; stage {stage} needs structures")
                rec = load_recipe(config or "oc20-text")
                rep = train_text_table(data, out, text_column, target_column, recipe=rec, overrides=ov)
                typer.echo(json.dumps(rep, indent=1, default=float))
                return
            rec = load_recipe(config or DEFAULT_RECIPE)
            d = rec.get("data") or {}
            tr, va = train or d.get("train"), val or d.get("val")
            if not tr or not va:
                raise InputError("give --train and --val (or --data PARQUET for the text stage)")
            r = train_stage(stage, tr, va, out, stage_config(rec, stage, ov))
        except QecatError as exc:
            fail(exc)
        typer.echo(f"{stage}: best val {r['monitor']} MAE {r['best_mae']:.4f} eV at epoch {r['best_epoch']} "
                   f"({r['epochs_done']} epochs{', done' if r['done'] else ', unfinished: rerun to continue'}) -> {out}")

    cmd.__doc__ = {
        "graph": "Stage (a): graph channel IS2RE-direct pre-training.",
        "align": "Stage (b): graph-text alignment (InfoNCE + distillation); --init-from the graph stage.",
        "joint": "Stage (c): joint fine-tuning on mixed fused / text-only batches; --init-from the align stage.",
        "text": "Text-only LM (CatBERTa-style baseline). With --data PARQUET: real OC20 strings, fixed split, "
                "test MAE vs baselines in OUT/report.json.",
    }[stage]
    return cmd


for _st in ("graph", "align", "joint", "text"):
    train_app.command(_st)(_stage_cmd(_st))


Checkpoint = Annotated[Optional[Path], typer.Option("--checkpoint", help="model folder (default: models/qecat-emt-v1 "
                                                                         "or $QECAT_CHECKPOINT)")]
Device = Annotated[str, typer.Option(help="auto (CUDA when available, else CPU) | cpu | cuda | cuda:N")]
Precision = Annotated[str, typer.Option(help="fp32 | bf16 (autocast; error vs fp32 in docs/benchmarks.md) | "
                                             "fp16 (CUDA only, not measured)")]
MaxAtoms = Annotated[Optional[int], typer.Option(min=1, help="pack consecutive structures into batches of up to "
                                                              "this many atoms (cropped) instead of --batch-size "
                                                              "structures; e.g. 20000 on a GPU")]
AllowUnseen = Annotated[bool, typer.Option("--allow-unseen-elements",
                                            help="predict inputs with elements the model was not trained on "
                                                 "(marked in a column unseen_elements) instead of stopping")]


def evaluate_cmd(
    checkpoint: Checkpoint = None,
    baseline: Annotated[Optional[Path], typer.Option(help="text-only (unaligned) model folder for the baseline row")] = None,
    data_dir: Annotated[Path, typer.Option(help="dataset folder with <split>.aselmdb files")] = Path("data/emt-v1"),
    splits: Annotated[str, typer.Option(help="comma-separated split names")] = "val-id,val-ood-ads,val-ood-cat",
    out: Annotated[Path, typer.Option("-o", "--out", help="folder for metrics.json, table.md and parity PNGs")] = Path("runs/eval"),
    limit: Annotated[Optional[int], typer.Option(min=1, help="first N structures of each split")] = None,
    threads: Threads = None,
) -> None:
    """MAE, within-0.1-eV and configuration discrimination for graph, text (unaligned/aligned) and fused."""
    _quiet()
    import torch

    from qecat_core.model.report import evaluation_table, markdown_table

    if threads:
        torch.set_num_threads(threads)
    try:
        res = evaluation_table(resolve_checkpoint(checkpoint), data_dir, out, baseline=baseline,
                               splits=[s.strip() for s in splits.split(",") if s.strip()], limit=limit)
    except QecatError as exc:
        fail(exc)
    typer.echo(markdown_table(res))
    typer.echo(f"-> {out}/metrics.json, {out}/table.md, {out}/parity_*.png")


def _device(device: str, precision: str):
    """The resolved ``--device`` (one-line error before the model loads), with ``--precision`` checked on it."""
    from qecat_core.model.device import resolve_device, resolve_precision

    dev = resolve_device(device)
    resolve_precision(precision, dev)
    return dev


def predict_cmd(
    input: Annotated[Path, typer.Argument(help="initial structures: any ASE-readable file or folder, or .aselmdb")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output parquet (sid, e_ads_pred [eV], mode, model_id)")],
    mode: Annotated[str, typer.Option(help="fused | graph | text")] = "fused",
    checkpoint: Checkpoint = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    device: Device = "auto",
    max_atoms_per_batch: MaxAtoms = None,
    precision: Precision = "fp32",
    threads: Threads = None,
    allow_unseen_elements: AllowUnseen = False,
    infer_metadata: Annotated[bool, typer.Option("--infer-metadata",
                                                 help="adsorbate, bulk formula and Miller index from the geometry "
                                                      "wherever it gives them, over atoms.info")] = False,
) -> None:
    """Predict relaxed adsorption energies (eV) from initial structures."""
    _quiet()
    from qecat_core.common.atomic import write_parquet_atomic
    from qecat_core.model.predict import predict_structures

    try:
        dev = _device(device, precision)
        ck = resolve_checkpoint(checkpoint)
        df = predict_structures(str(ck), input, mode=mode, batch_size=batch_size, num_threads=threads,
                                allow_unseen_elements=allow_unseen_elements, infer_metadata=infer_metadata,
                                device=dev, max_atoms_per_batch=max_atoms_per_batch, precision=precision)
        if df.empty:
            raise InputError(f"{input}: no structures")
        write_parquet_atomic(df, out)
    except QecatError as exc:
        fail(exc)
    typer.echo(f"{len(df)} predictions ({mode}, model {df['model_id'].iloc[0]}) -> {out}")


def predict_text_cmd(
    input: Annotated[Path, typer.Argument(help="parquet table with configuration strings")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output parquet (sid, e_ads_pred [eV], mode, model_id)")],
    text_column: Annotated[str, typer.Option(help="column of configuration strings")] = "text",
    checkpoint: Checkpoint = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Device = "auto",
    precision: Precision = "fp32",
    threads: Threads = None,
    allow_unseen_elements: AllowUnseen = False,
) -> None:
    """Text-only prediction (eV) from CatBERTa-style configuration strings; no structures needed."""
    _quiet()
    from qecat_core.common.atomic import write_parquet_atomic
    from qecat_core.model.data import TextDataset
    from qecat_core.model.predict import predict_texts

    try:
        dev = _device(device, precision)
        ck = resolve_checkpoint(checkpoint)
        ds = TextDataset(input, text_col=text_column, need_target=False)
        df = predict_texts(str(ck), [e.text for e in ds.examples], [e.sid for e in ds.examples],
                           batch_size=batch_size, progress=True, num_threads=threads,
                           allow_unseen_elements=allow_unseen_elements, source=str(input), device=dev,
                           precision=precision)
        write_parquet_atomic(df, out)
    except QecatError as exc:
        fail(exc)
    typer.echo(f"{len(df)} predictions (text, model {df['model_id'].iloc[0]}) -> {out}")


def register(app: typer.Typer) -> None:
    """Add the model subcommands to the main ``qecat`` app."""
    app.add_typer(train_app, name="train")
    app.command("evaluate")(evaluate_cmd)
    app.command("predict")(predict_cmd)
    app.command("predict-text")(predict_text_cmd)
