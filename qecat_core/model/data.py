"""Datasets and batching: structures (``.aselmdb`` / anything ASE reads) or text-only parquet tables.

A structure row's ``atoms.info`` carries ``sid``, ``text`` (configuration string), ``e_ads`` (eV;
absent for prediction), ``adsorbate`` (OC20 SMILES, e.g. ``*OH``), optionally ``system_id`` and
``anomaly``, and for the auxiliary IS2RS target the relaxed positions (``pos_relaxed``, OC20's name,
or a ``relaxed`` file of the same sids); tags follow OC20 and are inferred with :func:`qecat_core.common.tags.ensure_tags` when absent.
When ``text`` is absent it is generated with :func:`qecat_core.enumerate.text.configuration_text` from
``adsorbate`` + ``bulk_formula`` (or ``bulk``) + ``miller`` (or ``facet``, e.g. ``fcc(111)``) in
``atoms.info``, each inferred from the geometry where absent (any molecule, any fcc/hcp/bcc slab:
:func:`qecat_core.enumerate.infer.complete_metadata`).

A text-only parquet has a text column (``text``) and, for training, a target column (eV; the first of
``target``, ``e_ads_dft``, ``e_ads`` present), optionally ``sid`` and ``system_id``.

:class:`Collator` turns examples into a :class:`Batch`: the fairchem graph batch (or None), right-padded
token ids and attention mask [B, T], targets in eV (float64) and the per-row metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch.utils.data import Dataset

from qecat_core.common.errors import InputError
from qecat_core.common.tags import ensure_tags
from qecat_core.enumerate.infer import complete_metadata, read_metadata
from qecat_core.model.elements import text_elements
from qecat_core.model.graph import atoms_to_data, collate_graphs, prepare_atoms
from qecat_core.model.normalizer import adsorbate_from_text, adsorbate_key

TARGET_COLUMNS = ("target", "e_ads_dft", "e_ads")


@dataclass
class Example:
    sid: str
    text: str | None
    target: float | None  # eV
    adsorbate: str | None  # OC20 SMILES or text name
    system_id: str | None = None
    data: Any = None  # fairchem AtomicData of the prepared (cropped) structure, or None for text-only
    disp: np.ndarray | None = None  # [n_atoms, 3] relaxed - initial positions (Å, minimum image), prepared order
    elements: frozenset[str] = frozenset()  # chemical symbols of the whole structure and of the text


@dataclass
class Batch:
    graph: Any  # fairchem AtomicData batch, or None
    input_ids: torch.Tensor | None  # [B, T] int64
    attention_mask: torch.Tensor | None  # [B, T] int64 (1 = token, 0 = pad)
    targets: torch.Tensor | None  # [B] eV, float64
    adsorbates: list[str | None] = field(default_factory=list)
    sids: list[str] = field(default_factory=list)
    system_ids: list[str | None] = field(default_factory=list)
    disp: torch.Tensor | None = None  # [N, 3] Å, atoms in graph-batch order (when every example has one)

    def __len__(self) -> int:
        return len(self.sids)

    def to(self, device, non_blocking: bool = False) -> Batch:
        """This batch with its tensors (and the graph batch, moved in place) on ``device``.

        Token ids, masks, targets and displacements are copied; the fairchem graph batch is moved in
        place (``AtomicData.to``), so do not reuse the CPU batch's graph afterwards. The per-row metadata
        (sids, adsorbates, system ids) stays Python. A batch already on ``device`` is returned as is.
        """
        import torch

        device = torch.device(device)
        if self.device == device:
            return self

        def mv(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        graph = None if self.graph is None else self.graph.to(device, non_blocking=non_blocking)
        return Batch(graph=graph, input_ids=mv(self.input_ids), attention_mask=mv(self.attention_mask),
                     targets=mv(self.targets), adsorbates=self.adsorbates, sids=self.sids,
                     system_ids=self.system_ids, disp=mv(self.disp))

    @property
    def device(self):
        """The device of the batch's tensors (the graph's positions, else the token ids; CPU if none)."""
        import torch

        if self.graph is not None:
            return self.graph["pos"].device
        for t in (self.input_ids, self.targets):
            if t is not None:
                return t.device
        return torch.device("cpu")


def structure_text(atoms: Atoms, name: str, infer_metadata: bool = False) -> str:
    """``atoms.info['text']``, or the configuration string generated from the structure.

    The adsorbate, bulk formula and Miller index come from ``atoms.info`` where given (read in the
    spellings :func:`qecat_core.enumerate.infer.parse_miller` / ``parse_adsorbate`` accept), else from the
    geometry (:func:`qecat_core.enumerate.infer.complete_metadata`, which fills them into ``atoms.info``; the
    structure needs tags); ``infer_metadata``: from the geometry wherever it gives them.
    """
    text = atoms.info.get("text")
    if isinstance(text, str) and text:
        return text
    complete_metadata(atoms, name, prefer_geometry=infer_metadata)
    ads = atoms.info.get("adsorbate")
    bulk = atoms.info.get("bulk_formula") or atoms.info.get("bulk")
    miller = atoms.info.get("miller")
    if not (ads and bulk and miller):
        missing = [k for k, v in (("adsorbate", ads), ("bulk_formula", bulk), ("miller", miller)) if not v]
        raise InputError(f"{name}: no 'text' in atoms.info and cannot generate it: {', '.join(missing)} neither "
                         "given nor inferable from the structure (adsorbates: tag-2 atoms; Miller indices: "
                         "slabs two stacking periods thick, e.g. 3 layers of fcc(111), 4 of hcp(0001)); set "
                         + ", ".join(f"atoms.info[{k!r}]" for k in missing))
    from qecat_core.enumerate.text import configuration_text

    try:
        return configuration_text(atoms, adsorbate_key(str(ads)), str(bulk), miller)
    except ValueError as exc:
        raise InputError(f"{name}: cannot generate configuration text ({exc})") from None


def relaxed_positions(path: str | Path) -> dict[str, np.ndarray]:
    """``sid -> relaxed positions`` (Å) of every structure in ``path`` (any file ASE or .aselmdb reads).

    The structures need ``atoms.info['sid']``; these are the IS2RS targets matched to initial structures.
    """
    from qecat_core.common.structures import iter_structures

    out: dict[str, np.ndarray] = {}
    for atoms in iter_structures(path):
        sid = atoms.info.get("sid")
        if sid is None:
            raise InputError(f"{atoms.info.get('source', path)}: relaxed structure without 'sid' in atoms.info")
        out[str(sid)] = atoms.get_positions()
    return out


def example_from_atoms(atoms: Atoms, index: int = 0, crop_radius: float | None = 6.0, max_num_elements: int = 100,
                       need_text: bool = True, need_target: bool = False, target_key: str = "e_ads",
                       relaxed: np.ndarray | None = None, infer_metadata: bool = False) -> Example:
    """One :class:`Example` from a structure (tags inferred, text generated if needed, cropped graph).

    ``infer_metadata``: adsorbate, bulk formula and Miller index from the geometry wherever it gives them,
    over the values in ``atoms.info`` (see :func:`structure_text`).

    ``relaxed`` (or ``atoms.info['pos_relaxed']``): relaxed positions [n_atoms, 3] (Å) of the same atoms;
    the example then carries the per-atom relaxation displacement (minimum image) of the kept atoms.
    """
    sid = str(atoms.info.get("sid", atoms.info.get("source", f"structure-{index}")))
    name = str(atoms.info.get("source", sid))
    atoms = ensure_tags(atoms.copy(), name)
    if relaxed is None and atoms.info.get("pos_relaxed") is not None:
        relaxed = np.asarray(atoms.info["pos_relaxed"], dtype=float)
    if relaxed is not None:
        from ase.geometry import find_mic

        relaxed = np.asarray(relaxed, dtype=float)
        if relaxed.shape != (len(atoms), 3):
            raise InputError(f"{name}: relaxed positions have shape {relaxed.shape}, the structure has "
                             f"{len(atoms)} atoms (expected ({len(atoms)}, 3))")
        pbc = atoms.pbc if atoms.cell.rank == 3 else False
        d, _ = find_mic(relaxed - atoms.positions, atoms.cell, pbc)
        atoms.set_array("qecat_disp", d)
    text = structure_text(atoms, name, infer_metadata) if need_text else atoms.info.get("text")
    target = atoms.info.get(target_key)
    if target is not None:
        target = float(target)
        if not np.isfinite(target):
            target = None
    if need_target and target is None:
        raise InputError(f"{name}: no finite '{target_key}' (eV) in atoms.info")
    # the adsorbate (per-adsorbate energy offsets): given (read with parse_adsorbate) > the text > the geometry
    ads = None if infer_metadata else (read_metadata(atoms, "adsorbate", name) or
                                       (adsorbate_from_text(text) if text else None))
    if not ads:
        complete_metadata(atoms, name, prefer_geometry=infer_metadata, keys=("adsorbate",))
        ads = atoms.info.get("adsorbate") or (adsorbate_from_text(text) if text else None)
    prepared = prepare_atoms(atoms, crop_radius, max_num_elements, name)
    disp = prepared.arrays.pop("qecat_disp", None)
    elements = frozenset(atoms.get_chemical_symbols()) | (text_elements(text) if text else frozenset())
    return Example(sid=sid, text=text, target=target, adsorbate=ads, system_id=atoms.info.get("system_id"),
                   data=atoms_to_data(prepared), disp=disp, elements=elements)


class _Examples(Dataset):
    """A list of :class:`Example` with the accessors both datasets share."""

    examples: list[Example]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]

    @property
    def targets(self) -> list[float | None]:
        return [e.target for e in self.examples]

    @property
    def adsorbates(self) -> list[str | None]:
        return [e.adsorbate for e in self.examples]

    @property
    def elements(self) -> frozenset[str]:
        """Every chemical element in the examples' structures and configuration strings."""
        return frozenset().union(*(e.elements for e in self.examples))


