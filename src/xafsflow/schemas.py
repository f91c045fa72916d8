"""Locate and apply the JSON schemas of the campaign configuration and scan sheet.

The schemas are the single home of every default. They live in
``workflow/schemas/`` in a source checkout and are packaged as
``xafsflow/schemas/`` in a wheel.
"""

from __future__ import annotations

import copy
import json
import re
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


def _read(path: Path) -> dict:
    """One of the package's schema files (libyaml's safe loader when present: same objects, 10x faster)."""
    with open(path) as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@lru_cache(maxsize=None)
def _load(name: str) -> dict:
    schema = _read(schema_dir() / f"{name}.schema.yaml")
    if name == "config":
        schema = _with_products(schema)
    return schema


def _with_products(schema: dict) -> dict:
    """The config schema with every product's parameter fragment in the kinds it takes.

    Each product's fragment (``products/<name>.schema.yaml``) becomes
    ``definitions.product_<name>`` (its own ``definitions`` join the schema's),
    and ``analysis.<kind>.<params_key>`` refers to it for every kind of the product.
    A kind for which the product declares ``kind_defaults`` or ``kind_schema``
    refers to its own deep copy of the fragment, ``definitions.product_<name>_<kind>``,
    with those defaults and keywords applied.
    """
    from xafsflow.products import registry

    schema = copy.deepcopy(schema)
    defs = schema.setdefault("definitions", {})
    kinds = schema["properties"]["analysis"]["properties"]
    for prod in registry():
        frag = _read(schema_dir() / "products" / prod.schema_fragment)
        for key, sub in frag.pop("definitions", {}).items():
            if key in defs and defs[key] != sub:
                raise ValueError(f"schema fragment of {prod.name} redefines definitions.{key}")
            defs[key] = sub
        defs[f"product_{prod.name}"] = frag
        for kind in prod.kinds:
            frag_name = f"product_{prod.name}"
            if kind in prod.kind_defaults or kind in prod.kind_schema:
                frag_name = f"product_{prod.name}_{kind}"
                defs[frag_name] = _kind_fragment(prod, kind, frag)
            block = kinds[kind]
            if "$ref" in block:  # inline the shared block before adding to it
                ref = block["$ref"].rsplit("/", 1)[-1]
                block = dict(copy.deepcopy(defs[ref]), default=block.get("default", {}))
                kinds[kind] = block
            block.setdefault("properties", {})[prod.params_key] = {"$ref": f"#/definitions/{frag_name}", "default": {}}
    for prod in registry():  # declarations for kinds the product does not take are mistakes
        stray = (set(prod.kind_defaults) | set(prod.kind_schema)) - set(prod.kinds)
        if stray:
            raise ValueError(f"product {prod.name} declares kind defaults for kinds it does not take: {sorted(stray)}")
    return schema


def _kind_fragment(prod, kind: str, frag: dict) -> dict:
    """A deep copy of a product's fragment with the kind's own defaults and schema keywords."""
    out = copy.deepcopy(frag)
    props = out["properties"]
    for key, keywords in prod.kind_schema.get(kind, {}).items():
        if key not in props:
            raise ValueError(f"product {prod.name}: kind_schema for {kind} names no key {key!r} of its fragment")
        props[key].update(copy.deepcopy(keywords))
    for key, value in prod.kind_defaults.get(kind, {}).items():
        if key not in props:
            raise ValueError(f"product {prod.name}: kind_defaults for {kind} names no key {key!r} of its fragment")
        props[key]["default"] = copy.deepcopy(value)
    return out


def load_schema(name: str) -> dict:
    """Return a fresh copy of schema ``name`` (``"config"`` or ``"scans"``).

    The config schema includes every product's parameter fragment.
    """
    return copy.deepcopy(_load(name))


def default(*path: str):
    """The config schema's default at a key path, e.g. ``default("stack", "chunk_pixels")``."""
    node = _load("config")
    for key in path:
        node = node["properties"][key]
        if "$ref" in node:
            node = dict(_load("config")["definitions"][node["$ref"].rsplit("/", 1)[-1]], **node)
    return copy.deepcopy(node["default"])


def formats_by_kind() -> dict[str, tuple[str, ...]]:
    """The file formats each scan kind takes (the scan sheet schema's ``formats_by_kind``)."""
    return {k: tuple(v) for k, v in _load("scans")["formats_by_kind"].items()}


def enum(name: str, field: str) -> tuple[str, ...]:
    """The allowed values of a scan sheet field (e.g. ``enum("scans", "kind")``)."""
    return tuple(_load(name)["properties"][field]["enum"])


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
    return problems(validator, instance)


