"""The graph channel: a registry of equivariant GNN backbones, structure preparation and pooling.

Units: positions and cutoffs in Å. Tags follow OC20 (0 fixed subsurface, 1 surface, 2 adsorbate).

* :func:`prepare_atoms` tags a structure (inferring OC20 tags when absent), checks its elements and
  crops it to the adsorbate plus the slab atoms within ``crop_radius`` Å of any adsorbate atom
  (minimum image); the kept atoms are ordered adsorbate first, then slab atoms by distance to the
  adsorbate, so "the first k surface atoms" are the ones at the binding site. The cropped structure
  keeps the cell and periodicity: periodic images of kept atoms are real atoms of the full slab, so
  the cropped graph is a sub-graph of the full one.
* :func:`atoms_to_data` / :func:`collate_graphs`: fairchem ``AtomicData`` and their batch.
* :class:`GraphEncoder`: backbone -> per-atom invariant embeddings [N, C] (the l=0 channel of the
  eSCN-MD node embedding) and a pooled per-system embedding [B, C].

Backbones: ``escn_md`` (fairchem-core's eSCNMDBackbone, random init; optional weights from a
fairchem checkpoint by path, see :func:`load_backbone_weights`); ``equiformer_v2`` is registered
but raises: fairchem-core 2.x does not ship it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import nn

from qecat_core.common.errors import InputError, QecatError
from qecat_core.common.tags import TAG_ADSORBATE, TAG_SURFACE, ensure_tags

log = logging.getLogger(__name__)


# Small and fast on one CPU thread: 74k parameters; forward+backward ~13 ms CPU per system (batch 16,
# 1 thread) on structures cropped to ~22 atoms. Measured on 31-atom dev slabs: crop 6 Å made an epoch
# 1.45x faster at the same validation MAE (0.0217 vs 0.0224 eV after 9 epochs); on 45-atom slabs
# (emt-v1) it saves more. Strictly capped neighbour lists (ties broken) would be ~10% faster but make
# predictions depend on the batch, see ESCNMDInvariant.
DEFAULT_GRAPH_CONFIG: dict[str, Any] = {
    "backbone": "escn_md",
    "lmax": 1,
    "mmax": 1,
    "sphere_channels": 32,
    "hidden_channels": 32,
    "edge_channels": 16,
    "num_distance_basis": 32,
    "num_layers": 2,
    "cutoff": 6.0,  # Å
    "max_neighbors": 12,  # per atom, plus any neighbours tied in distance with the 12th
    "max_num_elements": 100,  # atomic numbers 1..99 have an embedding
    "crop_radius": 6.0,  # Å around any adsorbate atom; 0 or None = whole structure
    "pool": "ads_surf",  # 'ads_surf': Linear([mean(adsorbate), mean(surface)]); 'mean': mean over tags 1, 2
    "init_checkpoint": None,  # path of a fairchem checkpoint whose backbone weights to load
    # an equivariant per-atom vector head (fairchem's Linear_Force_Head on the l=0,1 node features) that
    # predicts each atom's relaxation displacement (Å): the auxiliary IS2RS target of ``w_disp`` training
    "displacement_head": False,
    # two passes: the second runs on the structure moved by the first pass's predicted displacement
    # (needs displacement_head; every energy head then reads the second pass), see QECatModel.encode_graph
    "refine": False,
    "refine_grad": False,  # with refine: gradients of the energy losses flow through the move
}


# --------------------------------------------------------------------------------------------
# registry

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BACKBONES[name] = fn
        return fn

    return deco


def available_backbones() -> list[str]:
    return sorted(_BACKBONES)


def build_backbone(name: str, **config: Any) -> nn.Module:
    """A backbone module with ``.out_channels``, ``.max_num_elements`` and ``forward(batch) -> [N, C]``."""
    if name not in _BACKBONES:
        raise QecatError(f"unknown graph backbone {name!r}; available: {', '.join(available_backbones())}")
    return _BACKBONES[name](**config)


def import_fairchem() -> None:
    """Import ``fairchem.core`` once per process; on a machine without CUDA, without its GPU toolkit.

    fairchem-core's package import pulls in nvalchemi-toolkit-ops (warp kernels for the GPU neighbour
    list, ``radius_pbc_version`` 3) inside a ``try: ... except ImportError``, and falls back when it is
    missing. The graph channel uses the PyTorch neighbour list (version 2), and on a CPU-only machine the
    toolkit cannot run at all; importing it cost about 6 s of every ``qecat predict`` start-up (importing
    the eSCN-MD backbone: 16.2 s with it, 10.0 s without, 2 cores). So on such a machine it is hidden
    while fairchem is imported and visible again afterwards (fairchem's D3 dispersion, which imports it
    lazily, still finds it).
    """
    if "fairchem.core" in sys.modules:
        return
    hide = "nvalchemiops" not in sys.modules and not torch.cuda.is_available()
    if hide:
        sys.modules["nvalchemiops"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import fairchem.core  # noqa: F401
    finally:
        if hide and "nvalchemiops" in sys.modules and sys.modules["nvalchemiops"] is None:
            del sys.modules["nvalchemiops"]


_ESCN_CLASS = None


def _escn_class():
    """fairchem's eSCNMDBackbone with a fixed edge frame in eval mode (built once, on first use).

    eSCN rotates every edge frame by a random roll angle about the edge axis; with the S2-grid
    non-linearity the output is invariant to it only approximately (~1e-3 relative here), so with
    random angles a system's prediction would depend on the batch it is in. In eval mode the angle
    is 0 for every edge (deterministic and batch-independent); training keeps the random angles.
    """
    global _ESCN_CLASS
    if _ESCN_CLASS is None:
        import_fairchem()
        from fairchem.core.models.uma.common.quaternion.wigner_d_hybrid import axis_angle_wigner_hybrid
        from fairchem.core.models.uma.escn_md import eSCNMDBackbone

        class FixedFrameESCNMD(eSCNMDBackbone):
            def _get_rotmat_and_wigner(self, edge_distance_vecs: torch.Tensor):
                if self.training or not self.use_quaternion_wigner:
                    return super()._get_rotmat_and_wigner(edge_distance_vecs)
                gamma = torch.zeros(edge_distance_vecs.shape[0], dtype=edge_distance_vecs.dtype,
                                    device=edge_distance_vecs.device)
                return axis_angle_wigner_hybrid(
                    edge_distance_vecs, self.lmax, gamma=gamma, coeffs=self.wigner_data.coeffs,
                    U_blocks=self.wigner_data.U_blocks, custom_kernels=self.wigner_data.custom_kernels,
                    compact_l2=getattr(self.backend, "supports_fused_edgewise", False))

        _ESCN_CLASS = FixedFrameESCNMD
    return _ESCN_CLASS


class ESCNMDInvariant(nn.Module):
    """fairchem eSCN-MD backbone; returns the invariant (l=0) node features [N, sphere_channels].

    ``forward(batch, full=True)`` returns the whole equivariant node embedding [N, (lmax+1)^2, C].
    """

    def __init__(self, lmax: int = 1, mmax: int = 1, sphere_channels: int = 32, hidden_channels: int = 32,
                 edge_channels: int = 16, num_distance_basis: int = 32, num_layers: int = 2, cutoff: float = 6.0,
                 max_neighbors: int = 12, max_num_elements: int = 100, **_ignored: Any) -> None:
        super().__init__()
        self.backbone = _escn_class()(
            max_num_elements=max_num_elements, sphere_channels=sphere_channels, lmax=lmax, mmax=min(mmax, lmax),
            otf_graph=True, max_neighbors=max_neighbors, cutoff=cutoff, edge_channels=edge_channels,
            num_distance_basis=num_distance_basis, num_layers=num_layers, hidden_channels=hidden_channels,
            direct_forces=True, regress_forces=False, use_dataset_embedding=False, always_use_pbc=True)
        # Not strict: all neighbours tied with the max_neighbors-th are kept. Strict capping breaks ties
        # in perfect lattices arbitrarily, so the edge set (and the prediction) would depend on the batch.
        self.backbone.enforce_max_neighbors_strictly = False
        self.out_channels = sphere_channels
        self.max_num_elements = max_num_elements

    def forward(self, batch, full: bool = False) -> torch.Tensor:
        # fairchem caches the edge targets of the graph it built in its input ("scatter_target") and
        # reuses them on the next call: stale once positions (hence edges) change, e.g. the second pass
        # of ``model.graph.refine``. The graph is rebuilt on every call, so drop the cache first.
        if "scatter_target" in batch:
            del batch["scatter_target"]
        if batch["pos"].is_cuda and gpu_neighbor_list() == "nvalchemi":
            emb = self._forward_nvalchemi(batch)
        else:
            emb = self.backbone(batch)["node_embedding"]
        return emb if full else emb[:, 0, :]

    def _forward_nvalchemi(self, batch) -> torch.Tensor:
        # radius_pbc_version 3 hands the pbc tensor to warp, which needs it on the positions' device;
        # with always_use_pbc fairchem builds it on the CPU, so give it one on the device instead
        # (all periodic, what always_use_pbc means) for this call only.
        core = self.backbone
        old_pbc, old_version, old_always = batch["pbc"], core.radius_pbc_version, core.always_use_pbc
        batch["pbc"] = torch.ones(int(batch["natoms"].shape[0]), 3, dtype=torch.bool, device=batch["pos"].device)
        core.radius_pbc_version, core.always_use_pbc = 3, False
        try:
            return core(batch)["node_embedding"]
        finally:
            batch["pbc"] = old_pbc
            core.radius_pbc_version, core.always_use_pbc = old_version, old_always


# The neighbour list on a GPU. fairchem-core does NOT switch to its GPU neighbour list (nvalchemiops,
# ``radius_pbc_version`` 3) by itself for CUDA tensors: ``fairchem.core.graph.compute.generate_graph``
# dispatches on the backbone's ``radius_pbc_version``, fixed when the backbone is built (default 2, the
# PyTorch radius graph), whatever the device. Version 2 runs on CUDA tensors as it is (same edges as
# on the CPU) but loops over the systems of a batch in Python. The nvalchemiops one is opt-in:
# ``QECAT_NEIGHBOR_LIST=nvalchemi`` on a CUDA run (read per call; the CPU always uses version 2, and
# on a machine without CUDA :func:`import_fairchem` keeps nvalchemiops out, while on one with CUDA it
# stays importable). It is not the default because its predictions have not yet been compared with
# version 2's on a GPU (benchmarks/gpu_predict.py reports max |dE| and the rate of both).
NEIGHBOR_LISTS = ("torch", "nvalchemi")


def gpu_neighbor_list() -> str:
    """``torch`` (fairchem's PyTorch radius graph, the default) or ``nvalchemi`` (CUDA only, when installed),
    from ``$QECAT_NEIGHBOR_LIST``; an unknown value is an :class:`InputError`."""
    import os

    v = os.environ.get("QECAT_NEIGHBOR_LIST", "torch").strip().lower() or "torch"
    if v not in NEIGHBOR_LISTS:
        raise InputError(f"QECAT_NEIGHBOR_LIST={v!r}: use one of {', '.join(NEIGHBOR_LISTS)}")
    if v == "nvalchemi":
        from fairchem.core.graph.radius_graph_pbc_nvidia import nvalchemiops_installed

        if not nvalchemiops_installed():
            raise InputError("QECAT_NEIGHBOR_LIST=nvalchemi: nvalchemiops (nvalchemi-toolkit-ops) cannot be "
                             "imported here; unset it to use the PyTorch neighbour list")
    return v


@register_backbone("escn_md")
def _escn_md(**config: Any) -> nn.Module:
    return ESCNMDInvariant(**config)


@register_backbone("equiformer_v2")
def _equiformer_v2(**config: Any) -> nn.Module:
    raise QecatError("backbone 'equiformer_v2' is not available: fairchem-core 2.x does not ship EquiformerV2 "
                     "(it needs fairchem-core 1.x with torch 2.4 and torch_geometric); use 'escn_md'")


# --------------------------------------------------------------------------------------------
# checkpoint weights


def _state_dict_from(obj: Any) -> dict[str, torch.Tensor]:
    for attr in ("ema_state_dict", "model_state_dict"):  # fairchem MLIPInferenceCheckpoint
        sd = getattr(obj, attr, None)
        if isinstance(sd, dict) and sd:
            return sd
    if isinstance(obj, dict):
        for key in ("ema_state_dict", "model_state_dict", "state_dict", "model"):
            if isinstance(obj.get(key), dict) and obj[key]:
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise InputError("checkpoint holds no state dict (looked for ema_state_dict, model_state_dict, state_dict, model)")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load the backbone weights of a fairchem checkpoint file into ``backbone`` (an eSCN-MD module).

    The file is read with ``torch.load``; its (EMA) state dict's keys containing ``backbone.`` are
    stripped up to that prefix and loaded with ``strict=False``; tensors whose shape differs from
    this model's are skipped. Returns ``{'loaded', 'missing', 'unexpected', 'mismatched'}`` key lists
    and logs the missing ones. Raises :class:`InputError` for unreadable files or no matching key.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(f"{path}: cannot read checkpoint ({type(exc).__name__})") from None
    try:
        sd = _state_dict_from(obj)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    target = backbone.backbone if isinstance(backbone, ESCNMDInvariant) else backbone
    own = target.state_dict()
    picked: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        name = k.split("backbone.", 1)[1] if "backbone." in k else k
        if name in own:
            picked[name] = v
    mismatched = [k for k, v in picked.items() if tuple(v.shape) != tuple(own[k].shape)]
    for k in mismatched:
        del picked[k]
    if not picked:
        raise InputError(f"{path}: no backbone weights match this backbone's parameter names/shapes")
    result = target.load_state_dict(picked, strict=False)
    report = {"loaded": sorted(picked), "missing": sorted(result.missing_keys),
              "unexpected": sorted(result.unexpected_keys), "mismatched": sorted(mismatched)}
    log.info("%s: loaded %d backbone tensors; %d missing, %d shape-mismatched", path, len(picked),
             len(report["missing"]), len(mismatched))
    if report["missing"]:
        log.warning("backbone keys not in %s: %s", path, ", ".join(report["missing"][:20]))
    return report


# --------------------------------------------------------------------------------------------
# structures -> graphs


def _check_elements(atoms: Atoms, max_num_elements: int, name: str) -> None:
    z = atoms.numbers
    bad = sorted({int(n) for n in z if n < 1 or n >= max_num_elements})
    if bad:
        from ase.data import chemical_symbols

        syms = ", ".join(chemical_symbols[n] if 0 <= n < len(chemical_symbols) else str(n) for n in bad)
        raise InputError(f"{name}: element(s) {syms} not supported by the graph channel "
                         f"(atomic numbers 1..{max_num_elements - 1})")


def adsorbate_distances(atoms: Atoms) -> np.ndarray:
    """Minimum-image distance (Å) of every atom to the nearest adsorbate (tag 2) atom."""
    from ase.geometry import get_distances

    ads = atoms.get_tags() == TAG_ADSORBATE
    pbc = atoms.pbc if atoms.cell.rank == 3 else False
    _, d = get_distances(atoms.positions[ads], atoms.positions, cell=atoms.cell, pbc=pbc)
    return d.min(axis=0)


def prepare_atoms(atoms: Atoms, crop_radius: float | None = 6.0, max_num_elements: int = 100,
                  name: str | None = None) -> Atoms:
    """Tagged, element-checked, cropped and reordered copy of ``atoms`` (see module docstring).

    Raises :class:`InputError` when tags are missing and cannot be inferred, or an element has no
    embedding. ``atoms.info`` is carried over.
    """
    name = name or str(atoms.info.get("sid", "structure"))
    if len(atoms) == 0:
        raise InputError(f"{name}: structure has no atoms")
    _check_elements(atoms, max_num_elements, name)
    atoms = ensure_tags(atoms.copy(), name)
    tags = atoms.get_tags()
    d = adsorbate_distances(atoms)
    ads = np.nonzero(tags == TAG_ADSORBATE)[0]
    slab = np.nonzero(tags != TAG_ADSORBATE)[0]
    if crop_radius:
        slab = slab[d[slab] < crop_radius]
    slab = slab[np.argsort(d[slab], kind="stable")]
    out = atoms[np.concatenate([ads, slab])]
    out.info = dict(atoms.info)
    return out


def atoms_to_data(atoms: Atoms):
    """fairchem ``AtomicData`` of a prepared structure (graph built later, inside the backbone)."""
    import_fairchem()
    from fairchem.core.datasets.atomic_data import AtomicData

    return AtomicData.from_ase(atoms, task_name="oc20", r_edges=False, r_forces=False, r_stress=False,
                               sid=str(atoms.info.get("sid", "")))


def collate_graphs(datas: list):
    import_fairchem()
    from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch

    return atomicdata_list_to_batch(datas)


# --------------------------------------------------------------------------------------------
# encoder


@dataclass
class GraphOutput:
    node: torch.Tensor  # [N, C] invariant per-atom embeddings
    pooled: torch.Tensor  # [B, C] per-system embedding
    batch: torch.Tensor  # [N] system index of each atom
    tags: torch.Tensor  # [N] OC20 tags
    full: torch.Tensor | None = None  # [N, (lmax+1)^2, C] equivariant node embedding (``full=True``)


def _segment_mean(x: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    w = mask.to(x.dtype)
    s = torch.zeros(n, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, index, x * w[:, None])
    c = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, index, w)
    return s / c.clamp(min=1.0)[:, None]


class GraphEncoder(nn.Module):
    """Backbone + pooling over adsorbate and surface atoms (tags 2 and 1)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        cfg = {**DEFAULT_GRAPH_CONFIG, **(config or {})}
        self.config = cfg
        self.backbone = build_backbone(cfg["backbone"], **cfg)
        C = self.backbone.out_channels
        self.out_channels = C
        self.max_num_elements = self.backbone.max_num_elements
        if cfg["pool"] == "ads_surf":
            self.pool_proj = nn.Linear(2 * C, C)
        elif cfg["pool"] == "mean":
            self.pool_proj = None
        else:
            raise QecatError(f"unknown graph pooling {cfg['pool']!r} (ads_surf | mean)")
        self.init_report: dict[str, list[str]] | None = None
        if cfg.get("init_checkpoint"):
            self.init_report = load_backbone_weights(self.backbone, cfg["init_checkpoint"])

    def forward(self, batch, full: bool = False) -> GraphOutput:
        emb = self.backbone(batch, full=True) if full else None
        node = emb[:, 0, :] if full else self.backbone(batch)
        idx = batch["batch"]
        tags = batch["tags"]
        n = int(batch["natoms"].shape[0])
        if self.pool_proj is None:
            pooled = _segment_mean(node, idx, tags >= TAG_SURFACE, n)
        else:
            ads = _segment_mean(node, idx, tags == TAG_ADSORBATE, n)
            surf = _segment_mean(node, idx, tags == TAG_SURFACE, n)
            pooled = self.pool_proj(torch.cat([ads, surf], dim=-1))
        return GraphOutput(node=node, pooled=pooled, batch=idx, tags=tags, full=emb)