class StructureDataset(_Examples):
    """Examples from a structure file or folder (``.aselmdb``, extxyz, ...), prepared eagerly.

    ``drop_anomalies``: skip rows whose ``atoms.info['anomaly']`` is true (labelling flagged them).
    ``relaxed``: a file of relaxed structures with the same sids (see :func:`relaxed_positions`): every
    example then carries its relaxation displacements (auxiliary IS2RS target); a missing sid is an error.
    """

    def __init__(self, path: str | Path | Sequence[Atoms], crop_radius: float | None = 6.0,
                 max_num_elements: int = 100, need_text: bool = True, need_target: bool = True,
                 drop_anomalies: bool = True, target_key: str = "e_ads", limit: int | None = None,
                 relaxed: str | Path | None = None) -> None:
        from qecat_core.common.structures import iter_structures

        source: Iterable[Atoms] = iter_structures(path) if isinstance(path, (str, Path)) else path
        self.path = str(path) if isinstance(path, (str, Path)) else "<atoms>"
        final = relaxed_positions(relaxed) if relaxed is not None else None
        self.examples: list[Example] = []
        for i, atoms in enumerate(source):
            if drop_anomalies and bool(atoms.info.get("anomaly", False)):
                continue
            pos = None
            if final is not None:
                sid = str(atoms.info.get("sid", ""))
                if sid not in final:
                    raise InputError(f"{relaxed}: no relaxed structure for sid {sid!r} of "
                                     f"{atoms.info.get('source', self.path)}")
                pos = final[sid]
            self.examples.append(example_from_atoms(atoms, i, crop_radius, max_num_elements, need_text,
                                                    need_target, target_key, relaxed=pos))
            if limit is not None and len(self.examples) >= limit:
                break
        if not self.examples:
            raise InputError(f"{self.path}: no usable structures")


