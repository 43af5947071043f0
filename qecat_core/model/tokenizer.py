"""Byte-level BPE tokenizer for configuration strings and CIF text, saved as a transformers tokenizer.

Pre-tokenization (before BPE merges, so merges never cross these boundaries):

* ``</s>`` (the configuration-string separator) is a special token, always one id;
* element symbols (``Cu``, ``O``), lower-case words (``hollow``, ``cell``), single digits and single
  punctuation characters are separate pieces, each optionally carrying ONE leading space
  (``" Cu"`` and ``"Cu"`` are two tokens, as in GPT-2), runs of other whitespace are their own piece;
* every piece is then mapped to bytes (GPT-2 byte-level alphabet), so ANY text (CIF files, unicode)
  encodes without an unknown token and decodes back exactly.

Every element symbol (H..Og), with and without the leading space, is put in the training corpus so it
is a single token even when absent from the data. Special tokens: ``<pad>`` (0), ``<bos>`` (1),
``<eos>`` (2), ``</s>`` (3, the ``sep_token``). Encoding adds ``<bos> ... <eos>``.

The saved folder is a ``transformers`` tokenizer: ``AutoTokenizer.from_pretrained(folder)`` works.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from ase import Atoms
from ase.data import chemical_symbols

from qecat_core.common.errors import InputError

PAD, BOS, EOS, SEP = "<pad>", "<bos>", "<eos>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS, SEP)  # ids 0, 1, 2, 3 in this order
PRE_TOKEN_PATTERN = r"</s>| ?[A-Z][a-z]?| ?[a-z]+| ?\d| ?[^\sA-Za-z\d]|\s+"
DEFAULT_VOCAB_SIZE = 2048


def element_line() -> str:
    """All element symbols, with and without a leading space (so each becomes one token)."""
    syms = chemical_symbols[1:]
    return "".join(syms) + " " + " ".join(syms)


def cif_text(atoms: Atoms) -> str:
    """The CIF text ASE writes for ``atoms`` (used to put CIF vocabulary into the corpus)."""
    import ase.io

    buf = io.BytesIO()
    clean = atoms.copy()
    clean.info = {}
    ase.io.write(buf, clean, format="cif")
    return buf.getvalue().decode()


def _build_backend():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], cif_structures: Iterable[Atoms] = (), vocab_size: int = DEFAULT_VOCAB_SIZE,
                    min_frequency: int = 2, out_dir: str | Path | None = None):
    """Train the tokenizer on ``texts`` (configuration strings, CIF text, ...) plus the CIF text of
    ``cif_structures``; return a ``transformers.PreTrainedTokenizerFast``; save it to ``out_dir`` if given.

    ``vocab_size`` is an upper bound: with the pre-tokenization above, the BPE runs out of merges
    on small corpora (a few hundred configuration strings give ~500 tokens).
    """
    from tokenizers import pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [element_line()] * max(2, min_frequency)
    corpus += [t for t in texts if t]
    corpus += [cif_text(a) for a in cif_structures]
    if len(corpus) <= max(2, min_frequency):
        raise InputError("tokenizer: no training text given")
    tok = _build_backend()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=int(min_frequency),
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS)), (EOS, SPECIAL_TOKENS.index(EOS))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   sep_token=SEP, padding_side="right", truncation_side="right",
                                   model_max_length=4096)
    if out_dir is not None:
        save_tokenizer(fast, out_dir)
    return fast


def save_tokenizer(tokenizer, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def load_tokenizer(path: str | Path):
    """Load a tokenizer folder written by :func:`save_tokenizer` (or any local HF tokenizer folder)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise InputError(f"{path / 'tokenizer.json'}: tokenizer file missing")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # json / tokenizers errors
        raise InputError(f"{path / 'tokenizer.json'}: cannot load tokenizer ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if tok.pad_token_id is None:
        raise InputError(f"{path}: tokenizer has no pad token")
    tok.padding_side = "right"
    return tok


def encode_texts(tokenizer, texts: Sequence[str], max_length: int = 256):
    """Right-padded ``input_ids`` and ``attention_mask`` (int64 tensors [B, L]) with <bos>/<eos>."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]
