"""Where the model runs: one spelling of a device for every command, and reduced-precision autocast.

A device is given as a string, validated by :func:`check_device_spec` and turned into a
``torch.device`` by :func:`resolve_device`:

* ``auto`` (the default everywhere): CUDA (``cuda:0``, or the device ``CUDA_VISIBLE_DEVICES`` / SLURM
  gives the process) when ``torch.cuda.is_available()``, else the CPU;
* ``cpu``;
* ``cuda`` / ``cuda:N``: that GPU; a one-line :class:`InputError` when this machine has no CUDA, or
  fewer than N + 1 CUDA devices.

Reduced precision (:func:`resolve_precision`, :func:`autocast`) is for prediction only:
``fp32`` (default, no autocast), ``bf16`` (``torch.autocast`` with bfloat16, CPU or CUDA; its error
against fp32 is measured in docs/benchmarks.md, "Reduced precision"), ``fp16`` (CUDA only, not
measured: the CPU cannot run it).

>>> resolve_device("cpu")
device(type='cpu')
>>> check_device_spec(" CUDA:1 ")
'cuda:1'
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BeforeValidator

from qecat_core.common.errors import InputError

#: The accepted spellings of a device, as error messages list them.
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...)"
PRECISIONS = ("fp32", "bf16", "fp16")

_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_spec(spec: Any) -> str:
    """The normalised device string (lower case, no spaces); :class:`InputError` for anything else.

    Only the spelling is checked here (a config written on a login node names the GPU of the job
    that reads it); :func:`resolve_device` checks that the device exists.
    """
    if spec is None:
        return "auto"
    if not isinstance(spec, str):
        import torch

        if isinstance(spec, torch.device):
            return str(spec)
        raise InputError(f"device {spec!r}: expected a string, one of {DEVICE_FORMS}")
    s = spec.strip().lower()
    if not _SPEC.match(s):
        raise InputError(f"device {spec!r}: not a device; use one of {DEVICE_FORMS}")
    return s


def _device_field(value: Any) -> str:
    try:
        return check_device_spec(value)
    except InputError:
        raise ValueError(f"not a device; use one of {DEVICE_FORMS}") from None


#: A config field holding a device spelling (``ScreenConfig.device``, ``TrainConfig.device``).
DeviceSpec = Annotated[str, BeforeValidator(_device_field)]


def _no_cuda(spec: str):
    import torch

    return InputError(f"device {spec}: torch.cuda.is_available() is False on this machine (torch {torch.__version__}); "
                      "use --device cpu or auto")


def resolve_device(spec: Any = "auto"):
    """``torch.device`` for ``spec`` (see the module docstring); one-line :class:`InputError` if unusable."""
    import torch

    s = check_device_spec(spec)
    if s == "cpu":
        return torch.device("cpu")
    if s == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        raise _no_cuda(s)
    if s == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    index = int(s.split(":", 1)[1])
    count = torch.cuda.device_count()
    if index >= count:
        names = ", ".join(f"cuda:{i}" for i in range(count))
        raise InputError(f"device {s}: this machine has {count} CUDA device{'s' if count != 1 else ''} ({names}); "
                         f"use one of them, or auto")
    return torch.device("cuda", index)


def cuda_index(spec: Any) -> int | None:
    """N of ``cuda:N`` (0 for ``cuda``), None for ``cpu`` / ``auto``."""
    s = check_device_spec(spec)
    if not s.startswith("cuda"):
        return None
    return int(s.split(":", 1)[1]) if ":" in s else 0


def resolve_precision(precision: str | None, device) -> Any:
    """The autocast dtype for ``precision`` on ``device`` (None for fp32); one-line :class:`InputError`.

    fp16 needs a CUDA device (CPU autocast has no float16 path worth offering, and its accuracy was
    never measured); bf16 runs on both.
    """
    import torch

    p = (precision or "fp32").strip().lower()
    if p not in PRECISIONS:
        raise InputError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if p == "fp32":
        return None
    if p == "fp16":
        if getattr(device, "type", str(device)) != "cuda":
            raise InputError(f"precision fp16 needs a CUDA device (this run is on {device}); use fp32 or bf16")
        return torch.float16
    return torch.bfloat16


@contextlib.contextmanager
def autocast(device, dtype) -> Iterator[None]:
    """``torch.autocast`` on ``device`` with ``dtype``; nothing when ``dtype`` is None (fp32)."""
    if dtype is None:
        yield
        return
    import torch

    with torch.autocast(device_type=getattr(device, "type", str(device)), dtype=dtype):
        yield


def synchronize(device) -> None:
    """Wait for the queued GPU work of ``device`` (for timing); nothing on the CPU."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        torch.cuda.synchronize(device)
