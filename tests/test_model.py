"""qecat_core.model: tokenizer, graph channel, fusion masks, checkpoints, training, evaluation, errors.

Fixtures are self-contained: small fcc(111) slabs built with ase.build, adsorbates placed at the
four high-symmetry sites with a little jitter, labelled with single-point EMT adsorption energies
(E(slab+ads) - E(slab) - sum n_i mu_i, unrelaxed: a cheap, learnable stand-in for relaxed labels).
Models are tiny so the whole file runs in well under a minute on one core.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from qecat_core.common.errors import InputError, QecatError

torch.set_num_threads(1)

MU = {"H": 0.535, "O": 0.809, "C": -0.138, "N": 0.131}  # eV
ADSORBATES = {"*O": [("O", 0.0)], "*H": [("H", 0.0)], "*OH": [("O", 0.0), ("H", 0.97)],
              "*CO": [("C", 0.0), ("O", 1.15)]}
SITES = ("ontop", "bridge", "fcc", "hcp")

TINY_MODEL = {
    "graph": {"sphere_channels": 16, "hidden_channels": 16, "edge_channels": 8, "num_distance_basis": 16,
              "num_layers": 1, "max_neighbors": 8},
    "lm": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "num_key_value_heads": 1},
    "fusion": {"head_hidden": 32, "align_dim": 16, "max_atom_tokens": 6},
}


def _system(metal: str, ads: str, site: str, rng: np.random.Generator, e_slab_cache: dict) -> Atoms:
    from qecat_core.enumerate.text import configuration_text

    slab = fcc111(metal, (2, 2, 3), vacuum=6.0)
    layer = slab.get_tags()  # ASE: 1 = top .. 3 = bottom
    tags = np.where(layer == 1, 1, 0)
    if metal not in e_slab_cache:
        s = slab.copy()
        s.calc = EMT()
        e_slab_cache[metal] = s.get_potential_energy()
    h0 = 1.9 if site == "ontop" else 1.3
    add_adsorbate(slab, ADSORBATES[ads][0][0], h0 + rng.uniform(-0.1, 0.1), site,
                  offset=tuple(rng.uniform(-0.05, 0.05, 2)))
    base = slab.positions[-1].copy()
    for sym, dz in ADSORBATES[ads][1:]:
        slab += Atoms(sym, positions=[base + [0, 0, dz]])
    n_ads = len(ADSORBATES[ads])
    slab.set_tags(list(tags) + [2] * n_ads)
    slab.set_constraint(FixAtoms(mask=slab.get_tags() == 0))
    calc_atoms = slab.copy()
    calc_atoms.calc = EMT()
    e = calc_atoms.get_potential_energy() - e_slab_cache[metal] - sum(MU[s] for s, _ in ADSORBATES[ads])
    name = ads.replace("*", "")
    slab.info = {"sid": f"{metal}-{name}-{site}-{rng.integers(1e9)}", "system_id": f"{metal}-{name}",
                 "adsorbate": ads, "bulk_formula": metal, "miller": "(1 1 1)", "e_ads": float(e),
                 "text": configuration_text(slab, name, metal, (1, 1, 1))}
    return slab


def make_systems(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    cache: dict = {}
    out = []
    metals, adss = ("Cu", "Pt", "Ag", "Ni"), tuple(ADSORBATES)
    i = 0
    while len(out) < n:
        out.append(_system(metals[(i // 16) % 4], adss[(i // 4) % 4], SITES[i % 4], rng, cache))
        i += 1
    return out


@pytest.fixture(scope="module")
def systems():
    return make_systems(40)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory, systems):
    from qecat_core.common.structures import write_aselmdb

    d = tmp_path_factory.mktemp("modeldata")
    write_aselmdb(d / "train.aselmdb", systems[:32])
    write_aselmdb(d / "val.aselmdb", systems[32:])
    return d / "train.aselmdb", d / "val.aselmdb"


@pytest.fixture(scope="module")
def tokenizer(systems):
    from qecat_core.model.tokenizer import train_tokenizer

    return train_tokenizer([a.info["text"] for a in systems], systems[:2], vocab_size=512)


@pytest.fixture(scope="module")
def dataset(systems):
    from qecat_core.model.data import StructureDataset

    return StructureDataset(systems[:32])


@pytest.fixture(scope="module")
def model(tokenizer, dataset):
    from qecat_core.model.fusion import QECatModel
    from qecat_core.model.normalizer import Normalizer

    torch.manual_seed(0)
    norm = Normalizer.fit(dataset.targets, dataset.adsorbates)
    m = QECatModel(TINY_MODEL, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id,
                   tokenizer.eos_token_id, norm)
    return m.eval()


def _batch(tokenizer, examples, **kw):
    from qecat_core.model.data import Collator

    return Collator(tokenizer, 256, **kw)(examples)


def _tiny_model(tokenizer, **graph):
    """TINY_MODEL with extra ``model.graph`` options, seeded, in eval mode."""
    from qecat_core.model.fusion import QECatModel

    torch.manual_seed(0)
    cfg = {**TINY_MODEL, "graph": {**TINY_MODEL["graph"], **graph}}
    return QECatModel(cfg, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id,
                      tokenizer.eos_token_id).eval()


def _rotated_about_normal(atoms: Atoms, theta: float = 0.7) -> tuple[Atoms, np.ndarray]:
    """A copy of ``atoms`` (cell and positions) rotated by ``theta`` about z, and the rotation matrix."""
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    r = atoms.copy()
    r.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    r.positions = atoms.positions @ rot.T
    return r, rot


# --------------------------------------------------------------------------------------------
# tokenizer


def test_tokenizer_clean_tokens_and_cif_roundtrip(tmp_path, tokenizer, systems):
    from transformers import AutoTokenizer

    from qecat_core.model.tokenizer import cif_text, save_tokenizer

    text = "OH</s>Cu3Pt (1 1 1)</s>[O Cu Cu Pt hollow [Cu Cu O]]"
    toks = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert toks[0] == "<bos>" and toks[-1] == "<eos>"
    assert toks.count("</s>") == 2 and tokenizer.convert_tokens_to_ids("</s>") == tokenizer.sep_token_id == 3
    # element symbols, brackets and digits are whole tokens (leading space allowed)
    assert {"Cu", "3", "Pt", "[", "ĠPt", "Ġhollow", "Ġ1"} <= set(toks)
    # a rare element never seen in the data is still one token
    assert len(tokenizer("Og", add_special_tokens=False)["input_ids"]) == 1
    cif = cif_text(systems[5])
    ids = tokenizer(cif)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == cif
    weird = "données ∑ 😀 _cell_length_a 3.92"
    assert tokenizer.decode(tokenizer(weird)["input_ids"], skip_special_tokens=True) == weird
    save_tokenizer(tokenizer, tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (again.pad_token_id, again.bos_token_id, again.eos_token_id) == (0, 1, 2)


# --------------------------------------------------------------------------------------------
# graph channel


def test_prepare_atoms_crops_and_orders_by_distance(systems):
    from qecat_core.model.graph import adsorbate_distances, prepare_atoms

    big = systems[2].repeat((2, 2, 1))  # 4 adsorbates' worth; keep one adsorbate only
    tags = big.get_tags()
    ads = np.nonzero(tags == 2)[0]
    keep = [i for i in range(len(big)) if tags[i] != 2 or i == ads[0]]
    big = big[keep]
    out = prepare_atoms(big, crop_radius=4.0)
    t = out.get_tags()
    assert t[0] == 2 and (t[1:] != 2).all()
    d = adsorbate_distances(out)
    assert (np.diff(d[1:]) >= -1e-9).all() and d.max() < 4.0
    assert len(out) < len(big)


def test_graph_encoder_shapes(model, tokenizer, dataset):
    b = _batch(tokenizer, dataset.examples[:3])
    g = model.graph(b.graph)
    n = int(b.graph.natoms.sum())
    assert g.node.shape == (n, 16) and g.pooled.shape == (3, 16)
    assert torch.isfinite(g.pooled).all()


def test_fairchem_import_leaves_out_gpu_toolkit_on_cpu_and_restores_it():
    """On a CPU-only machine the graph channel imports fairchem without nvalchemi-toolkit-ops (slow, GPU
    only); afterwards the toolkit imports normally, and the backbone still builds and runs."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from qecat_core.model.graph import GraphEncoder, import_fairchem\n"
        "import_fairchem()\n"
        "assert 'fairchem.core' in sys.modules\n"
        "hidden = not torch.cuda.is_available()\n"
        "assert ('nvalchemiops' not in sys.modules) == hidden, sorted(m for m in sys.modules if 'nvalchemi' in m)\n"
        "import nvalchemiops\n"
        "assert nvalchemiops is not None\n"
        "enc = GraphEncoder({'num_layers': 1})\n"
        "print('ok', hidden)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[0] == "ok"


