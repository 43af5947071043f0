import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
warnings.filterwarnings("ignore")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

TINY_CATALOG = {
    "name": "tiny",
    "metals": ["Cu", "Pt"],
    "pairs": ["Cu-Pt"],
    "include_pure": True,
    "prototypes": [{"kind": "L1_2", "formula": "A3B"}, {"kind": "random", "fraction_b": 0.5}],
    "facets": ["111", "100"],
    "slab": {"min_layers": 3, "fixed_layers": 1, "min_lateral": 5.0},
    "adsorbates": ["*O", "*OH"],
    "placement": {"max_per_system": 4},
}


@pytest.fixture
def tiny_catalog_dict():
    import copy

    return copy.deepcopy(TINY_CATALOG)


@pytest.fixture
def write_yaml(tmp_path):
    import yaml

    def _write(data, name="catalog.yaml"):
        p = tmp_path / name
        p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return p

    return _write
