"""The README's Python snippets run, and every xafsflow name it shows imports as written."""

from __future__ import annotations

import importlib
import re

import pytest

from conftest import REPO

DOCS = [REPO / "README.md", REPO / "config" / "README.md"]


def _snippets():
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)):
            yield pytest.param(block, id=f"{doc.parent.name}/{doc.name}#{i}")


@pytest.mark.parametrize("code", list(_snippets()))
def test_python_snippets_run(code, monkeypatch, shared):
    monkeypatch.chdir(REPO)  # snippets use paths relative to the checkout (../shared/data)
    exec(compile(code, "README snippet", "exec"), {})


def test_readme_has_snippets():
    assert list(_snippets())


def _dotted_names():
    names = set()
    for doc in DOCS:
        for code in re.findall(r"`([^`]+)`", doc.read_text()):
            names |= set(re.findall(r"\bxafsflow(?:\.[A-Za-z_]\w*)+", code))
    return sorted(names)


@pytest.mark.parametrize("name", _dotted_names())
def test_names_shown_import_as_written(name):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{name} does not import")
