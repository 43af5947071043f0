"""DuckDB query speed over synthetic screening results (goal: the ranking query over 1M rows < 0.2 s).

    python benchmarks/query_speed.py --rows 1000000 --runs 10 [--out /tmp/qecat-bench-query]

Writes ``rows`` synthetic predictions in the layout the pipeline writes
(``predictions/screen=S/model=M/run_date=D/part-<run>.parquet``, one file per run, ``--runs``
files) plus the ``candidates`` file, with ~5.5 placements per system like the default catalog, and
the ranking snapshot each run writes (``rankings/screen=S/ranking-<run>.parquet``: the AdsorbML
ranking of every prediction so far, computed with :func:`qecat_core.results.ranking.rank_systems` as
``qecat screen`` does).
Then times, with :func:`qecat_core.results.query.connect` (views registered the same way as ``qecat query``):

* ``connect_s``: opening the connection and registering the views;
* per query, the first (cold) run and the median of ``--repeat`` warm runs:
  ``ranking_top`` (the best system per adsorbate from the ``ranking`` view), ``ranking_all``
  (the whole ranking materialised), ``descriptor`` (E(*OH) - E(*O) window per surface),
  ``per_run`` (predictions per run date), and ``ranking_from_predictions``: the same ranking
  recomputed from all prediction rows (the view's fallback when no snapshot exists).

Prints one JSON object. The timings are in-process (Python start and ``import duckdb`` are not
included; ``qecat query`` adds them: see ``cli_s``, one CLI call measured end to end).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUERIES = {
    "ranking_top": "SELECT adsorbate, bulk, miller, e_ads_pred FROM ranking WHERE rank = 1 ORDER BY adsorbate",
    "ranking_all": "SELECT count(*), min(e_ads_pred), max(n_placements) FROM ranking",
    "descriptor": """
        WITH b AS (SELECT bulk, miller, shift, top, adsorbate, e_ads_pred FROM ranking WHERE adsorbate IN ('*O', '*OH'))
        SELECT bulk, miller, shift, top,
               max(e_ads_pred) FILTER (WHERE adsorbate = '*OH') - max(e_ads_pred) FILTER (WHERE adsorbate = '*O') AS d
        FROM b GROUP BY ALL HAVING d > -0.3 AND d < 0.1 ORDER BY d""",
    "per_run": "SELECT run_date, count(*) FROM predictions GROUP BY run_date ORDER BY run_date",
    "ranking_from_predictions": "SELECT adsorbate, bulk, miller, e_ads_pred FROM ranking_slow WHERE rank = 1",
}
ADSORBATES = ["*H", "*O", "*OH", "*C", "*CH", "*CH2", "*CH3", "*N", "*NH", "*NH2", "*CO", "*COH", "*CHO", "*OCH3", "*N2"]


def synthesize(out: Path, rows: int, runs: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qecat_core.results.ranking import rank_systems, snapshot_table

    rng = np.random.default_rng(seed)
    placements = 5.5
    n_sys = int(rows / placements)
    n_surf = max(1, n_sys // len(ADSORBATES))
    sys_of_row = np.sort(rng.integers(0, n_sys, rows))
    surf = sys_of_row % n_surf
    ads = np.array(ADSORBATES)[(sys_of_row // n_surf) % len(ADSORBATES)]
    sid = np.char.add("qc-", np.char.zfill(np.arange(rows).astype(str), 16))
    bulks = np.array([f"{a}{b}" for a in ("Cu", "Ag", "Au", "Ni", "Pd", "Pt") for b in ("", "3Pt", "Pd", "3Au")] * 4)
    bulk = bulks[surf % len(bulks)]
    miller = np.array(["(1 1 1)", "(1 0 0)", "(1 1 0)", "(2 1 1)"])[(surf // len(bulks)) % 4]
    cols = {
        "sid": sid, "system_id": np.char.add("sys-", sys_of_row.astype(str)),
        "slab_id": np.char.add("slab-", surf.astype(str)), "bulk": bulk, "bulk_formula": bulk,
        "prototype": np.full(rows, "L1_2"), "metal_a": np.full(rows, "Cu"), "metal_b": np.full(rows, "Pt"),
        "fraction_b": np.full(rows, 0.25), "lattice_constant": np.full(rows, 3.7), "miller": miller,
        "shift": (surf % 3) * 0.25, "top": (surf % 2) == 0, "adsorbate": ads,
        "placement": np.full(rows, "heuristic"),
        "site_type": np.array(["top", "bridge", "hollow-fcc", "hollow-hcp"])[rng.integers(0, 4, rows)],
        "binding_element": np.full(rows, "O"), "binding_atoms": np.full(rows, "Cu Cu Pt"),
        "n_atoms": rng.integers(30, 80, rows), "catalog_hash": np.full(rows, "c0ffee"),
    }
    cand = pa.table(cols)
    (out / "candidates" / "screen=bench").mkdir(parents=True, exist_ok=True)
    pq.write_table(cand, out / "candidates" / "screen=bench" / "candidates.parquet")
    preds = cand.append_column("e_ads_pred", pa.array(rng.normal(-0.8, 0.5, rows)))
    for k, v in {"mode": "fused", "model_id": "m0", "checkpoint_hash": "h", "code_version": "bench"}.items():
        preds = preds.append_column(k, pa.array(np.full(rows, v)))
    bounds = np.linspace(0, rows, runs + 1).astype(int)
    for r in range(runs):
        part = preds.slice(bounds[r], bounds[r + 1] - bounds[r])
        run_id = f"2026010{r % 10}T000000Z-{r:06d}"
        part = part.append_column("run_id", pa.array(np.full(len(part), run_id)))
        d = out / "predictions" / "screen=bench" / "model=m0" / f"run_date=2026-01-{r + 1:02d}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, d / f"part-{run_id}.parquet", row_group_size=250_000, compression="zstd")
        so_far = preds.slice(0, bounds[r + 1]).select(
            ["sid", "system_id", "bulk", "bulk_formula", "prototype", "metal_a", "metal_b", "miller", "shift", "top",
             "adsorbate", "site_type", "e_ads_pred"]).to_pandas()
        ranking = rank_systems(so_far, "e_ads_pred")
        ranking["rank"] = ranking.groupby("adsorbate").cumcount() + 1
        ranking["model_id"], ranking["mode"], ranking["run_id"] = "m0", "fused", run_id
        (out / "rankings" / "screen=bench").mkdir(parents=True, exist_ok=True)
        pq.write_table(snapshot_table(ranking, "m0", "fused"), out / "rankings" / "screen=bench" / f"ranking-{run_id}.parquet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=10, help="part files (one per nightly run)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("/tmp/qecat-bench-query"))
    args = p.parse_args()
    import shutil

    from qecat_core.results.query import RANKING_SQL, connect

    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    synthesize(args.out, args.rows, args.runs)
    t_syn = time.perf_counter() - t0
    t0 = time.perf_counter()
    con = connect(args.out)
    t_connect = time.perf_counter() - t0
    con.execute(RANKING_SQL.replace("CREATE VIEW ranking", "CREATE VIEW ranking_slow"))
    timings = {}
    for name, sql in QUERIES.items():
        t0 = time.perf_counter()
        con.sql(sql).fetchall()
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            con.sql(sql).fetchall()
            warm.append(time.perf_counter() - t0)
        timings[name] = {"cold_s": round(cold, 4), "warm_median_s": round(statistics.median(warm), 4)}
    n = con.execute("SELECT count(*) FROM predictions").fetchone()[0]
    n_sys = con.execute("SELECT count(*) FROM ranking").fetchone()[0]
    qecat = Path(sys.executable).parent / "qecat"
    t0 = time.perf_counter()
    subprocess.run([str(qecat), "query", QUERIES["ranking_top"], "--results", str(args.out), "--format", "csv"],
                   check=True, capture_output=True)
    cli = time.perf_counter() - t0
    print(json.dumps({"rows": n, "systems": n_sys, "files": args.runs, "synthesize_s": round(t_syn, 1),
                      "connect_s": round(t_connect, 4), "queries": timings, "cli_s": round(cli, 2),
                      "goal": "ranking query < 0.2 s"}, indent=1))


if __name__ == "__main__":
    main()
