"""The config section base and the one YAML + ``--set`` loader of every command.

Every section of every package derives from :class:`Section` (unknown keys refused, frozen). A config file is
one YAML mapping; :func:`load` reads it (or starts from the packaged defaults), applies ``--set a.b=c``
overrides (values parsed as YAML) and validates it against a schema. Every problem is a
:class:`core.errors.ConfigError` whose one line names the file and the offending key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .secrets import redact_text

__all__ = ["Section", "apply_overrides", "load", "parse_overrides", "read_yaml", "validate"]

S = TypeVar("S", bound=BaseModel)


class Section(BaseModel):
    """Base of every config section: a typo is an error, and a validated section never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping at the top of a YAML file (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def parse_overrides(overrides: Sequence[str]) -> list[tuple[list[str], Any]]:
    """``["a.b=1", ...]`` -> ``[(["a", "b"], 1), ...]``; values are parsed as YAML (numbers, lists, null)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: value is not valid YAML: {raw!r}") from None
        parsed.append((parts, value))
    return parsed


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to ``data`` in place (sections are created as needed); returns ``data``."""
    for parts, value in parse_overrides(overrides):
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def _first_error(exc: ValidationError, prefix: str) -> str:
    err = exc.errors()[0]
    key = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown config key {key}"
    if err["type"] == "missing":
        return f"missing config key {key}"
    got = err.get("input")
    got_text = "" if isinstance(got, (dict, list)) else f", got {redact_text(repr(got))}"
    return f"config key {key}: {err['msg']}{got_text}"


def validate(schema: type[S], data: Any, where: str, prefix: str = "") -> S:
    """``schema.model_validate(data)``, or a :class:`ConfigError` ``"<where>: <first problem>"``; ``prefix`` is
    the dotted path of ``data`` in the whole file (for the message)."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_first_error(exc, prefix)}") from None


def load(
    path: str | Path | None, schema: type[S], overrides: Sequence[str] = (), what: str = "config file"
) -> S:
    """Read ``path`` (None: start empty), apply ``overrides`` and validate against ``schema``."""
    data = {} if path is None else read_yaml(path, what)
    apply_overrides(data, overrides)
    return validate(schema, data, str(path) if path is not None else "config")
