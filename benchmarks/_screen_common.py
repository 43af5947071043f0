"""Shared set-up of the screening benchmarks: catalogs of a given size, a timer for peak RSS."""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE_CATALOG = ROOT / "catalogs" / "bimetallics.yaml"
# the default catalog enumerates 34,798 candidates for 15 adsorbates, 2,318-2,320 per adsorbate
# (enumeration version 3; docs/data.md); catalog_for sizes catalogs by the smallest
PER_ADSORBATE = 2318


def catalog_for(n: int, out_dir: Path) -> tuple[Path, str]:
    """``bimetallics.yaml`` with enough OC20 adsorbates for at least ``n`` candidates (the screen
    then takes exactly ``n`` with ``limit``); returns the file and the screen name. Sizes that need
    the same adsorbates share the catalog (and so its cached enumeration)."""
    from qecat_core.catalog.schema import oc20_adsorbate_smiles

    data = yaml.safe_load(BASE_CATALOG.read_text())
    k = max(1, math.ceil(n * 1.05 / PER_ADSORBATE))
    extra = [s for s in oc20_adsorbate_smiles() if s not in data["adsorbates"]]
    pool = list(data["adsorbates"]) + extra
    if k > len(pool):
        raise SystemExit(f"{n} candidates need {k} adsorbates; the OC20 set has {len(pool)}")
    data["adsorbates"] = pool[:k]
    data["name"] = f"bench{k}ads"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-{k}ads.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, data["name"]


def default_checkpoint() -> str:
    return os.environ.get("QECAT_CHECKPOINT") or str(ROOT / "models" / "qecat-emt-v1")
