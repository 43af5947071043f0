"""Registry of the ASE calculators that label structures (energies in eV, forces in eV/Å).

A calculator is named by a *spec* string:

* ``emt``: ASE's effective-medium theory (Al, Cu, Ag, Au, Ni, Pd, Pt and rough H, C, N, O);
* ``chgnet``: CHGNet's pretrained universal potential on the CPU (weights ship in its wheel);
* ``MODULE:FACTORY``: ``importlib.import_module(MODULE).FACTORY()`` must return an ASE calculator,
  e.g. ``mypkg.calcs:make_calc``.

Heavy libraries (torch for CHGNet, the user's module) are imported only when asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import re
from collections.abc import Callable
from typing import Any

from qecat_core.common.errors import QecatError

BUILTIN = ("emt", "chgnet")
ALLOWED_TEXT = "'emt', 'chgnet' or 'MODULE:FACTORY' (a function returning an ASE calculator)"
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

# Elements ASE's EMT has parameters for (ase.calculators.emt.parameters).
EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "H", "C", "N", "O"})


def normalize_spec(spec: str) -> str:
    """The canonical form of ``spec`` ('EMT ' -> 'emt'); raises QecatError for anything else."""
    if not isinstance(spec, str):
        raise QecatError(f"calculator must be a string: {ALLOWED_TEXT}; got {spec!r}")
    s = spec.strip()
    if s.lower() in BUILTIN:
        return s.lower()
    if _FACTORY_RE.match(s):
        return s
    raise QecatError(f"unknown calculator {spec!r}: allowed are {ALLOWED_TEXT}")


def _load_factory(spec: str) -> Callable[[], Any]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise QecatError(f"calculator {spec!r}: cannot import module {module_name!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise QecatError(f"calculator {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise QecatError(f"calculator {spec!r}: {attr!r} is not callable")
    return obj


def get_calculator(spec: str) -> Any:
    """A new ASE calculator for ``spec`` ('emt', 'chgnet' or 'MODULE:FACTORY').

    Create one per process and reuse it across structures: ASE calculators recompute whenever
    the atoms they are given change.
    """
    spec = normalize_spec(spec)
    if spec == "emt":
        from qecat_core.calculators.emt import FastEMT

        return FastEMT()
    if spec == "chgnet":
        try:
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator
        except ImportError as exc:
            raise QecatError(f"calculator 'chgnet' needs the chgnet package ({exc})") from None
        with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its banner
            model = CHGNet.load(use_device="cpu", verbose=False)
            return CHGNetCalculator(model=model, use_device="cpu", on_isolated_atoms="ignore")
    try:
        calc = _load_factory(spec)()
    except QecatError:
        raise
    except Exception as exc:
        raise QecatError(f"calculator {spec!r}: the factory failed ({type(exc).__name__}: {exc})") from exc
    if not hasattr(calc, "get_potential_energy") and not hasattr(calc, "calculate"):
        raise QecatError(f"calculator {spec!r}: the factory returned {type(calc).__name__}, not an ASE calculator")
    return calc


_SHARED: dict[str, Any] = {}


def shared_calculator(spec: str) -> Any:
    """This process's calculator for ``spec``, created on first use and then reused."""
    spec = normalize_spec(spec)
    if spec not in _SHARED:
        _SHARED[spec] = get_calculator(spec)
    return _SHARED[spec]


def _distribution_version(module_name: str) -> str | None:
    try:
        return importlib.metadata.version(module_name.split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def calculator_info(spec: str) -> tuple[str, str]:
    """(name, version) of the calculator behind ``spec``, e.g. ('emt', '3.29.0').

    For ``MODULE:FACTORY`` the name is the spec itself and the version ``MODULE.__version__``,
    else that of an installed distribution named like MODULE's top-level package, else
    ``'unknown'``.
    """
    spec = normalize_spec(spec)
    if spec == "emt":
        import ase

        return "emt", ase.__version__
    if spec == "chgnet":
        try:
            return "chgnet", importlib.metadata.version("chgnet")
        except importlib.metadata.PackageNotFoundError:
            raise QecatError("calculator 'chgnet' needs the chgnet package (not installed)") from None
    module_name = spec.partition(":")[0]
    try:
        version = getattr(importlib.import_module(module_name), "__version__", None)
    except ImportError as exc:
        raise QecatError(f"calculator {spec!r}: cannot import module {module_name!r} ({exc})") from None
    if version is None:
        version = _distribution_version(module_name)
    return spec, str(version) if version is not None else "unknown"


def supported_elements(spec: str) -> frozenset[str] | None:
    """Chemical symbols the calculator can handle, or None when it is not known to be limited."""
    spec = normalize_spec(spec)
    if spec == "emt":
        return EMT_ELEMENTS
    return None