def test_equiformer_v2_and_unknown_backbone_raise():
    from qecat_core.model.graph import build_backbone

    with pytest.raises(QecatError, match="fairchem-core 2.x does not ship"):
        build_backbone("equiformer_v2")
    with pytest.raises(QecatError, match="unknown graph backbone"):
        build_backbone("painn")


def test_backbone_weights_from_fairchem_checkpoint(tmp_path):
    from qecat_core.model.graph import GraphEncoder

    cfg = {**TINY_MODEL["graph"]}
    torch.manual_seed(1)
    src = GraphEncoder(cfg)
    sd = {f"module.backbone.{k}": v for k, v in src.backbone.backbone.state_dict().items()}
    sd.pop("module.backbone.sphere_embedding.weight")
    path = tmp_path / "fake_fairchem.pt"
    torch.save({"model_state_dict": sd, "config": {}}, path)
    torch.manual_seed(2)
    dst = GraphEncoder({**cfg, "init_checkpoint": str(path)})
    rep = dst.init_report
    assert "sphere_embedding.weight" in rep["missing"] and not rep["mismatched"]
    a, b = src.backbone.backbone.state_dict(), dst.backbone.backbone.state_dict()
    assert torch.equal(a["source_embedding.weight"], b["source_embedding.weight"])
    assert not torch.equal(a["sphere_embedding.weight"], b["sphere_embedding.weight"])
    # shapes that do not fit at all -> clear error
    other = GraphEncoder({**cfg, "sphere_channels": 8, "hidden_channels": 8, "edge_channels": 4,
                          "num_distance_basis": 8})
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in other.backbone.backbone.state_dict().items()
                               if v.ndim > 0}}, tmp_path / "other.pt")
    rep2 = GraphEncoder({**cfg, "init_checkpoint": str(tmp_path / "other.pt")}).init_report
    assert rep2["mismatched"]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        GraphEncoder({**cfg, "init_checkpoint": str(tmp_path / "junk.pt")})


