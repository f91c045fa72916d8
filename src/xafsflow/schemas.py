"""Locate and apply the JSON schemas of the campaign configuration and scan sheet.

The schemas are the single home of every default. They live in
``workflow/schemas/`` in a source checkout and are packaged as
``xafsflow/schemas/`` in a wheel.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import yaml


def schema_dir() -> Path:
    """Directory holding ``config.schema.yaml`` and ``scans.schema.yaml``."""
    packaged = Path(__file__).resolve().parent / "schemas"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "workflow" / "schemas"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("xafsflow schemas not found; reinstall the package")


@lru_cache(maxsize=None)
def _load(name: str) -> dict:
    with open(schema_dir() / f"{name}.schema.yaml") as fh:
        return yaml.safe_load(fh)


def load_schema(name: str) -> dict:
    """Return a fresh copy of schema ``name`` (``"config"`` or ``"scans"``)."""
    return copy.deepcopy(_load(name))


def _validator_with_defaults(schema: dict):
    """A Draft-7 validator class that also fills in ``default`` values (deep copies)."""
    from jsonschema import Draft7Validator, validators

    base_properties = Draft7Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from base_properties(validator, properties, instance, sch)

    cls = validators.extend(Draft7Validator, {"properties": set_defaults})
    return cls(schema)


def _where(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def validate(instance: dict, schema: dict, *, defaults: bool = True) -> list[tuple[str, str]]:
    """Validate ``instance`` in place (filling defaults); return ``[(field, message), ...]``."""
    from jsonschema import Draft7Validator

    validator = _validator_with_defaults(schema) if defaults else Draft7Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [(_where(e), e.message) for e in errors]


def analysis_defaults(kind: str) -> dict:
    """The schema's default analysis parameters for one scan kind."""
    schema = load_schema("config")
    cfg = {"campaign": "x", "scans": "x"}
    validate(cfg, schema)
    return copy.deepcopy(cfg["analysis"][kind])
