"""Timing helpers: per-system forward(+backward) cost and batch-inference throughput.

Times are medians over repeats, as wall-clock seconds and process CPU seconds (the latter is the
fairer number on a shared machine). Use a fixed number of torch threads (``num_threads``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch


def _median_times(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def time_step(model, tokenizer, examples: Sequence, mode: str, backward: bool = True, batch_size: int = 16,
              repeats: int = 5, num_threads: int = 1) -> dict[str, Any]:
    """Per-system seconds of one forward (+ backward + AdamW step) on a batch of ``examples``."""
    from qecat_core.model.data import Collator

    torch.set_num_threads(num_threads)
    ex = list(examples)[:batch_size]
    collate = Collator(tokenizer, model.config["fusion"]["max_length"], use_graph=mode != "text",
                       use_text=mode != "graph")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train(backward)

    def step():
        batch = collate(ex)
        if backward:
            out = model(batch, mode)
            opt.zero_grad(set_to_none=True)
            out.pred.pow(2).mean().backward()
            opt.step()
        else:
            with torch.inference_mode():
                model(batch, mode)

    wall, cpu = _median_times(step, repeats)
    model.eval()
    return {"mode": mode, "backward": backward, "batch_size": len(ex), "threads": num_threads,
            "wall_ms_per_system": 1000 * wall / len(ex), "cpu_ms_per_system": 1000 * cpu / len(ex)}


def time_inference(model, tokenizer, structures: Sequence, mode: str = "fused", batch_size: int = 32,
                   num_threads: int = 2, repeats: int = 3) -> dict[str, Any]:
    """Structures per second of :func:`qecat_core.model.predict.predict_structures` (including preparation)."""
    from qecat_core.model.predict import predict_structures

    structures = list(structures)

    def run():
        predict_structures(model, structures, mode, batch_size=batch_size, tokenizer=tokenizer, progress=False,
                           num_threads=num_threads)

    wall, cpu = _median_times(run, repeats)
    return {"mode": mode, "n": len(structures), "threads": num_threads, "batch_size": batch_size,
            "structures_per_s_wall": len(structures) / wall, "cpu_s_per_structure": cpu / len(structures)}