# --------------------------------------------------------------------------------------------
# fusion


def test_fused_prefix_shapes_and_attention_masks(model, tokenizer, dataset):
    ex = dataset.examples[:4]
    b = _batch(tokenizer, ex)
    out = model(b, "fused", return_hidden=True)
    K = model.max_atom_tokens
    T = b.input_ids.shape[1]
    assert out.prefix_len == K + 1 == 7
    assert out.attention_mask.shape == (4, K + 1 + T) and out.hidden.shape == (4, K + 1 + T, 32)
    assert out.pred.shape == (4,) and out.energy.dtype == torch.float64
    assert out.graph_emb.shape == (4, 16) and out.text_emb.shape == (4, 32)
    # atom slots: adsorbate + surface atoms (tags 2, 1), up to K; the pooled slot is always on
    for i, e in enumerate(ex):
        n_sel = int((e.data.tags >= 1).sum())
        want = [1] * min(n_sel, K) + [0] * (K - min(n_sel, K)) + [1]
        assert out.attention_mask[i, : K + 1].tolist() == want
    assert torch.equal(out.attention_mask[:, K + 1:], b.attention_mask)
    assert (b.attention_mask == 0).any(), "texts of different length should leave pad positions"
    labels = model.lm_labels(b.input_ids, b.attention_mask, out.prefix_len)
    assert (labels[:, : K + 1] == -100).all()
    assert torch.equal(labels[:, K + 1:] == -100, b.attention_mask == 0)
    assert torch.equal(labels[:, K + 1:][b.attention_mask == 1], b.input_ids[b.attention_mask == 1])
    assert torch.isfinite(model.lm_loss(out.hidden, labels))


def test_masked_slots_and_padding_do_not_change_predictions(tokenizer, dataset):
    from qecat_core.model.fusion import QECatModel

    torch.manual_seed(0)
    cfg = {**TINY_MODEL, "fusion": {**TINY_MODEL["fusion"], "max_atom_tokens": 40}}  # more slots than atoms
    m = QECatModel(cfg, len(tokenizer)).eval()
    ex = dataset.examples
    lens = [len(tokenizer(e.text)["input_ids"]) for e in ex]
    short, long_ = ex[int(np.argmin(lens))], ex[int(np.argmax(lens))]
    assert min(lens) < max(lens)
    with torch.no_grad():
        for mode in ("fused", "text"):
            for pool in ("last", "mean"):
                m.config["fusion"]["text_pool"] = pool
                alone = m(_batch(tokenizer, [short]), mode).pred
                padded = m(_batch(tokenizer, [short, long_]), mode).pred[0]
                assert torch.allclose(alone[0], padded, atol=1e-5), (mode, pool)