class TextDataset(_Examples):
    """Text-only examples from a parquet table (or a list of strings)."""

    def __init__(self, source: str | Path | Sequence[str], text_col: str = "text", target_col: str | None = None,
                 need_target: bool = True, sids: Sequence[str] | None = None) -> None:
        import pandas as pd

        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            if path.stat().st_size == 0:
                raise InputError(f"{path}: file is empty")
            try:
                df = pd.read_parquet(path)
            except Exception as exc:
                raise InputError(f"{path}: cannot read parquet ({type(exc).__name__})") from None
            name = str(path)
        else:
            df = pd.DataFrame({text_col: list(source)})
            if sids is not None:
                df["sid"] = list(sids)
            name = "<texts>"
        if text_col not in df.columns:
            raise InputError(f"{name}: no '{text_col}' column (columns: {', '.join(map(str, df.columns))})")
        if target_col is None:
            target_col = next((c for c in TARGET_COLUMNS if c in df.columns), None)
        if need_target and (target_col is None or target_col not in df.columns):
            raise InputError(f"{name}: no target column (one of {', '.join(TARGET_COLUMNS)}, eV)")
        if len(df) == 0:
            raise InputError(f"{name}: table has no rows")
        self.path = name
        texts = df[text_col].astype(str).tolist()
        targets = df[target_col].astype(float).tolist() if target_col in df.columns else [None] * len(df)
        sid = df["sid"].astype(str).tolist() if "sid" in df.columns else [f"row-{i}" for i in range(len(df))]
        sysid = df["system_id"].astype(str).tolist() if "system_id" in df.columns else [None] * len(df)
        ads = (df["adsorbate"].astype(str).tolist() if "adsorbate" in df.columns
               else [adsorbate_from_text(t) for t in texts])
        self.examples = []
        for s, t, y, a, g in zip(sid, texts, targets, ads, sysid):
            if y is not None and not np.isfinite(y):
                if need_target:
                    continue
                y = None
            self.examples.append(Example(sid=s, text=t, target=y, adsorbate=a, system_id=g, elements=text_elements(t)))
        if not self.examples:
            raise InputError(f"{name}: no rows with a finite target")


