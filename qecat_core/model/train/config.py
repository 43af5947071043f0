"""Typed training options (:class:`TrainConfig`) and recipes (:class:`Recipe`), with one-line errors.

A recipe YAML names the data, the stages to run, options for every stage (``common``) and options per
stage; every mapping of options is a partial :class:`TrainConfig` (unknown keys and bad values are
refused naming the file and the field, e.g. ``recipe.yaml: graph.lr: Input should be a valid number``).

>>> TrainConfig().epochs, TrainConfig(loss="mse").loss
(30, 'mse')
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qecat_core.model.device import DeviceSpec

#: The recipe of the shipped model ``models/qecat-emt-v1``: what ``qecat train pipeline`` runs by default.
DEFAULT_RECIPE = "emt-v1-refine-grad-lit"

STAGES = ("graph", "text", "align", "joint")
Stage = Literal["graph", "text", "align", "joint"]
Mode = Literal["fused", "graph", "text"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlignWeights(_Strict):
    """Loss weights of the ``align`` stage."""

    w_fused: float = 1.0
    w_text: float = 1.0
    w_graph: float = 0.5
    w_nce: float = 0.1  # InfoNCE between pooled graph and text embeddings
    w_distill: float = 1.0  # distillation of the detached fused prediction into the text-only one


class JointOptions(_Strict):
    """The ``joint`` stage's mix of fused and text-only batches."""

    p_text: float = Field(0.5, ge=0, le=1)
    w_graph: float = 0.0


class TrainConfig(_Strict):
    """Options of one training stage (energies in eV, displacements in Å)."""

    seed: int = 0
    epochs: int = Field(30, ge=0)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_mult: dict[str, float] = {"graph": 1.0, "lm": 1.0}  # per top-level sub-module; the rest 1.0
    weight_decay: float = 0.01  # on weight matrices only
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # after linear warm-up
    warmup_frac: float = Field(0.05, ge=0, le=1)
    min_lr_frac: float = Field(0.05, ge=0, le=1)
    grad_clip: float | None = 1.0
    loss: Literal["l1", "mse", "huber"] = "l1"  # on normalised targets
    patience: int = Field(6, ge=1)  # epochs without validation improvement before stopping
    min_delta: float = 1e-4  # eV
    monitor: Mode | None = None  # mode whose validation MAE selects the best epoch; default per stage
    freeze: list[str] = []  # top-level sub-modules not trained, e.g. ["graph"]
    num_threads: int | None = None  # torch threads (None: leave as is)
    # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N (qecat_core.model.device); the spelling is
    # checked here, the device when the stage starts
    device: DeviceSpec = "auto"
    max_minutes: float | None = None  # stop (resumably) after the epoch that passes this wall time
    init_from: str | None = None  # model folder to start from
    init_lm_from: str | None = None  # model folder whose LM + text head replace init_from's
    per_adsorbate_offsets: bool = True  # normaliser: per-adsorbate mean offsets
    tokenizer_vocab_size: int = 2048
    tokenizer_cif_structures: int = 16  # training structures whose CIF text goes into the tokenizer corpus
    limit_train: int | None = None
    limit_val: int | None = None
    progress: bool = True  # a progress bar per epoch (stderr)
    align: AlignWeights = AlignWeights()
    joint: JointOptions = JointOptions()
    w_disp: float = 0.0  # graph stage: weight of the displacement loss (mean per-atom |error|, Å)
    relaxed: str | None = None  # relaxed structures with the training sids, for w_disp
    w_pair: float = 0.0  # within-system pairwise (energy difference) loss, see losses.pair_loss
    group_batches: bool = False  # batches of whole systems (all placements of a system together)
    # adsorbate-balanced regression losses: each example weighted by (s / s_a) ** power, s_a the spread
    # of its adsorbate's training energies after the normaliser's offsets; 0 = unweighted
    ads_weight_power: float = 0.0
    model: dict[str, Any] = {}  # overrides of fusion.default_model_config(): {"graph": .., "lm": .., "fusion": ..}


class RecipeData(_Strict):
    train: str | None = None
    val: str | None = None


class Recipe(_Strict):
    """A training recipe: data, stages, and options for all stages (``common``) and per stage.

    The option mappings stay partial (merged ``common`` < stage < command line) and are each
    validated as a :class:`TrainConfig`.
    """

    data: RecipeData = RecipeData()
    stages: list[Stage] = []
    parallel_pretrain: bool = True  # graph and text pre-training side by side, one core each
    common: dict[str, Any] = {}
    graph: dict[str, Any] = {}
    text: dict[str, Any] = {}
    align: dict[str, Any] = {}
    joint: dict[str, Any] = {}