def test_text_mode_needs_no_structure(model, tokenizer):
    from qecat_core.model.data import TextDataset
    from qecat_core.model.predict import predict_texts

    texts = ["O</s>Pt (1 1 1)</s>[O Pt atop [Pt Pt Pt O]]", "CO</s>CuPt (1 0 0)</s>[C Pt atop [Pt Cu Cu C]]"]
    ds = TextDataset(texts, need_target=False)
    b = _batch(tokenizer, ds.examples)
    assert b.graph is None and b.targets is None
    out = model(b, "text")
    assert out.pred.shape == (2,) and out.graph_emb is None and torch.isfinite(out.energy).all()
    with pytest.raises(QecatError, match="needs structures"):
        model(b, "fused")
    df = predict_texts(model, texts, sids=["a", "b"], tokenizer=tokenizer)
    assert df.columns.tolist() == ["sid", "e_ads_pred", "mode", "model_id"]
    assert df["sid"].tolist() == ["a", "b"] and (df["mode"] == "text").all()
    assert np.allclose(df["e_ads_pred"].to_numpy(), out.energy.numpy())


def test_unseen_elements_refused_unless_allowed(model, tokenizer, systems):
    from qecat_core.common.errors import InputError
    from qecat_core.model.predict import predict_structures, predict_texts

    cu, ag = systems[0], systems[32]  # the tiny model's training systems are Cu and Pt; 32.. are Ag
    assert set(ag.get_chemical_symbols()) & {"Ag"} and "Ag" not in cu.get_chemical_symbols()
    ads = sorted(set(cu.get_chemical_symbols()) - {"Cu"})
    old = model.training_elements
    try:
        model.training_elements = tuple(sorted(["Cu", "Pt", *ads]))
        for mode in ("fused", "graph", "text"):
            with pytest.raises(InputError, match=r"contains Ag, which model .* never saw in training \(trained on "
                                                 r"C?.*Cu.*Pt\).*--allow-unseen-elements"):
                predict_structures(model, [cu, ag], mode=mode, tokenizer=tokenizer, progress=False)
        df = predict_structures(model, [cu, ag], tokenizer=tokenizer, progress=False, allow_unseen_elements=True)
        assert df.columns.tolist() == ["sid", "e_ads_pred", "mode", "model_id", "unseen_elements"]
        assert df["unseen_elements"].tolist() == ["", "Ag"] and np.isfinite(df["e_ads_pred"]).all()
        texts = [cu.info["text"], ag.info["text"]]
        with pytest.raises(InputError, match=r"strings.parquet: row 1 \(sid b\): contains Ag"):
            predict_texts(model, texts, sids=["a", "b"], tokenizer=tokenizer, source="strings.parquet")
        df = predict_texts(model, texts, sids=["a", "b"], tokenizer=tokenizer, allow_unseen_elements=True)
        assert df["unseen_elements"].tolist() == ["", "Ag"]
        model.training_elements = None  # a model saved without the record: nothing is checked
        assert predict_structures(model, [ag], tokenizer=tokenizer, progress=False).columns.tolist() == \
            ["sid", "e_ads_pred", "mode", "model_id"]
    finally:
        model.training_elements = old


def test_graph_mode_and_normalizer(model, tokenizer, dataset):
    from qecat_core.model.normalizer import Normalizer

    b = _batch(tokenizer, dataset.examples[:5], use_text=False)
    assert b.input_ids is None
    out = model(b, "graph")
    assert out.pred.shape == (5,)
    n = Normalizer.fit([1.0, 2.0, -1.0, -3.0], ["*O", "*O", "*H", "H"])
    assert set(n.offsets) == {"O", "H"} and n.offsets["O"] == pytest.approx(1.75)
    y = n.normalize(torch.tensor([1.0, -1.0], dtype=torch.float64), ["*O", "H"])
    back = n.denormalize(y.double(), ["O", "*H"])
    assert torch.allclose(back, torch.tensor([1.0, -1.0], dtype=torch.float64), atol=1e-5)
    assert Normalizer.from_dict(json.loads(json.dumps(n.to_dict()))) == n
    # unseen adsorbates get a composition-based reference (per-element refs), unknown elements 0
    assert n.element_refs["O"] == pytest.approx(1.75, abs=0.01)
    assert n.element_refs["H"] == pytest.approx(-1.75, abs=0.01)
    assert n.offset("*O2") == pytest.approx(3.5, abs=0.02) and n.offset("*OH") == pytest.approx(0.0, abs=0.02)
    assert n.offset("*S") == 0.0


