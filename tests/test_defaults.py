"""One home for every default: a keyword default a library function keeps equals the schema's.

Every leaf key of the config schema that has a default (``pre1``, ``burn_in``, ``seed``,
``chunk_pixels``, ...) is looked up by name in the signature of every function and method and in
the fields of every dataclass of the package; where such a parameter has a default (other than
None or a dataclass ``default_factory``), it must equal the schema's default for that key (or
one of them, where the key has several defaults at different places of the schema).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import xafsflow
from xafsflow.schemas import is_leaf, iter_keys, load_schema

# Parameters that share a name with a config key but mean something else:
# "module:qualname:param" -> reason.
EXEMPT: dict[str, str] = {
    # the noise sd of the simulated Nagata et al. (2012) benchmark data, not the posterior's fixed sigma
    "xafsflow.bayes.nagata:data:sigma": "benchmark data noise, not the posterior's sigma",
}


def _plain(value):
    """Tuples as lists, so (-15.0, 40.0) compares equal to the schema's [-15.0, 40.0]."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def schema_defaults() -> dict[str, list]:
    """``{key name: [its defaults at every place of the schema]}`` for leaf keys with a default."""
    out: dict[str, list] = {}
    for path, node, _required in iter_keys(load_schema("config")):
        if is_leaf(node) and "default" in node and not path[-1].startswith("<"):
            values = out.setdefault(path[-1], [])
            if node["default"] not in values:
                values.append(node["default"])
    return out


def _modules():
    mods, skipped = [], []
    for info in pkgutil.walk_packages(xafsflow.__path__, prefix="xafsflow."):
        if info.name == "xafsflow.__main__":
            continue
        try:
            mods.append(importlib.import_module(info.name))
        except ModuleNotFoundError as exc:  # an optional dependency only; a broken xafsflow module fails
            if exc.name and exc.name.split(".")[0] == "xafsflow":
                raise
            skipped.append((info.name, exc.name))
    return mods, skipped


def _function(obj):
    """The Python function behind ``obj`` (plain, static/class method, Numba dispatcher), or None."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    obj = getattr(obj, "py_func", obj)  # numba.njit
    obj = inspect.unwrap(obj) if callable(obj) else obj
    return obj if inspect.isfunction(obj) else None


def keyword_defaults():
    """Yield ``(where, name, default)`` for every parameter/field default in the package."""
    mods, _skipped = _modules()
    seen = set()
    for mod in mods:
        for _, obj in vars(mod).items():
            if getattr(obj, "__module__", None) != mod.__name__ or id(obj) in seen:
                continue
            seen.add(id(obj))
            fn = _function(obj)
            if fn is not None:
                yield from _signature(mod, fn)
            elif inspect.isclass(obj):
                yield from _class(mod, obj)


def _signature(mod, fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    for p in params:
        if p.default is not inspect.Parameter.empty:
            yield f"{mod.__name__}:{fn.__qualname__}:{p.name}", p.name, p.default


def _class(mod, cls):
    is_dc = dataclasses.is_dataclass(cls)
    if is_dc:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                yield f"{mod.__name__}:{cls.__qualname__}:{f.name}", f.name, f.default
    for name, member in vars(cls).items():
        if is_dc and name == "__init__":
            continue  # generated from the fields above
        fn = _function(member)
        if fn is not None:
            yield from _signature(mod, fn)
        elif inspect.isclass(member) and member.__module__ == mod.__name__:
            yield from _class(mod, member)


DEFAULTS = schema_defaults()
CASES = sorted({(where, name, repr(default)): (where, name, default)
                for where, name, default in keyword_defaults()
                if name in DEFAULTS and default is not None}.values(), key=lambda c: c[0])


def test_schema_has_the_keys_this_test_is_about():
    for key in ("e0", "smooth_ev", "pre1", "pre2", "norm1", "norm2", "nnorm", "k_min", "k_max", "replicas",
                "runs", "sweeps", "burn_in", "thin", "block", "checkpoint_every", "target_acceptance", "sigma",
                "ladder", "b_max_factor", "seed", "chunk_pixels"):
        assert key in DEFAULTS, key


def test_the_walk_finds_known_defaults():
    where = {c[0] for c in CASES}
    assert "xafsflow.bayes.settings:ChainSettings:sweeps" in where
    assert "xafsflow.bayes.posterior:PosteriorSpec:replicas" in where


def test_exempt_entries_still_exist():
    stale = set(EXEMPT) - {c[0] for c in CASES}
    assert not stale, f"EXEMPT entries that no longer match a parameter: {sorted(stale)}"


@pytest.mark.parametrize("where,name,default", CASES, ids=[c[0] for c in CASES])
def test_keyword_default_equals_schema(where, name, default):
    if where in EXEMPT:
        pytest.skip(EXEMPT[where])
    allowed = DEFAULTS[name]
    assert _plain(default) in [_plain(v) for v in allowed], (
        f"{where} = {default!r}, but the config schema's default for {name!r} is "
        f"{' or '.join(map(repr, allowed))}: defaults live in the schema (workflow/schemas/)")


def test_cli_option_defaults_equal_schema():
    """``xafsflow <step> --seed/--chunk-pixels/...`` defaults are keyword defaults too."""
    from xafsflow.cli import build_parser

    bad = []

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}")
            elif action.dest in DEFAULTS and action.default is not None:
                if _plain(action.default) not in [_plain(v) for v in DEFAULTS[action.dest]]:
                    bad.append(f"{prefix} {action.option_strings or action.dest}: {action.default!r} "
                               f"(schema {DEFAULTS[action.dest]!r})")

    walk(build_parser(), "xafsflow")
    assert not bad, "CLI option defaults differ from the config schema: " + "; ".join(bad)
