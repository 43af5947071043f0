"""QE-Catalytic: graph embeddings as prefix tokens of a causal LM, with a regression head.

Modes (one network, three ways to run it):

* ``fused``: ``[atom_1 .. atom_K][pooled][<bos> text ... <eos>][pad ...]`` -> LM -> head. The K atom
  slots hold Linear-projected per-atom graph embeddings of the adsorbate and the surface atoms nearest
  the binding site (the first atoms with tag 1 or 2 in :func:`~qecat_core.model.graph.prepare_atoms`
  order), plus a learned tag-type embedding; systems with fewer atoms leave slots masked (attention
  mask 0). The pooled token is the projected pooled graph embedding. Prefix length is always K + 1.
* ``text``: the same LM and head on the text alone; needs no structure.
* ``graph``: an MLP head on the pooled graph embedding (IS2RE-direct graph channel).

The regression head reads the text part of the final hidden states: the last non-pad token
(``<eos>``, ``text_pool='last'``) or the mean over text tokens (``'mean'``). The model predicts a
normalised target; :class:`~qecat_core.model.normalizer.Normalizer` turns it into eV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qecat_core.common.errors import QecatError
from qecat_core.model.graph import DEFAULT_GRAPH_CONFIG, TAG_SURFACE, GraphEncoder
from qecat_core.model.lm import DEFAULT_LM_CONFIG, build_lm
from qecat_core.model.normalizer import Normalizer

MODES = ("fused", "text", "graph")

DEFAULT_FUSION_CONFIG: dict[str, Any] = {
    "max_atom_tokens": 12,  # K: per-atom prefix tokens (adsorbate + nearest surface atoms)
    # 'last' (final <eos> token) | 'mean' (over text tokens). Measured, text stage on 710 EMT dev systems,
    # 14 epochs: last 0.0199 eV MAE / Spearman 0.934, mean 0.0202 eV / 0.895.
    "text_pool": "last",
    "head_hidden": 128,
    "align_dim": 64,  # InfoNCE projection size
    "init_temperature": 0.07,
    "max_length": 256,  # text tokens (with <bos>/<eos>); longer strings are truncated
    "dropout": 0.0,
    # fused prediction = LM head + graph head (the LM learns a correction to the graph channel).
    # Measured, align stage from the same graph checkpoint, 6 epochs: fused 0.0157 eV with, 0.028 without.
    "graph_residual": True,
}


def default_model_config() -> dict[str, Any]:
    return {"graph": dict(DEFAULT_GRAPH_CONFIG), "lm": dict(DEFAULT_LM_CONFIG), "fusion": dict(DEFAULT_FUSION_CONFIG)}


@dataclass
class ModelOutput:
    pred: torch.Tensor  # [B] normalised prediction
    energy: torch.Tensor  # [B] eV (float64)
    graph_emb: torch.Tensor | None = None  # [B, C] pooled graph embedding
    text_emb: torch.Tensor | None = None  # [B, H] pooled text hidden state
    prefix_len: int = 0
    attention_mask: torch.Tensor | None = None  # [B, prefix_len + T] as given to the LM
    hidden: torch.Tensor | None = None  # [B, prefix_len + T, H]


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


def select_prefix_atoms(batch_idx: torch.Tensor, tags: torch.Tensor, n_systems: int, k: int):
    """(system, slot, atom) indices of the first ``k`` atoms with tag 1 or 2 of every system."""
    sel = tags >= TAG_SURFACE
    counts = torch.zeros(n_systems, dtype=torch.long, device=tags.device).index_add_(0, batch_idx, sel.long())
    start = torch.cumsum(counts, 0) - counts  # selected atoms before each system
    rank = torch.cumsum(sel.long(), 0) - 1 - start[batch_idx]
    keep = sel & (rank < k)
    atom = torch.nonzero(keep).squeeze(-1)
    return batch_idx[atom], rank[atom], atom


class QECatModel(nn.Module):
    def __init__(self, config: dict[str, Any], vocab_size: int, pad_token_id: int = 0, bos_token_id: int = 1,
                 eos_token_id: int = 2, normalizer: Normalizer | None = None) -> None:
        super().__init__()
        base = default_model_config()
        self.config = {k: {**base[k], **(config.get(k) or {})} for k in base}
        self.vocab_size, self.pad_token_id = int(vocab_size), int(pad_token_id)
        self.bos_token_id, self.eos_token_id = int(bos_token_id), int(eos_token_id)
        fc = self.config["fusion"]
        self.graph = GraphEncoder(self.config["graph"])
        if self.config["lm"].get("hf_config"):  # exact architecture stored in a saved checkpoint
            from qecat_core.model.lm import lm_from_hf_config

            self.lm = lm_from_hf_config(self.config["lm"]["hf_config"])
        elif self.config["lm"].get("init_path"):
            from qecat_core.model.lm import load_lm

            self.lm, _ = load_lm(self.config["lm"]["init_path"], with_tokenizer=False)
            if self.lm.get_input_embeddings().num_embeddings < vocab_size:
                self.lm.resize_token_embeddings(vocab_size)
        else:
            self.lm = build_lm(vocab_size, pad_token_id, bos_token_id, eos_token_id, self.config["lm"])
        C, H = self.graph.out_channels, int(self.lm.config.hidden_size)
        self.graph_channels, self.hidden_size = C, H
        self.max_atom_tokens = int(fc["max_atom_tokens"])
        self.atom_proj = nn.Linear(C, H)
        self.pool_token_proj = nn.Linear(C, H)
        self.prefix_type = nn.Embedding(4, H)  # tags 0/1/2, 3 = pooled token
        nn.init.normal_(self.prefix_type.weight, std=0.02)
        self.text_head = _mlp(H, fc["head_hidden"], 1, fc["dropout"])
        self.graph_head = _mlp(C, fc["head_hidden"], 1, fc["dropout"])
        self.align_graph = nn.Linear(C, fc["align_dim"])
        self.align_text = nn.Linear(H, fc["align_dim"])
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / fc["init_temperature"])))
        self.normalizer = normalizer or Normalizer()
        # chemical symbols of the training set (qecat_core.model.elements); None: not recorded
        self.training_elements: tuple[str, ...] | None = None
        # Built last, so that switching it on leaves every other module's random init unchanged.
        self.disp_head = None
        if self.config["graph"].get("displacement_head"):
            from fairchem.core.models.uma.escn_md import Linear_Force_Head

            core = getattr(self.graph.backbone, "backbone", None)
            if core is None or int(getattr(core, "lmax", 0)) < 1:
                raise QecatError("model.graph.displacement_head needs an eSCN-MD backbone with lmax >= 1")
            self.disp_head = Linear_Force_Head(core)
        self.refine = bool(self.config["graph"].get("refine"))
        if self.refine and self.disp_head is None:
            raise QecatError("model.graph.refine needs model.graph.displacement_head: true")

    # ---------------------------------------------------------------------------------------
    @property
    def prefix_len(self) -> int:
        return self.max_atom_tokens + 1

    @property
    def device(self) -> torch.device:
        """Where the weights are (``model.to(device)`` moves them; see qecat_core.model.device)."""
        return self.logit_scale.device

    def _on_device(self, batch):
        """``batch`` on the model's device (a :class:`~qecat_core.model.data.Batch` collated on the CPU is
        moved, its graph in place), so callers that collate on the CPU (evaluation) need not move it."""
        dev = self.device
        return batch if dev.type == "cpu" and batch.device.type == "cpu" else batch.to(dev)

    def encode_graph(self, graph, need_disp: bool = False):
        """GraphOutput of a graph batch, and the predicted relaxation displacement [N, 3] (Å) or None.

        With ``model.graph.refine`` the backbone runs twice: the first pass predicts each free atom's
        relaxation displacement (the displacement head), the free atoms (tags 1, 2) are moved by it
        and the second pass, on the moved structure, gives the embeddings every head reads. The move
        is detached unless ``model.graph.refine_grad``, which lets the energy losses train the first
        pass's displacement too. Without ``refine``, one pass; the displacement only if ``need_disp``.
        """
        if not (self.refine or need_disp):
            return self.graph(graph), None
        g = self.graph(graph, full=True)
        disp = self.disp_head(graph, {"node_embedding": g.full})["forces"]
        if not self.refine:
            return g, disp
        moved = graph.clone()
        free = (graph["tags"] >= TAG_SURFACE)[:, None]
        step = disp if self.config["graph"].get("refine_grad") else disp.detach()
        moved["pos"] = moved["pos"] + torch.where(free, step.to(moved["pos"].dtype), 0.0)
        return self.graph(moved), disp

    def build_prefix(self, g) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix embeddings [B, K+1, H] and their attention mask [B, K+1] from a GraphOutput."""
        B, K = g.pooled.shape[0], self.max_atom_tokens
        sys_i, slot, atom = select_prefix_atoms(g.batch, g.tags, B, K)
        vals = self.atom_proj(g.node[atom]) + self.prefix_type(g.tags[atom].long())
        H = vals.shape[-1]
        atoms_emb = torch.zeros(B, K, H, dtype=vals.dtype, device=vals.device).index_put((sys_i, slot), vals)
        mask = torch.zeros(B, K, dtype=torch.long, device=vals.device).index_put(
            (sys_i, slot), torch.ones_like(slot))
        pooled = self.pool_token_proj(g.pooled) + self.prefix_type.weight[3]
        prefix = torch.cat([atoms_emb, pooled[:, None, :]], dim=1)
        mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.long, device=vals.device)], dim=1)
        return prefix, mask

    def _pool_text(self, hidden: torch.Tensor, text_mask: torch.Tensor, offset: int) -> torch.Tensor:
        text_h = hidden[:, offset:, :]
        if self.config["fusion"]["text_pool"] == "last":
            last = text_mask.sum(1).clamp(min=1) - 1
            return text_h[torch.arange(len(text_h), device=text_h.device), last]
        w = text_mask.to(text_h.dtype)[..., None]
        return (text_h * w).sum(1) / w.sum(1).clamp(min=1.0)

    def run_lm(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: torch.Tensor | None = None,
               prefix_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Final hidden states [B, P+T, H] and the full attention mask [B, P+T]."""
        emb = self.lm.get_input_embeddings()(input_ids)
        mask = attention_mask.long()
        if prefix is not None:
            emb = torch.cat([prefix.to(emb.dtype), emb], dim=1)
            mask = torch.cat([prefix_mask.long(), mask], dim=1)
        out = self.lm.model(inputs_embeds=emb, attention_mask=mask, use_cache=False)
        return out.last_hidden_state, mask

    def forward(self, batch, mode: str = "fused", return_hidden: bool = False) -> ModelOutput:
        """``batch``: a :class:`qecat_core.model.data.Batch`; ``mode``: fused | text | graph."""
        if mode not in MODES:
            raise QecatError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        batch = self._on_device(batch)
        g = None
        if mode in ("fused", "graph"):
            if batch.graph is None:
                raise QecatError(f"mode {mode!r} needs structures; this batch has text only (use mode 'text')")
            g, _ = self.encode_graph(batch.graph)
        if mode == "graph":
            pred = self.graph_head(g.pooled).squeeze(-1)
            return ModelOutput(pred=pred, energy=self.normalizer.denormalize(pred.detach(), batch.adsorbates),
                               graph_emb=g.pooled)
        if batch.input_ids is None:
            raise QecatError(f"mode {mode!r} needs configuration text; this batch has none")
        prefix = prefix_mask = None
        if mode == "fused":
            prefix, prefix_mask = self.build_prefix(g)
        hidden, mask = self.run_lm(batch.input_ids, batch.attention_mask, prefix, prefix_mask)
        P = 0 if prefix is None else prefix.shape[1]
        text_emb = self._pool_text(hidden, batch.attention_mask, P)
        pred = self.text_head(text_emb).squeeze(-1)
        if g is not None and self.config["fusion"]["graph_residual"]:
            pred = pred + self.graph_head(g.pooled).squeeze(-1)
        return ModelOutput(pred=pred, energy=self.normalizer.denormalize(pred.detach(), batch.adsorbates),
                           graph_emb=None if g is None else g.pooled, text_emb=text_emb, prefix_len=P,
                           attention_mask=mask, hidden=hidden if return_hidden else None)

    def displacement(self, batch) -> torch.Tensor:
        """Predicted relaxation displacement of every atom [N, 3] (Å) and the normalised graph prediction [B].

        Returns ``(disp, pred)``; needs ``model.graph.displacement_head``. The displacement is an
        equivariant l=1 read-out of the backbone's node features (with ``refine``: of the first pass,
        on the initial structure; the energy heads read the second).
        """
        if self.disp_head is None:
            raise QecatError("this model has no displacement head (model.graph.displacement_head: true)")
        if batch.graph is None:
            raise QecatError("displacements need structures; this batch has text only")
        batch = self._on_device(batch)
        g, disp = self.encode_graph(batch.graph, need_disp=True)
        return disp, self.graph_head(g.pooled).squeeze(-1)

    # ---------------------------------------------------------------------------------------
    def lm_labels(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_len: int) -> torch.Tensor:
        """Causal-LM labels [B, P+T]: token ids on text positions, -100 on prefix and pad positions."""
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        pad = torch.full((len(labels), prefix_len), -100, dtype=labels.dtype, device=labels.device)
        return torch.cat([pad, labels], dim=1)

    def lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross entropy over the text positions (e.g. to train CIF/text generation)."""
        logits = self.lm.lm_head(hidden[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                           ignore_index=-100)

    def align_embeddings(self, graph_emb: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.align_graph(graph_emb), self.align_text(text_emb)

    def describe(self) -> dict[str, Any]:
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"params_total": n(self), "params_graph": n(self.graph), "params_lm": n(self.lm),
                "params_heads": n(self) - n(self.graph) - n(self.lm)}