def pack_by_atoms(n_atoms: Sequence[int], max_atoms: int) -> list[range]:
    """Consecutive index ranges whose atom counts sum to at most ``max_atoms`` (input order kept).

    A batch is closed when the next structure would take it over the budget; a structure larger than
    the budget on its own is a batch of one. Used for GPU-sized prediction batches
    (``max_atoms_per_batch``): the atoms of the cropped structures, i.e. the graph channel's nodes.

    >>> [list(r) for r in pack_by_atoms([10, 20, 5, 30, 40, 1], 40)]
    [[0, 1, 2], [3], [4], [5]]
    """
    if max_atoms < 1:
        raise InputError(f"max_atoms_per_batch must be >= 1 (got {max_atoms})")
    out: list[range] = []
    start, total = 0, 0
    for i, n in enumerate(n_atoms):
        if i > start and total + int(n) > max_atoms:
            out.append(range(start, i))
            start, total = i, 0
        total += int(n)
    if start < len(n_atoms):
        out.append(range(start, len(n_atoms)))
    return out


def example_atoms(ex: Example) -> int:
    """Atoms of an example's cropped structure (the graph channel's nodes); 0 for a text-only example."""
    return 0 if ex.data is None else int(ex.data["pos"].shape[0])


class Collator:
    """Examples -> :class:`Batch` (tokenises text, batches graphs when every example has one)."""

    def __init__(self, tokenizer=None, max_length: int = 256, use_graph: bool = True, use_text: bool = True) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length
        self.use_graph, self.use_text = use_graph, use_text

    def __call__(self, examples: Sequence[Example]) -> Batch:
        graph = None
        if self.use_graph and all(e.data is not None for e in examples):
            graph = collate_graphs([e.data for e in examples])
        ids = mask = None
        if self.use_text and self.tokenizer is not None and all(e.text for e in examples):
            from qecat_core.model.tokenizer import encode_texts

            ids, mask = encode_texts(self.tokenizer, [e.text for e in examples], self.max_length)
        targets = None
        if all(e.target is not None for e in examples):
            targets = torch.tensor([e.target for e in examples], dtype=torch.float64)
        disp = None
        if graph is not None and all(e.disp is not None for e in examples):
            disp = torch.from_numpy(np.concatenate([e.disp for e in examples])).to(torch.float32)
        return Batch(graph=graph, input_ids=ids, attention_mask=mask, targets=targets,
                     adsorbates=[e.adsorbate for e in examples], sids=[e.sid for e in examples],
                     system_ids=[e.system_id for e in examples], disp=disp)
