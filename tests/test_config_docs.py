"""config/README.md documents every config key once, in a table generated from the schema."""

from __future__ import annotations

import json
import re

from xafsflow import schemas

FIX = "config/README.md is out of date: run .venv/bin/python -m xafsflow.schemas --write"


def _rows(table: str) -> dict[str, list[str]]:
    """``{dotted key: [type, default, description]}`` of a generated table."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        key = cells[0].strip("`")
        assert key not in rows, f"{key} is documented twice"
        rows[key] = cells[1:]
    return rows


def _stands_for(rows: dict[str, list[str]]) -> dict[tuple[str, ...], set[str]]:
    """What each merged placeholder stands for, from the ``(<ph>: `a`, `b`)`` notes of the table."""
    out = {}
    for key, (_type, _default, desc) in rows.items():
        parts = key.split(".")
        for ph, keys in re.findall(r"`(<\w+>)`: ((?:`[^`]+`(?:, )?)+)", desc):
            i = parts.index(ph)
            keys = set(re.findall(r"`([^`]+)`", keys))
            assert out.setdefault(tuple(parts[: i + 1]), keys) == keys, f"{key}: {ph} stands for different keys"
    return out


def _matcher(rows):
    stands = _stands_for(rows)

    def matches(pattern: str, path: tuple[str, ...]) -> bool:
        parts = pattern.split(".")
        if len(parts) != len(path):
            return False
        for i, (p, k) in enumerate(zip(parts, path)):
            if p != k and k not in stands.get(tuple(parts[: i + 1]), ()):
                return False
        return True

    return matches


def test_readme_key_table_is_generated_from_schema():
    text = schemas.readme_path().read_text()
    assert text.count(schemas.KEYS_START) == 1 and text.count(schemas.KEYS_END) == 1, FIX
    assert schemas.readme_keys_block(text) == schemas.key_table(), FIX


def test_every_defaulted_leaf_key_is_in_the_table():
    rows = _rows(schemas.key_table())
    _matches = _matcher(rows)
    missing = []
    for path, node, _required in schemas.iter_keys():
        if not schemas.is_leaf(node) or "default" not in node:
            continue
        hits = [k for k in rows if _matches(k, path)]
        if len(hits) != 1 or rows[hits[0]][1] != "`" + json.dumps(node["default"]) + "`":
            missing.append((".".join(path), hits))
    assert not missing, f"keys with a default missing from (or ambiguous in) the table: {missing}"


def test_every_schema_key_has_exactly_one_row():
    rows = _rows(schemas.key_table())
    _matches = _matcher(rows)
    for path, _node, _required in schemas.iter_keys():
        hits = [k for k in rows if _matches(k, path)]
        assert len(hits) == 1, f"{'.'.join(path)} matches rows {hits}"


def test_merged_rows_list_what_the_placeholder_stands_for():
    table = schemas.key_table()
    rows = _rows(table)
    assert "analysis.<kind>.normalize.pre1" in rows
    for kind in ("xanes", "exafs", "xmcd", "stack"):
        assert f"`{kind}`" in table
    assert "analysis.xanes.posterior.burn_in" in rows
    assert "analysis.xanes.posterior.priors.<family>.dist" in rows
    assert rows["campaign"][1] == "required"


def test_key_table_of_a_small_schema():
    schema = {
        "definitions": {"blk": {"type": "object", "description": "a block",
                                "properties": {"x": {"type": "number", "default": 1.5, "description": "x|y in <unit>"}}}},
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "kinds": {"type": "object", "properties": {"a": {"$ref": "#/definitions/blk", "default": {}},
                                                       "b": {"$ref": "#/definitions/blk", "default": {}}}},
            "m": {"type": "object", "default": {}, "additionalProperties": {"type": "integer", "minimum": 0}},
        },
    }
    assert schemas.key_table(schema) == (
        "| key | type | default | description |\n"
        "|---|---|---|---|\n"
        "| `name` | string | required |  |\n"
        "| `kinds` | object |  |  |\n"
        "| `kinds.<name>` | object |  | a block (`<name>`: `a`, `b`) |\n"
        "| `kinds.<name>.x` | number | `1.5` | x\\|y in `<unit>` |\n"
        "| `m` | object | `{}` |  |\n"
        "| `m.<name>` | integer, >= 0 |  |  |\n"
    )
    assert schemas.undescribed_keys(schema) == ["name", "kinds", "m", "m.<name>"]


def test_main_prints_the_table(capsys):
    assert schemas.main([]) == 0
    assert capsys.readouterr().out == schemas.key_table()


def test_write_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{schemas.KEYS_START}\nold table\n{schemas.KEYS_END}\noutro\n")
    assert schemas.write_readme(readme)
    text = readme.read_text()
    assert text.startswith(f"intro\n{schemas.KEYS_START}\n") and text.endswith(f"{schemas.KEYS_END}\noutro\n")
    assert schemas.readme_keys_block(text) == schemas.key_table()
    assert not schemas.write_readme(readme)