def problems(validator, instance) -> list[tuple[str, str]]:
    """``[(key path, message), ...]`` of a (compiled) validator on ``instance``, sorted by path."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [(_where(e), e.message) for e in errors]


@lru_cache(maxsize=None)
def compiled(name: str, kind: str | None = None, defaults: bool = True):
    """A validator built once: of schema ``name``, or of its ``analysis.<kind>`` block.

    Building a validator costs far more than using it, and a campaign validates
    every row of its sheet: rows share these.
    """
    from jsonschema import Draft7Validator

    schema = _load(name)
    if kind is not None:
        schema = dict(schema["properties"]["analysis"]["properties"][kind], definitions=schema["definitions"])
    return _validator_with_defaults(schema) if defaults else Draft7Validator(schema)


def analysis_defaults(kind: str) -> dict:
    """The schema's default analysis parameters for one scan kind."""
    schema = load_schema("config")
    cfg = {"campaign": "x", "scans": "x"}
    validate(cfg, schema)
    return copy.deepcopy(cfg["analysis"][kind])


# --- the generated key table of config/README.md ---------------------------------------------

KEYS_START = "<!-- keys:start -->"
KEYS_END = "<!-- keys:end -->"

# Placeholder shown for a path component that stands for several keys (a map's keys, or sibling
# blocks documented once), by the key of the object holding them.
_PLACEHOLDERS = {"analysis": "kind", "priors": "family"}


def _resolve(node: dict, root: dict) -> dict:
    """``node`` with ``$ref`` (to ``#/definitions/...``) resolved; the node's own keys win."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"cannot resolve $ref {ref!r} in the config schema")
        seen.add(ref)
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _placeholder(parent: tuple[str, ...]) -> str:
    return f"<{_PLACEHOLDERS.get(parent[-1], 'name') if parent else 'name'}>"


def iter_keys(schema: dict | None = None):
    """Yield ``(path, node, required)`` for every key of the config schema, parents first.

    ``path`` is a tuple of key names (a map's keys, e.g. the priors' families, appear as one
    ``<placeholder>`` component); ``node`` has its ``$ref`` resolved; ``required`` says whether
    the parent object requires the key.
    """
    root = load_schema("config") if schema is None else schema

    def walk(node: dict, path: tuple[str, ...]):
        node = _resolve(node, root)
        required = set(node.get("required", ()))
        for key, sub in (node.get("properties") or {}).items():
            sub = _resolve(sub, root)
            yield path + (key,), sub, key in required
            yield from walk(sub, path + (key,))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            sub = _resolve(extra, root)
            yield path + (_placeholder(path),), sub, False
            yield from walk(sub, path + (_placeholder(path),))

    yield from walk(root, ())


def is_leaf(node: dict) -> bool:
    """A key holding a value rather than named sub-keys (a map such as ``priors`` counts as a value)."""
    return "properties" not in node


def _fmt(value) -> str:
    return "`" + json.dumps(value) + "`"


def _type_text(node: dict) -> str:
    types = node.get("type", "")
    types = list(types) if isinstance(types, list) else ([types] if types else [])
    text = " or ".join(types)
    if "array" in types and isinstance(node.get("items"), dict) and node["items"].get("type"):
        text = text.replace("array", f"array of {node['items']['type']}")
    if "enum" in node:
        text = " \\| ".join(_fmt(v) for v in node["enum"])
    bounds = []
    for key, sym in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in node:
            bounds.append(f"{sym} {node[key]:g}")
    if node.get("minItems") is not None and node.get("minItems") == node.get("maxItems"):
        bounds.append(f"{node['minItems']} items")
    if bounds:
        text += ", " + ", ".join(bounds)
    return text


def _default_text(node: dict, required: bool) -> str:
    if required:
        return "required"
    if "default" not in node:
        return ""
    if not is_leaf(node) and node["default"] == {}:
        return ""  # an object whose keys carry their own defaults
    return _fmt(node["default"])


def _cell(text: str) -> str:
    """One table cell: one line, ``|`` escaped, ``<placeholders>`` as code (not HTML tags)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return re.sub(r"(?<!`)<[^<>\s`]+>(?!`)", lambda m: f"`{m.group(0)}`", text)


