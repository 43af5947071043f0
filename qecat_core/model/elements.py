"""The chemical elements a model was trained on, and the inputs that leave them.

Every element has an embedding in the graph channel (atomic numbers 1..99) and a token in the
language channel, so a structure or string with an element the training set never contained still
runs through the network, with an embedding that training never moved. Its E_ads is then an
extrapolation that looks like any other number. Training records the elements of its training set
in the checkpoint (``config.json``: ``training_elements``), and prediction refuses inputs outside
them unless asked to go ahead (``allow_unseen_elements``).

>>> sorted(text_elements("OH</s>Cu3Au (1 1 1)</s>[O Cu Cu Au hollow [Cu Cu Au O]]"))
['Au', 'Cu', 'H', 'O']
>>> unseen_elements({"Fe", "Cu", "H"}, ["Ag", "Au", "C", "Cu", "H", "N", "Ni", "O", "Pd", "Pt"])
['Fe']
>>> unseen_elements({"Fe"}, None)  # a model saved without the record: nothing to check against
[]
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ase.data import chemical_symbols

_SYMBOL = re.compile(r"[A-Z][a-z]?")
_KNOWN = frozenset(chemical_symbols[1:])


def text_elements(text: str) -> frozenset[str]:
    """Element symbols named in a configuration string (capitalised words and formula parts)."""
    return frozenset(s for s in _SYMBOL.findall(text or "") if s in _KNOWN)


def unseen_elements(elements: Iterable[str], trained: Iterable[str] | None) -> list[str]:
    """The ``elements`` not in ``trained`` (sorted); none when the model has no record (``None``)."""
    if trained is None:
        return []
    known = set(trained)
    return sorted(set(elements) - known)


def unseen_message(name: str, unseen: Iterable[str], model_id: str | None, trained: Iterable[str]) -> str:
    """The one-line error for an input with elements the model never saw in training."""
    return (f"{name}: contains {', '.join(unseen)}, which model {model_id or '?'} never saw in training "
            f"(trained on {', '.join(sorted(trained))}), so an E_ads for it would be an extrapolation; use a "
            f"model trained on these elements, or pass --allow-unseen-elements to predict anyway (the column "
            f"unseen_elements marks such rows)")
