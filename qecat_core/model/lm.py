"""The language channel: a Qwen2 causal LM (transformers), tiny and trained from scratch by default.

``Qwen2ForCausalLM`` is used (not the bare ``Qwen2Model``) so the same network can later generate
CIF text; the regression model reads its last hidden states through ``lm.model`` and can add the
LM loss through ``lm.lm_head``. Any local Qwen2/Qwen3 checkpoint folder can be loaded instead with
:func:`load_lm` (offline, ``local_files_only=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qecat_core.common.errors import InputError, QecatError

# ~0.5M parameters (embeddings tied) with a ~500-token vocabulary.
DEFAULT_LM_CONFIG: dict[str, Any] = {
    "arch": "qwen2",  # qwen2 | qwen3
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "attention_dropout": 0.0,
    "init_path": None,  # a local Qwen checkpoint folder to start from (then the sizes above are ignored)
}


def _arch_classes(arch: str):
    if arch == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return Qwen2Config, Qwen2ForCausalLM
    if arch == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3Config, Qwen3ForCausalLM
    raise QecatError(f"unknown LM architecture {arch!r} (qwen2 | qwen3)")


def build_lm(vocab_size: int, pad_token_id: int = 0, bos_token_id: int = 1, eos_token_id: int = 2,
             config: dict[str, Any] | None = None):
    """A randomly initialised ``Qwen2ForCausalLM`` (or Qwen3) of the given sizes, float32, eager attention."""
    cfg = {**DEFAULT_LM_CONFIG, **(config or {})}
    config_cls, model_cls = _arch_classes(cfg["arch"])
    hf = config_cls(
        vocab_size=int(vocab_size), hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], max_position_embeddings=cfg["max_position_embeddings"],
        rope_theta=cfg["rope_theta"], tie_word_embeddings=cfg["tie_word_embeddings"],
        attention_dropout=cfg["attention_dropout"], pad_token_id=pad_token_id, bos_token_id=bos_token_id,
        eos_token_id=eos_token_id, use_cache=False)
    hf._attn_implementation = "eager"
    return model_cls(hf)


def lm_from_hf_config(hf_config: dict[str, Any]):
    """A randomly initialised causal LM from a stored ``config.to_dict()`` (weights loaded afterwards)."""
    arch = hf_config.get("model_type", "qwen2")
    config_cls, model_cls = _arch_classes(arch)
    hf = config_cls.from_dict(hf_config)
    hf._attn_implementation = "eager"
    return model_cls(hf)


def load_lm(path: str | Path, with_tokenizer: bool = True):
    """Load a local Qwen2/Qwen3 causal-LM folder (``config.json`` + weights, optionally a tokenizer).

    Returns ``(model, tokenizer)`` (tokenizer None when the folder has none or ``with_tokenizer`` is
    False). Nothing is downloaded. Raises :class:`InputError` naming the folder when it cannot be loaded.
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(f"{path / 'config.json'}: LM config missing (expected a local Qwen checkpoint folder)")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
    except Exception as exc:
        raise InputError(f"{path}: cannot load LM ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if model.config.model_type not in ("qwen2", "qwen3"):
        raise InputError(f"{path}: model_type {model.config.model_type!r} is not qwen2/qwen3")
    tok = None
    if with_tokenizer and (path / "tokenizer.json").is_file():
        from qecat_core.model.tokenizer import load_tokenizer

        tok = load_tokenizer(path)
    model.float()
    return model, tok


def lm_hidden_size(lm) -> int:
    return int(lm.config.hidden_size)