def key_table(schema: dict | None = None) -> str:
    """The Markdown table of every config key: path, type, default, description.

    Sibling blocks with identical content (e.g. ``normalize`` under every kind) are documented
    once, with the varying key written as a placeholder (``analysis.<kind>.normalize.pre1``) and
    the keys it stands for listed in the block's row. A key without a ``description`` in the
    schema gets an empty description cell (see :func:`undescribed_keys`).
    """
    rows = []  # [path, type, default, description, {position: [keys it stands for]}]
    for path, node, required in iter_keys(schema):
        rows.append([list(path), _type_text(node), _default_text(node, required),
                     _cell(node.get("description", "")), {}, is_leaf(node)])

    # Merge rows that differ in one (non-final, unless the row is an object) path component only.
    # A placeholder stands for one set of keys at one place (``analysis.<kind>``): rows that would
    # merge over another set there (e.g. the kinds of one product only) stay as they are.
    depth = max((len(r[0]) for r in rows), default=0)
    sets: dict = {}  # (path up to the placeholder) -> the keys it stands for
    for i in range(depth):
        groups: dict = {}
        keys_of = []
        for r in rows:
            path, leaf = r[0], r[5]
            if len(path) <= i or (i == len(path) - 1 and leaf) or path[i].startswith("<"):
                key = ("single", id(r))
            else:
                key = (tuple(path[:i]), tuple(path[i + 1:]), r[1], r[2], r[3], tuple((k, tuple(v)) for k, v in sorted(r[4].items())), leaf)
            groups.setdefault(key, []).append(r)
            keys_of.append(key)
        merged, done = [], set()
        for r, key in zip(rows, keys_of):
            group = groups[key]
            if len(group) > 1:
                where = tuple(r[0][:i]) + (_placeholder(tuple(r[0][:i])),)
                members = [g[0][i] for g in group]
                if sets.setdefault(where, members) != members:
                    group = [r]  # another set of keys than this placeholder stands for here: keep the row
            if len(group) == 1:
                merged.append(r)
                continue
            if key in done:
                continue
            done.add(key)
            first = group[0]
            path = list(first[0])
            path[i] = _placeholder(tuple(path[:i]))
            stands = dict(first[4])
            stands[i] = [g[0][i] for g in group]
            merged.append([path, first[1], first[2], first[3], stands, first[5]])
        rows = merged

    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    listed = set()
    for path, typ, default, desc, stands, _leaf in rows:
        dotted = ".".join(path)
        notes = []
        for i, keys in sorted(stands.items()):
            # list the keys a placeholder stands for once, in the first row that has it with them
            if (tuple(path[: i + 1]), tuple(keys)) not in listed:
                listed.add((tuple(path[: i + 1]), tuple(keys)))
                notes.append(f"`{path[i]}`: " + ", ".join(f"`{k}`" for k in keys))
        if notes:
            desc = (desc + " " if desc else "") + "(" + "; ".join(notes) + ")"
        lines.append(f"| `{dotted}` | {typ} | {default} | {desc} |")
    return "\n".join(lines) + "\n"


def undescribed_keys(schema: dict | None = None) -> list[str]:
    """Dotted paths of the config keys that have no ``description`` in the schema."""
    return [".".join(path) for path, node, _ in iter_keys(schema) if not node.get("description")]


def readme_path() -> Path:
    return Path(__file__).resolve().parents[2] / "config" / "README.md"


def readme_keys_block(text: str) -> str:
    """The text between the key-table markers of config/README.md."""
    start, end = text.find(KEYS_START), text.find(KEYS_END)
    if start < 0 or end < start:
        raise ValueError(f"config/README.md lacks the markers {KEYS_START} ... {KEYS_END}")
    return text[start + len(KEYS_START):end].strip("\n") + "\n"


def write_readme(path: str | Path | None = None) -> bool:
    """Rewrite the key table between the markers of config/README.md; return whether it changed."""
    path = Path(path) if path else readme_path()
    text = path.read_text()
    start, end = text.find(KEYS_START), text.find(KEYS_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} lacks the markers {KEYS_START} ... {KEYS_END}")
    new = text[: start + len(KEYS_START)] + "\n" + key_table() + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    """``python -m xafsflow.schemas [--write [README]]``: print or rewrite the config key table."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xafsflow.schemas",
                                     description="Print the config key table generated from the schema.")
    parser.add_argument("--write", nargs="?", const="", default=None, metavar="README",
                        help="rewrite the block between the markers of config/README.md instead")
    args = parser.parse_args(argv)
    if args.write is None:
        print(key_table(), end="")
        return 0
    changed = write_readme(args.write or None)
    print(("rewrote" if changed else "unchanged:") + f" {args.write or readme_path()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
