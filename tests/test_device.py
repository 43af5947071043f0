"""The device option (qecat_core.model.device) on a CPU-only machine: spelling, the one-line error for a
missing GPU, where `predict` / `screen` / `train` check it, atom-count batching and unchanged CPU numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from qecat_core.cli.main import app
from qecat_core.common.errors import InputError
from qecat_core.model.device import DEVICE_FORMS, check_device_spec, resolve_device, resolve_precision

runner = CliRunner()
CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(CUDA, reason="this machine has CUDA")
NO_CUDA_MSG = (f"device cuda: torch.cuda.is_available() is False on this machine (torch {torch.__version__}); "
               "use --device cpu or auto")


@pytest.fixture(scope="module")
def shipped():
    from qecat_core.screen.config import resolve_checkpoint

    return str(resolve_checkpoint(None))


@pytest.fixture(scope="module")
def structures():
    from tests.test_model import make_systems

    return make_systems(12, seed=5)


def test_resolve_device_forms():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert check_device_spec(" CUDA:1 ") == "cuda:1" and check_device_spec(None) == "auto"
    if not CUDA:
        assert resolve_device("auto") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "", "cuda:-1", "cpu:0", 3):
        with pytest.raises(InputError) as e:
            check_device_spec(bad)
        assert DEVICE_FORMS in str(e.value) and "\n" not in str(e.value)


@no_cuda
def test_cuda_without_cuda_is_one_clear_line():
    with pytest.raises(InputError) as e:
        resolve_device("cuda")
    assert str(e.value) == NO_CUDA_MSG
    with pytest.raises(InputError, match=r"^device cuda:0: torch.cuda.is_available\(\) is False"):
        resolve_device("cuda:0")
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16 and resolve_precision("fp32", "cpu") is None
    with pytest.raises(InputError, match="fp32, bf16, fp16"):
        resolve_precision("int8", torch.device("cpu"))


def test_pack_by_atoms_keeps_order_and_budget():
    from qecat_core.model.data import pack_by_atoms

    rng = np.random.default_rng(0)
    counts = rng.integers(5, 60, 500).tolist()
    for budget in (60, 137, 1000, 10**6):
        batches = pack_by_atoms(counts, budget)
        assert [i for r in batches for i in r] == list(range(len(counts)))  # order kept, nothing lost
        assert all(sum(counts[i] for i in r) <= budget for r in batches)
        # greedy: a batch closes only when the next structure would not fit
        assert all(sum(counts[i] for i in r) + counts[r.stop] > budget for r in batches[:-1])
    assert [list(r) for r in pack_by_atoms([50, 200, 10], 100)] == [[0], [1], [2]]  # too big alone: batch of one
    assert pack_by_atoms([], 10) == []
    with pytest.raises(InputError):
        pack_by_atoms([1], 0)


def test_cpu_predictions_unchanged_by_device_and_atom_batches(shipped, structures):
    from qecat_core.model.checkpoint import load_model
    from qecat_core.model.predict import predict_structures, predict_texts

    model, tok = load_model(shipped)
    for mode in ("fused", "graph", "text"):
        kw = dict(tokenizer=tok, progress=False, allow_unseen_elements=True)
        today = predict_structures(model, structures, mode, batch_size=4, **kw)
        cpu = predict_structures(model, structures, mode, batch_size=4, device="cpu", **kw)
        packed = predict_structures(model, structures, mode, device="cpu", max_atoms_per_batch=70, **kw)
        assert list(cpu["sid"]) == list(today["sid"]) == list(packed["sid"])
        assert np.abs(cpu["e_ads_pred"] - today["e_ads_pred"]).max() < 1e-6
        assert np.abs(packed["e_ads_pred"] - today["e_ads_pred"]).max() < 1e-6
    texts = [a.info["text"] for a in structures]
    a = predict_texts(model, texts, tokenizer=tok, allow_unseen_elements=True)
    b = predict_texts(model, texts, tokenizer=tok, allow_unseen_elements=True, device="cpu")
    assert np.abs(a["e_ads_pred"] - b["e_ads_pred"]).max() < 1e-6
    # bf16 autocast runs on the CPU; its error is measured in docs/benchmarks.md, here only bounded
    bf = predict_structures(model, structures, "fused", device="cpu", precision="bf16", tokenizer=tok,
                            progress=False, allow_unseen_elements=True)
    assert np.abs(bf["e_ads_pred"] - today["e_ads_pred"]).max() < 0.2
    assert model.device == torch.device("cpu")


def test_predict_cli_device(tmp_path, shipped, structures):
    from ase.io import write

    write(tmp_path / "tiny.extxyz", structures[:3])
    args = ["predict", str(tmp_path / "tiny.extxyz"), "--checkpoint", shipped, "--allow-unseen-elements"]
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "cpu.parquet"), "--device", "cpu",
                            "--max-atoms-per-batch", "40"])
    assert r.exit_code == 0, r.output
    assert "3 predictions" in r.output
    for bad, msg in (("gpu", DEVICE_FORMS), *([] if CUDA else [("cuda", NO_CUDA_MSG)])):
        r = runner.invoke(app, [*args, "-o", str(tmp_path / "bad.parquet"), "--device", bad])
        errors = [x for x in r.output.splitlines() if x.startswith("error: ")]
        assert r.exit_code == 2 and len(errors) == 1 and msg in errors[0], r.output
        assert not (tmp_path / "bad.parquet").exists()
    if not CUDA:
        r = runner.invoke(app, [*args, "-o", str(tmp_path / "bad.parquet"), "--device", "cpu", "--precision", "fp16"])
        assert r.exit_code == 2 and "fp16 needs a CUDA device" in r.output


def test_screen_config_device(tmp_path, write_yaml, tiny_catalog_dict):
    from qecat_core.screen.config import ScreenConfig, SlurmSettings, make_screen_config

    assert ScreenConfig(device="cuda:0").device == "cuda:0"
    assert ScreenConfig().device == "auto" and ScreenConfig().max_atoms_per_batch is None
    with pytest.raises(InputError) as e:
        make_screen_config({"device": "gpu"}, "screen.yaml")
    assert str(e.value).startswith("screen.yaml: device") and DEVICE_FORMS in str(e.value)
    with pytest.raises(InputError):
        make_screen_config({"max_atoms_per_batch": 0})
    ScreenConfig(device="cpu").check_device()
    # SLURM: the job's machine has the GPU; the settings must ask for it
    ScreenConfig(device="cuda:1", executor="slurm", slurm=SlurmSettings(gpus_per_node=2)).check_device()
    ScreenConfig(device="auto", executor="slurm", slurm=SlurmSettings(gpus_per_node=0)).check_device()
    with pytest.raises(InputError, match="gpus_per_node: 1.*gpus_per_node >= 2"):
        ScreenConfig(device="cuda:1", executor="slurm", slurm=SlurmSettings(gpus_per_node=1)).check_device()
    if CUDA:
        return
    with pytest.raises(InputError) as e:
        ScreenConfig(device="cuda", executor="inline").check_device()
    assert str(e.value) == NO_CUDA_MSG
    # the run fails before anything is enumerated or predicted
    cat = write_yaml(tiny_catalog_dict)
    r = runner.invoke(app, ["screen", "--catalog", str(cat), "--executor", "inline", "--device", "cuda",
                            "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"),
                            "--allow-unseen-elements"])
    errors = [x for x in r.output.splitlines() if x.startswith("error: ")]
    assert r.exit_code == 2 and errors == [f"error: {NO_CUDA_MSG}"], r.output
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


@no_cuda
def test_job_without_the_device_fails_its_shards_in_one_line(tmp_path, shipped):
    from qecat_core.screen.jobs import PredictorSpec, PredictShardsJob, ShardTask

    task = ShardTask(key="k", shard=str(tmp_path / "shard-00000.aselmdb"), n=1, output=str(tmp_path / "k.parquet"))
    [out] = PredictShardsJob(PredictorSpec(checkpoint=shipped, device="cuda"))([task])
    assert out.status == "failed" and out.error == NO_CUDA_MSG


def test_train_device_option(tmp_path):
    from qecat_core.model.train.config import TrainConfig

    assert TrainConfig().device == "auto" and TrainConfig(device="CUDA:1").device == "cuda:1"
    with pytest.raises(Exception, match="not a device"):
        TrainConfig(device="gpu")
    if CUDA:
        return
    (tmp_path / "t.aselmdb").write_text("")  # never read: the device is checked first
    r = runner.invoke(app, ["train", "graph", "-o", str(tmp_path / "m"), "--train", str(tmp_path / "t.aselmdb"),
                            "--val", str(tmp_path / "t.aselmdb"), "--device", "cuda"])
    errors = [x for x in r.output.splitlines() if x.startswith("error: ")]
    assert r.exit_code == 2 and errors == [f"error: {NO_CUDA_MSG}"], r.output
