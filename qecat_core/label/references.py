"""Gas-phase references and OC20 chemical potentials for adsorption energies (all in eV).

H2, H2O, CO and N2 (``ase.build.molecule``) are relaxed in a periodic cubic box of ``BOX`` Å with
BFGS to ``GAS_FMAX`` eV/Å, using the same calculator that labels the surfaces. The OC20
chemical potentials are then::

    mu_H = E(H2) / 2        mu_O = E(H2O) - E(H2)
    mu_C = E(CO) - mu_O     mu_N = E(N2) / 2

and an adsorbate's reference energy is ``sum_i n_i mu_i``, so that
``E_ads = E(slab+adsorbate) - E(clean slab) - sum_i n_i mu_i``.

Results are cached per calculator spec in-process (``functools.cache``) and, optionally, in a
JSON file keyed by calculator name and version, box and fmax.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from qecat_core.calculators.registry import calculator_info, normalize_spec, shared_calculator
from qecat_core.common.atomic import write_json_atomic
from qecat_core.common.errors import QecatError

GAS_MOLECULES = ("H2", "H2O", "CO", "N2")
REFERENCE_ELEMENTS = ("H", "C", "N", "O")
BOX = 14.0  # Å, edge of the cubic box the molecules are relaxed in
GAS_FMAX = 0.01  # eV/Å
GAS_STEPS = 500


def relax_molecule(name: str, calc) -> float:
    """Energy (eV) of molecule ``name`` relaxed in a ``BOX`` Å box with ``calc``."""
    from ase.build import molecule
    from ase.optimize import BFGS

    atoms = molecule(name)
    atoms.set_cell([BOX, BOX, BOX])
    atoms.center()
    atoms.pbc = True
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=GAS_FMAX, steps=GAS_STEPS)
    return float(atoms.get_potential_energy())


@cache
def _gas_energies(spec: str) -> tuple[tuple[str, float], ...]:
    calc = shared_calculator(spec)
    return tuple((name, relax_molecule(name, calc)) for name in GAS_MOLECULES)


def _cache_key(spec: str) -> str:
    name, version = calculator_info(spec)
    return f"{name}=={version};box={BOX};fmax={GAS_FMAX}"


def _read_cache(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise QecatError(f"{path}: unreadable reference cache ({exc}); delete it") from None
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict) -> None:
    write_json_atomic(path, data, sort_keys=True)


def gas_energies(calculator: str = "emt", cache_file: str | Path | None = None) -> dict[str, float]:
    """Relaxed energies (eV) of H2, H2O, CO and N2 with ``calculator``, cached."""
    spec = normalize_spec(calculator)
    path = Path(cache_file) if cache_file is not None else None
    key = _cache_key(spec)
    if path is not None:
        cached = _read_cache(path).get(key)
        if isinstance(cached, dict) and all(m in cached for m in GAS_MOLECULES):
            return {m: float(cached[m]) for m in GAS_MOLECULES}
    energies = dict(_gas_energies(spec))
    if path is not None:
        data = _read_cache(path)
        data[key] = energies
        _write_cache(path, data)
    return energies


def mus_from_gas(energies: Mapping[str, float]) -> dict[str, float]:
    """OC20 chemical potentials (eV) from the gas energies of H2, H2O, CO and N2."""
    mu_h = 0.5 * energies["H2"]
    mu_o = energies["H2O"] - energies["H2"]
    mu_c = energies["CO"] - mu_o
    mu_n = 0.5 * energies["N2"]
    return {"H": mu_h, "C": mu_c, "N": mu_n, "O": mu_o}


def chemical_potentials(calculator: str = "emt", cache_file: str | Path | None = None) -> dict[str, float]:
    """OC20 chemical potentials {'H', 'C', 'N', 'O': eV} for ``calculator``."""
    return mus_from_gas(gas_energies(calculator, cache_file))


def check_adsorbate_elements(symbols: Iterable[str]) -> None:
    """Raise QecatError if ``symbols`` holds an element without a gas reference (not H/C/N/O)."""
    bad = sorted(set(symbols) - set(REFERENCE_ELEMENTS))
    if bad:
        raise QecatError(
            f"adsorbate contains {', '.join(bad)}: gas references exist only for "
            f"{', '.join(REFERENCE_ELEMENTS)}")


def reference_energy(symbols: Iterable[str], mus: Mapping[str, float]) -> float:
    """sum_i n_i mu_i (eV) over the adsorbate's chemical ``symbols``."""
    counts = Counter(symbols)
    check_adsorbate_elements(counts)
    return float(sum(n * mus[s] for s, n in counts.items()))
