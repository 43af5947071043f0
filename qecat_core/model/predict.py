"""Batched prediction of relaxed adsorption energies (eV) from initial structures or text.

Both functions return a pandas DataFrame with columns ``sid``, ``e_ads_pred`` (eV), ``mode`` and
``model_id``, one row per input, in input order. ``model`` is a model folder (loaded with
:func:`qecat_core.model.checkpoint.load_model`) or an already loaded ``QECatModel`` (then pass its
tokenizer for the text and fused modes).

An input with a chemical element the model never saw in training (``training_elements`` in its
``config.json``) raises :class:`InputError` naming the input and the element, before anything is
returned; with ``allow_unseen_elements=True`` it is predicted, and a fifth column
``unseen_elements`` (comma-separated symbols, empty for the others) marks it.

Where it runs: ``device`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``, see
:mod:`qecat_core.model.device`; None = wherever the model is, the CPU for a model loaded from a
folder) moves the model there, and every batch is collated on the CPU and moved there before the
forward pass (the graph channel builds its neighbour list on that device). ``precision``: ``fp32``
(default), ``bf16`` (autocast; measured error in docs/benchmarks.md), ``fp16`` (CUDA only, not
measured). ``max_atoms_per_batch`` (structures only): batches of consecutive structures packed up to
that many atoms of the cropped structures (:func:`qecat_core.model.data.pack_by_atoms`) instead of
``batch_size`` structures each; predictions do not depend on the batching (to ~1e-7 eV).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from ase import Atoms

from qecat_core.common.errors import InputError, QecatError
from qecat_core.model.elements import unseen_elements, unseen_message
from qecat_core.model.fusion import MODES

COLUMNS = ("sid", "e_ads_pred", "mode", "model_id")


def _resolve(model, tokenizer):
    if isinstance(model, (str, Path)):
        from qecat_core.model.checkpoint import load_model

        return load_model(model)
    return model, tokenizer


def _place(model, device, precision):
    """(device, autocast dtype) of a run: ``model`` moved to ``device`` (None: where it is)."""
    from qecat_core.model.device import resolve_device, resolve_precision

    dev = model.device if device is None else resolve_device(device)
    dtype = resolve_precision(precision, dev)
    if model.device != dev:
        model.to(dev)
    return dev, dtype


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _model_id(model) -> str:
    from qecat_core.model.checkpoint import weights_hash

    return weights_hash(model)  # of the weights as they are now (a live model may have trained on)


def _frame(rows: list[dict], allow_unseen: bool = False):
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COLUMNS) + (["unseen_elements"] if allow_unseen else []))


def _unseen(model, ex, name: str, allow: bool) -> str:
    """Comma-separated elements of ``ex`` the model never saw; raises unless ``allow``."""
    trained = getattr(model, "training_elements", None)
    bad = unseen_elements(ex.elements, trained)
    if bad and not allow:
        raise InputError(unseen_message(name, bad, getattr(model, "model_id", None), trained))
    return ",".join(bad)


def predict_structures(model, structures: Iterable[Atoms] | str | Path, mode: str = "fused", batch_size: int = 32,
                       tokenizer=None, progress: bool = True, num_threads: int | None = None,
                       allow_unseen_elements: bool = False, infer_metadata: bool = False, device=None,
                       max_atoms_per_batch: int | None = None, precision: str = "fp32"):
    """Predict E_ads (eV) for every structure (an iterable of Atoms, or a path ``iter_structures`` reads).

    ``mode``: fused | graph | text (text uses ``atoms.info['text']`` or generates it from metadata).
    Tags are inferred when absent; bad structures raise :class:`InputError` naming them, and so do
    elements the model was not trained on unless ``allow_unseen_elements`` (module docstring).
    ``infer_metadata``: adsorbate, bulk formula and facet from the geometry wherever it gives them, over
    ``atoms.info`` (:func:`qecat_core.model.data.example_from_atoms`).
    ``device``, ``precision``, ``max_atoms_per_batch``: module docstring.
    """
    from qecat_core.model.data import Collator, example_atoms, example_from_atoms
    from qecat_core.model.device import autocast

    if mode not in MODES:
        raise QecatError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if max_atoms_per_batch is not None and int(max_atoms_per_batch) < 1:
        raise InputError(f"max_atoms_per_batch must be >= 1 (got {max_atoms_per_batch})")
    model, tokenizer = _resolve(model, tokenizer)
    if mode != "graph" and tokenizer is None:
        raise QecatError(f"mode {mode!r} needs the model's tokenizer")
    dev, dtype = _place(model, device, precision)
    if isinstance(structures, (str, Path)):
        from qecat_core.common.structures import iter_structures

        structures = iter_structures(structures)
    gcfg, fcfg = model.config["graph"], model.config["fusion"]
    collate = Collator(tokenizer, fcfg["max_length"], use_graph=mode != "text", use_text=mode != "graph")
    model_id = _model_id(model)
    total = len(structures) if hasattr(structures, "__len__") else None
    rows: list[dict] = []
    model.eval()

    def flush(examples, unseen):
        batch = collate(examples).to(dev)
        with autocast(dev, dtype):
            out = model(batch, mode)
        rows.extend({"sid": s, "e_ads_pred": float(e), "mode": mode, "model_id": model_id, "unseen_elements": u}
                    for s, e, u in zip(batch.sids, out.energy.tolist(), unseen))

    from tqdm.auto import tqdm

    with _threads(num_threads), torch.inference_mode(), tqdm(total=total, desc=f"predict[{mode}]", unit="struct",
                                                              disable=not progress) as bar:
        buf, unseen, n_buf = [], [], 0
        for i, atoms in enumerate(structures):
            ex = example_from_atoms(atoms, i, gcfg["crop_radius"], gcfg["max_num_elements"],
                                    need_text=mode != "graph", need_target=False, infer_metadata=infer_metadata)
            n_atoms = example_atoms(ex)  # of the cropped structure (what the graph channel sees)
            if mode == "text":
                ex.data = None
            u = _unseen(model, ex, str(atoms.info.get("source", ex.sid)), allow_unseen_elements)
            if max_atoms_per_batch and buf and n_buf + n_atoms > max_atoms_per_batch:  # as pack_by_atoms
                flush(buf, unseen)
                bar.update(len(buf))
                buf, unseen, n_buf = [], [], 0
            unseen.append(u)
            buf.append(ex)
            n_buf += n_atoms
            if not max_atoms_per_batch and len(buf) >= batch_size:
                flush(buf, unseen)
                bar.update(len(buf))
                buf, unseen, n_buf = [], [], 0
        if buf:
            flush(buf, unseen)
            bar.update(len(buf))
    return _frame(rows, allow_unseen_elements)


def predict_texts(model, texts: Sequence[str], sids: Sequence[str] | None = None, batch_size: int = 64,
                  tokenizer=None, progress: bool = False, num_threads: int | None = None,
                  allow_unseen_elements: bool = False, source: str = "texts", device=None, precision: str = "fp32"):
    """Text-only prediction (eV) from configuration strings; no structure needed.

    A string naming an element the model was not trained on raises :class:`InputError` (``source``,
    row and sid in the message) unless ``allow_unseen_elements``. ``device``, ``precision``: module docstring.
    """
    from qecat_core.model.data import Collator, TextDataset
    from qecat_core.model.device import autocast

    model, tokenizer = _resolve(model, tokenizer)
    if tokenizer is None:
        raise QecatError("text prediction needs the model's tokenizer")
    dev, dtype = _place(model, device, precision)
    texts = list(texts)
    if not texts:
        return _frame([], allow_unseen_elements)
    if sids is not None and len(sids) != len(texts):
        raise QecatError(f"{len(sids)} sids for {len(texts)} texts")
    ds = TextDataset(texts, need_target=False, sids=sids)
    unseen = [_unseen(model, ex, f"{source}: row {i} (sid {ex.sid})", allow_unseen_elements)
              for i, ex in enumerate(ds.examples)]
    collate = Collator(tokenizer, model.config["fusion"]["max_length"], use_graph=False)
    model_id = _model_id(model)
    rows: list[dict] = []
    model.eval()
    from tqdm.auto import tqdm

    with _threads(num_threads), torch.inference_mode():
        for start in tqdm(range(0, len(ds), batch_size), desc="predict[text]", unit="batch", disable=not progress):
            batch = collate(ds.examples[start:start + batch_size]).to(dev)
            with autocast(dev, dtype):
                out = model(batch, "text")
            rows.extend({"sid": s, "e_ads_pred": float(e), "mode": "text", "model_id": model_id, "unseen_elements": u}
                        for s, e, u in zip(batch.sids, out.energy.tolist(), unseen[start:start + batch_size]))
    return _frame(rows, allow_unseen_elements)