# --------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_roundtrip_identical_predictions(tmp_path, model, tokenizer, dataset):
    from transformers import AutoTokenizer

    from qecat_core.model.checkpoint import load_model, save_model

    mid = save_model(model, tokenizer, tmp_path / "m", metrics={"note": 1})
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_id"] == mid and cfg["backbone"] == "escn_md"
    assert cfg["normalizer"]["offsets"] and cfg["model"]["fusion"]["max_atom_tokens"] == 6
    assert (tmp_path / "m" / "metrics.json").is_file()
    AutoTokenizer.from_pretrained(str(tmp_path / "m" / "tokenizer"), local_files_only=True)
    loaded, tok2 = load_model(tmp_path / "m")
    b = _batch(tokenizer, dataset.examples[:6])
    b2 = _batch(tok2, dataset.examples[:6])
    assert torch.equal(b.input_ids, b2.input_ids)
    with torch.no_grad():
        for mode in ("fused", "text", "graph"):
            assert torch.equal(model(b, mode).energy, loaded(b2, mode).energy), mode


def test_corrupt_or_missing_checkpoint_files(tmp_path, model, tokenizer):
    from qecat_core.model.checkpoint import load_model, save_model

    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "nowhere")
    d = tmp_path / "m"
    save_model(model, tokenizer, d)
    w = d / "model.safetensors"
    raw = w.read_bytes()
    w.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="model.safetensors"):
        load_model(d)
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF  # one weight changed: file still parses, hash does not match
    w.write_bytes(bytes(flipped))
    with pytest.raises(InputError, match="model_id"):
        load_model(d)
    w.unlink()
    with pytest.raises(InputError, match="model.safetensors"):
        load_model(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json"):
        load_model(d)
    (d / "config.json").unlink()
    with pytest.raises(InputError, match="config.json"):
        load_model(d)


def test_load_local_qwen_checkpoint(tmp_path, tokenizer):
    from qecat_core.model.lm import build_lm, load_lm

    lm = build_lm(len(tokenizer), config=TINY_MODEL["lm"]).eval()
    lm.save_pretrained(str(tmp_path / "qwen"))
    tokenizer.save_pretrained(str(tmp_path / "qwen"))
    lm2, tok2 = load_lm(tmp_path / "qwen")
    ids = torch.tensor([tokenizer("O</s>Cu (1 1 1)")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(lm(ids).logits, lm2(ids).logits, atol=1e-6)
    assert tok2 is not None and tok2.sep_token == "</s>"
    with pytest.raises(InputError, match="config.json"):
        load_lm(tmp_path / "nothing")


# --------------------------------------------------------------------------------------------
# losses, training, evaluation


def test_info_nce_lower_for_matched_pairs():
    from qecat_core.model.train.losses import info_nce

    g = torch.Generator().manual_seed(0)
    zg = torch.randn(32, 16, generator=g)
    zt = zg + 0.3 * torch.randn(32, 16, generator=g)
    scale = torch.tensor(math.log(1 / 0.1))
    matched = info_nce(zg, zt, scale)
    shuffled = info_nce(zg, zt[torch.randperm(32, generator=g)], scale)
    assert matched < 0.5 * shuffled
    assert matched < math.log(32) < shuffled + 1.0


def test_weighted_regression_loss():
    from qecat_core.model.train.losses import regression_loss

    p, t = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0.0, 0.0, 0.0])
    for kind in ("l1", "mse", "huber"):
        assert torch.allclose(regression_loss(p, t, kind, torch.ones(3)), regression_loss(p, t, kind))
    assert regression_loss(p, t, "l1", torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(0.5)
    assert regression_loss(p, t, "l1", torch.tensor([0.0, 1.0, 3.0])).item() == pytest.approx(10 / 4)


def test_pair_loss_and_system_batches():
    from qecat_core.model.train.losses import pair_loss
    from qecat_core.model.train.stages import system_batches

    y = torch.tensor([0.0, 0.5, 9.0, 1.0])
    # a constant shift within a system costs nothing; a swapped order does
    assert float(pair_loss(y + torch.tensor([0.3, 0.3, -2.0, 0.0]), y, ["a", "a", "b", None])) == 0.0
    swapped = torch.tensor([0.5, 0.0, 9.0, 1.0])
    assert float(pair_loss(swapped, y, ["a", "a", "b", None])) == pytest.approx(1.0)
    p = torch.zeros(4, requires_grad=True)
    loss = pair_loss(p, y, ["a", "b", "c", None])  # no pair: zero, still differentiable
    loss.backward()
    assert float(loss.detach()) == 0.0 and p.grad is not None
    ids = ["s%d" % (i // 3) for i in range(30)] + [None, None]  # 10 systems of 3, two loners
    batches = system_batches(ids, 8, torch.Generator().manual_seed(1))
    assert sorted(i for b in batches for i in b) == list(range(32)) and max(map(len, batches)) <= 8
    for b in batches:  # systems are never split when they fit
        for s_ in {ids[i] for i in b if ids[i]}:
            assert sum(ids[i] == s_ for i in b) == 3
    assert batches != system_batches(ids, 8, torch.Generator().manual_seed(2))  # shuffled by the seed
    big = system_batches(["x"] * 20, 8, torch.Generator().manual_seed(0))
    assert sorted(map(len, big)) == [4, 8, 8]


def test_tiny_training_lowers_loss_and_resumes(tmp_path, data_files):
    from qecat_core.model.checkpoint import load_model
    from qecat_core.model.data import StructureDataset
    from qecat_core.model.evaluate import evaluate
    from qecat_core.model.train.stages import train_stage

    train, val = data_files
    cfg = {"epochs": 6, "batch_size": 8, "lr": 3e-3, "patience": 100, "warmup_frac": 0.0, "model": TINY_MODEL,
           "tokenizer_cif_structures": 1, "num_threads": 1}
    r1 = train_stage("graph", train, val, tmp_path / "graph", {**cfg, "max_minutes": 1e-6})  # stops after 1 epoch
    assert r1["epochs_done"] == 1 and not r1["done"]
    r = train_stage("graph", train, val, tmp_path / "graph", cfg)  # resumes at epoch 1
    assert r["epochs_done"] == 6 and r["done"]
    log = [json.loads(line) for line in (tmp_path / "graph" / "train_log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in log] == list(range(6))
    assert log[-1]["train"]["loss"] < log[0]["train"]["loss"]
    assert (tmp_path / "graph" / "metrics.json").is_file()
    ra = train_stage("align", train, val, tmp_path / "align",
                     {**cfg, "epochs": 2, "init_from": str(tmp_path / "graph")})
    assert set(ra["val"]) == {"fused", "text", "graph"}
    alog = [json.loads(line) for line in (tmp_path / "align" / "train_log.jsonl").read_text().splitlines()]
    assert {"nce", "distill", "fused", "text", "graph"} <= set(alog[0]["train"])
    rj = train_stage("joint", train, val, tmp_path / "joint",
                     {**cfg, "epochs": 1, "init_from": str(tmp_path / "align"), "w_pair": 1.0, "group_batches": True,
                      "ads_weight_power": 1.0})
    assert rj["epochs_done"] == 1
    jlog = json.loads((tmp_path / "joint" / "train_log.jsonl").read_text().splitlines()[0])
    assert jlog["train"]["pair"] > 0
    weights = json.loads((tmp_path / "joint" / "config.json").read_text())["train_config"]["_ads_weights"]
    assert len(weights) == 4 and len(set(weights.values())) > 1  # four adsorbates, weighted by their spread
    m, tok = load_model(tmp_path / "joint")
    trained = sorted(StructureDataset(train).elements)  # the training systems' metals (Cu, Pt) + adsorbates
    assert {"Cu", "Pt"} <= set(trained) and "Ag" not in trained  # (the validation systems are Ag)
    for stage in ("graph", "align", "joint"):
        assert json.loads((tmp_path / stage / "config.json").read_text())["training_elements"] == trained, stage
    assert m.training_elements == tuple(trained)
    metrics, preds = evaluate(m, StructureDataset(val), tok, plot_dir=tmp_path / "plots")
    assert set(metrics) == {"fused", "graph", "text"} and (tmp_path / "plots" / "parity_fused.png").stat().st_size > 0
    assert len(preds) == 3 * 8


def test_text_stage_from_parquet(tmp_path, systems):
    import pandas as pd

    from qecat_core.model.train.stages import train_stage

    rows = [{"text": a.info["text"], "e_ads_dft": a.info["e_ads"], "system_id": a.info["system_id"]} for a in systems]
    pd.DataFrame(rows[:32]).to_parquet(tmp_path / "tr.parquet")
    pd.DataFrame(rows[32:]).to_parquet(tmp_path / "va.parquet")
    r = train_stage("text", tmp_path / "tr.parquet", tmp_path / "va.parquet", tmp_path / "text",
                    {"epochs": 2, "batch_size": 8, "model": TINY_MODEL, "num_threads": 1})
    assert r["epochs_done"] == 2 and set(r["val"]) == {"text"}
    with pytest.raises(InputError, match="needs structures"):
        train_stage("graph", tmp_path / "tr.parquet", tmp_path / "va.parquet", tmp_path / "g", {"epochs": 1})


def test_metrics_and_discrimination():
    from qecat_core.model.evaluate import regression_metrics

    t = [0.0, 0.1, 0.2, 1.0, 1.5, 2.0]
    p = [0.05, 0.12, 0.3, 2.0, 1.5, 1.0]
    m = regression_metrics(t, p, ["a", "a", "a", "b", "b", "b"])
    assert m["mae"] == pytest.approx(np.mean([0.05, 0.02, 0.1, 1.0, 0.0, 1.0]))
    assert m["within_0.1"] == pytest.approx(4 / 6)
    assert m["spearman"] == pytest.approx(0.0) and m["n_systems"] == 2  # +1 for a, -1 for b


# --------------------------------------------------------------------------------------------
# input errors


def test_missing_tags_that_cannot_be_inferred():
    from qecat_core.model.data import example_from_atoms

    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "Pt", 2.0, "ontop")  # no H/C/N/O: nothing says which atoms are the adsorbate
    slab.set_tags(0)
    slab.info = {"sid": "no-tags", "text": "Pt</s>Cu (1 1 1)</s>"}
    with pytest.raises(InputError, match="no-tags"):
        example_from_atoms(slab)


def test_tags_inferred_and_text_generated_when_absent(systems):
    from qecat_core.model.data import example_from_atoms

    a = systems[4].copy()
    a.set_tags(0)
    a.set_constraint()
    a.info = {k: v for k, v in a.info.items() if k != "text"}
    ex = example_from_atoms(a, need_target=True)
    assert ex.text == systems[4].info["text"]
    assert set(ex.data.tags.tolist()) <= {0, 1, 2} and (ex.data.tags == 2).sum() == 1
    a.info = {"sid": "x"}  # no metadata at all: adsorbate, bulk and facet are read off the structure
    ex = example_from_atoms(a)
    assert ex.text == systems[4].info["text"] and ex.adsorbate == systems[4].info["adsorbate"]
    from ase.build import hcp0001

    b = hcp0001("Ru", (2, 2, 3), vacuum=6.0)
    add_adsorbate(b, "O", 1.2, "fcc")
    b.info = {"sid": "ru"}
    with pytest.raises(InputError, match=r"ru: .*cannot generate it: miller .*set atoms.info\['miller'\]"):
        example_from_atoms(b)
    assert example_from_atoms(b, need_text=False).adsorbate == "*O"  # the graph channel needs no facet


def test_empty_files(tmp_path):
    from qecat_core.model.data import StructureDataset, TextDataset

    (tmp_path / "empty.aselmdb").write_bytes(b"")
    with pytest.raises(InputError, match="empty.aselmdb"):
        StructureDataset(tmp_path / "empty.aselmdb")
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="empty.parquet"):
        TextDataset(tmp_path / "empty.parquet")


def test_unknown_element_for_graph_channel(systems):
    from qecat_core.model.data import example_from_atoms

    a = systems[0].copy()
    a[0].symbol = "Og"  # Z = 118, outside the 1..99 embedding table
    with pytest.raises(InputError, match="Og"):
        example_from_atoms(a)


def test_displacement_head_leaves_init_unchanged_and_is_equivariant(tokenizer, dataset, systems):
    from qecat_core.model.data import Collator, StructureDataset

    plain, with_head = _tiny_model(tokenizer, displacement_head=False), _tiny_model(tokenizer, displacement_head=True)
    sd = with_head.state_dict()
    assert any(k.startswith("disp_head.") for k in sd)
    for k, v in plain.state_dict().items():  # the head is built last: every other module starts the same
        assert torch.equal(v, sd[k]), k
    with pytest.raises(QecatError, match="no displacement head"):
        plain.displacement(_batch(tokenizer, dataset.examples[:2]))

    # rotating the structure about the surface normal rotates the predicted displacements
    a = systems[5].copy()
    b, rot = _rotated_about_normal(a)
    ex = StructureDataset([a, b]).examples
    with torch.inference_mode():
        d, pred = with_head.displacement(Collator(tokenizer, 256)(ex))
    n = len(ex[0].data.pos)
    da, db = d[:n].numpy(), d[n:].numpy()
    assert np.abs(da).max() > 1e-4
    np.testing.assert_allclose(da @ rot.T, db, atol=2e-3 * np.abs(da).max() + 1e-6)
    assert abs(float(pred[0] - pred[1])) < 1e-3


def test_graph_stage_with_relaxation_displacements(tmp_path, systems, data_files):
    from ase.optimize import BFGS

    from qecat_core.common.structures import write_aselmdb
    from qecat_core.model.data import StructureDataset
    from qecat_core.model.train.stages import train_stage

    train, val = data_files
    relaxed = []
    for a in systems[:32]:
        r = a.copy()
        r.calc = EMT()
        BFGS(r, logfile=None).run(fmax=0.1, steps=40)
        r.calc = None
        relaxed.append(r)
    write_aselmdb(tmp_path / "relaxed.aselmdb", relaxed)
    ds = StructureDataset(train, relaxed=tmp_path / "relaxed.aselmdb")
    moved = [float(np.abs(e.disp).max()) for e in ds.examples]
    assert max(moved) > 0.05 and all(e.disp.shape == (len(e.data.pos), 3) for e in ds.examples)
    cfg = {"epochs": 6, "batch_size": 8, "lr": 3e-3, "patience": 100, "warmup_frac": 0.0, "num_threads": 1,
           "tokenizer_cif_structures": 1, "w_disp": 1.0, "relaxed": str(tmp_path / "relaxed.aselmdb"),
           "model": {**TINY_MODEL, "graph": {**TINY_MODEL["graph"], "displacement_head": True}}}
    r = train_stage("graph", train, val, tmp_path / "graph", cfg)
    assert r["done"]
    log = [json.loads(line) for line in (tmp_path / "graph" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["train"]["disp"] < log[0]["train"]["disp"]
    assert log[-1]["train"]["graph"] < log[0]["train"]["graph"]

    with pytest.raises(InputError, match="needs 'relaxed'"):
        train_stage("graph", train, val, tmp_path / "g2", {**cfg, "relaxed": None})
    write_aselmdb(tmp_path / "partial.aselmdb", relaxed[:5])
    with pytest.raises(InputError, match="partial.aselmdb: no relaxed structure for sid"):
        train_stage("graph", train, val, tmp_path / "g3", {**cfg, "relaxed": str(tmp_path / "partial.aselmdb")})
    from qecat_core.model.data import example_from_atoms

    with pytest.raises(InputError, match="relaxed positions have shape"):
        example_from_atoms(systems[0], relaxed=relaxed[0].positions[:-1])
    a = systems[0].copy()
    a.info["pos_relaxed"] = relaxed[0].positions  # OC20's name for the relaxed positions
    np.testing.assert_allclose(example_from_atoms(a).disp, ds.examples[0].disp, atol=1e-9)


def test_refine_runs_the_second_pass_on_the_predicted_relaxed_structure(tokenizer, dataset, systems):
    from qecat_core.model.data import Collator, StructureDataset

    with pytest.raises(QecatError, match="refine needs model.graph.displacement_head"):
        _tiny_model(tokenizer, refine=True)
    two = _tiny_model(tokenizer, displacement_head=True, refine=True)
    one = _tiny_model(tokenizer, displacement_head=True)
    assert two.state_dict().keys() == one.state_dict().keys()  # no new weights: the passes share them
    collate = Collator(tokenizer, 256)
    b = collate(dataset.examples[:6])
    pos0 = b.graph["pos"].clone()
    with torch.inference_mode():
        disp, _ = two.displacement(b)
        pred_two = two(b, "graph").pred
        fused_two = two(b, "fused").pred
        pred_one = one(b, "graph").pred
    assert torch.equal(b.graph["pos"], pos0)  # the input batch is not moved
    assert not torch.allclose(pred_two, pred_one)
    # the same as one pass on the structures moved by the first pass's displacement (free atoms only)
    moved = collate(dataset.examples[:6])
    free = (moved.graph["tags"] >= 1)[:, None]
    moved.graph["pos"] = moved.graph["pos"] + torch.where(free, disp, 0.0)
    assert float(disp[~free[:, 0]].abs().max()) > 0  # the head predicts something for fixed atoms too ...
    with torch.inference_mode():
        torch.testing.assert_close(one(moved, "graph").pred, pred_two, atol=1e-5, rtol=0)
        assert torch.isfinite(fused_two).all()
    # ... which is not applied; and the two passes keep the prediction invariant to rotations
    a = systems[5].copy()
    r, _ = _rotated_about_normal(a)
    with torch.inference_mode():
        p = two(collate(StructureDataset([a, r]).examples), "graph").energy
    assert abs(float(p[0] - p[1])) < 1e-3

