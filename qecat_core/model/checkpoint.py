"""Model folders: save and load a :class:`~qecat_core.model.fusion.QECatModel` with its tokenizer.

Layout of a model folder::

    config.json        format, model config (graph/lm/fusion hyper-parameters, backbone name),
                       tokenizer special ids, normalizer (eV), training_elements (the chemical
                       elements of the training set; null if not recorded), model_id,
                       parameter counts, extra info
    model.safetensors  weights (tied LM embeddings stored once); ``model.pt`` is also read
    tokenizer/         transformers tokenizer folder (AutoTokenizer.from_pretrained works on it)
    metrics.json       evaluation metrics (written by training / evaluation)
    train_log.jsonl    one JSON object per logged epoch (written by training)

``model_id`` is the first 16 hex digits of a SHA-256 over the weights (names, dtypes, shapes, bytes);
loading recomputes it, so a corrupt or swapped weight file is detected. Every file is written to a
temporary name and renamed. Problems with a folder raise :class:`InputError` naming the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from qecat_core.common.atomic import atomic_path, replace_dir_atomic, temporary_name, write_json_atomic
from qecat_core.common.errors import InputError

FORMAT = "qecat-model/1"
CONFIG, WEIGHTS, WEIGHTS_PT, TOKENIZER_DIR = "config.json", "model.safetensors", "model.pt", "tokenizer"
METRICS, TRAIN_LOG = "metrics.json", "train_log.jsonl"


def weights_hash(model) -> str:
    """sha256 (16 hex) over the state dict of a torch module: names, dtypes, shapes and bytes."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def write_json(path: str | Path, data: Any) -> None:
    write_json_atomic(path, data)


def model_config_dict(model) -> dict[str, Any]:
    cfg = copy.deepcopy(model.config)
    cfg["graph"]["init_checkpoint"] = None  # weights are in the file now
    cfg["lm"]["init_path"] = None
    cfg["lm"]["hf_config"] = model.lm.config.to_dict()
    return cfg


def save_model(model, tokenizer, out_dir: str | Path, metrics: dict | None = None,
               extra: dict[str, Any] | None = None) -> str:
    """Write ``model`` + ``tokenizer`` to ``out_dir`` (see module docstring); return the model id."""
    from safetensors.torch import save_model as st_save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_id = weights_hash(model)
    tok_tmp = temporary_name(out / TOKENIZER_DIR)
    tokenizer.save_pretrained(str(tok_tmp))
    config = {
        "format": FORMAT,
        "model_id": model_id,
        "backbone": model.config["graph"]["backbone"],
        "model": model_config_dict(model),
        "vocab_size": model.vocab_size,
        "pad_token_id": model.pad_token_id,
        "bos_token_id": model.bos_token_id,
        "eos_token_id": model.eos_token_id,
        "normalizer": model.normalizer.to_dict(),
        "training_elements": (None if getattr(model, "training_elements", None) is None
                              else sorted(model.training_elements)),
        "params": model.describe(),
        "units": {"energy": "eV", "length": "Angstrom"},
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(extra or {}),
    }
    replace_dir_atomic(tok_tmp, out / TOKENIZER_DIR)
    with atomic_path(out / WEIGHTS, suffix=".safetensors") as tmp:
        st_save(model, str(tmp), metadata={"model_id": model_id, "format": FORMAT})
    write_json(out / CONFIG, config)
    if metrics is not None:
        write_json(out / METRICS, metrics)
    return model_id


def model_folder(path: str | Path) -> Path:
    """The model folder that ``path`` names: the folder itself when it holds ``config.json``, else the
    final model of a training run folder (``qecat train pipeline|text -o DIR`` writes it to ``DIR/model``).

    >>> import tempfile; run = Path(tempfile.mkdtemp()); (run / "model").mkdir()
    >>> _ = (run / "model" / CONFIG).write_text("{}")
    >>> model_folder(run) == run / "model"
    True
    """
    path = Path(path)
    if not (path / CONFIG).is_file() and (path / "model" / CONFIG).is_file():
        return path / "model"
    return path


def read_config(model_dir: str | Path) -> dict[str, Any]:
    model_dir = model_folder(model_dir)
    path = Path(model_dir) / CONFIG
    if not Path(model_dir).is_dir():
        raise InputError(f"{model_dir}: model folder not found")
    if not path.is_file():
        raise InputError(f"{path}: missing (not a model folder written by save_model)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", "?")
        raise InputError(f"{path}: corrupt JSON ({exc.__class__.__name__} at byte {pos})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT or "model" not in cfg:
        fmt = cfg.get("format") if isinstance(cfg, dict) else None
        raise InputError(f"{path}: not a {FORMAT} config (format={fmt!r})")
    return cfg


def load_model(model_dir: str | Path, verify: bool = True, device=None):
    """``(model, tokenizer)`` from a folder written by :func:`save_model`; the model is in eval mode.

    The weights are read onto the CPU (and checked there against ``model_id``); ``device`` (a
    :func:`qecat_core.model.device.resolve_device` spec such as ``auto`` / ``cuda:0``, or a
    ``torch.device``; None = stay on the CPU) then moves the model.
    """
    from qecat_core.model.fusion import QECatModel
    from qecat_core.model.normalizer import Normalizer
    from qecat_core.model.tokenizer import load_tokenizer

    d = model_folder(model_dir)
    cfg = read_config(d)
    tokenizer = load_tokenizer(d / TOKENIZER_DIR)
    try:
        normalizer = Normalizer.from_dict(cfg["normalizer"])
        model = QECatModel(cfg["model"], cfg["vocab_size"], cfg["pad_token_id"], cfg["bos_token_id"],
                           cfg["eos_token_id"], normalizer=normalizer)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{d / CONFIG}: cannot build the model ({type(exc).__name__}: {exc})") from None
    _load_weights(model, d)
    if verify:
        got = weights_hash(model)
        if got != cfg.get("model_id"):
            raise InputError(f"{d / WEIGHTS}: weights do not match config.json model_id "
                             f"{cfg.get('model_id')} (got {got}): corrupt or replaced file")
    model.model_id = cfg.get("model_id")
    trained = cfg.get("training_elements")
    model.training_elements = None if trained is None else tuple(str(e) for e in trained)
    model.eval()
    if device is not None:
        from qecat_core.model.device import resolve_device

        model.to(resolve_device(device))
    return model, tokenizer


def _load_weights(model, d: Path) -> None:
    st, pt = d / WEIGHTS, d / WEIGHTS_PT
    if st.is_file():
        from safetensors.torch import load_model as st_load

        try:
            missing, unexpected = st_load(model, str(st), strict=False)
        except Exception as exc:
            raise InputError(f"{st}: corrupt or incompatible weights ({type(exc).__name__})") from None
    elif pt.is_file():
        import torch

        try:
            sd = torch.load(str(pt), map_location="cpu", weights_only=True)
            result = model.load_state_dict(sd, strict=False)
        except Exception as exc:
            raise InputError(f"{pt}: corrupt or incompatible weights ({type(exc).__name__})") from None
        missing, unexpected = result.missing_keys, result.unexpected_keys
    else:
        raise InputError(f"{st}: missing (no model.safetensors or model.pt in {d})")
    tied = {"lm.lm_head.weight"} if model.lm.config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        bad = (missing or unexpected)[0]
        raise InputError(f"{st if st.is_file() else pt}: weights do not fit the config "
                         f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {bad})")
