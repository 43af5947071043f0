"""YAML files into typed pydantic configs, with one-line errors naming the file, field and what is allowed.

The catalog, the screen config, the SLURM settings and the training recipes are all read this way:

>>> from pydantic import BaseModel, ConfigDict
>>> class Demo(BaseModel):
...     model_config = ConfigDict(extra="forbid")
...     workers: int = 1
>>> try:
...     validate(Demo, {"wrokers": 2}, "demo.yaml")
... except InputError as exc:
...     print(exc)
demo.yaml: wrokers: unknown field; allowed: workers
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from qecat_core.common.errors import InputError, QecatError

M = TypeVar("M", bound=BaseModel)


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str] | None:
    """The field names allowed at ``loc`` (the error's location minus the unknown key)."""
    for key in loc:
        if model is None or not isinstance(key, str) or key not in model.model_fields:
            return None
        ann = model.model_fields[key].annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(model.model_fields) if model is not None else None


def validation_message(source: str, err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """``SOURCE: field.path: what is wrong (got VALUE)`` for the first error (and how many more)."""
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        allowed = _fields_at(model, tuple(e["loc"][:-1]))
        msg = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif e["type"] == "literal_error":
        msg = f"{msg} (got {e.get('input')!r})"
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif "input" in e and e["type"] not in ("model_type", "dict_type") and "(got" not in msg:
        msg = f"{msg} (got {e['input']!r})"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def read_yaml(path: str | Path, what: str = "config file", error: type[QecatError] = InputError) -> dict[str, Any]:
    """The mapping in a YAML file ({} for an empty file); ``error`` with file and line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}:" if mark else ""
        raise error(f"{path}:{where} malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: (top level): expected a mapping of fields, got {type(data).__name__}")
    return data


def validate(model: type[M], data: Any, source: str, error: type[QecatError] = InputError) -> M:
    """``model.model_validate(data)``, its first error as one line ``SOURCE: field: message``."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise error(validation_message(source, err, model)) from None


def load_yaml_model(path: str | Path, model: type[M], what: str = "config file",
                    error: type[QecatError] = InputError) -> M:
    """Read a YAML file of ``model``'s fields and validate it (one-line errors)."""
    return validate(model, read_yaml(path, what, error), str(path), error)
