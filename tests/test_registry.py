"""The product registry drives the CLI, the schema, the summary and the rules; kinds come from the schema."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import REPO
from xafsflow import schemas
from xafsflow.cli import build_parser
from xafsflow.layout import Layout
from xafsflow.products import Product, registry
from xafsflow.steps import INGEST_BY_KIND, NORMALIZE_BY_KIND


def test_every_product_is_complete():
    """Each product has its module functions, schema fragment, rule file and report caption."""
    assert [p.name for p in registry()] == sorted(p.name for p in registry())
    for prod in registry():
        assert isinstance(prod, Product)
        impl = prod.impl()
        for fn in ("run", "check", "summary", "add_arguments"):
            assert callable(getattr(impl, fn)), (prod.name, fn)
        assert (schemas.schema_dir() / "products" / prod.schema_fragment).is_file()
        assert (REPO / "workflow" / "rules" / prod.rule_file).is_file()
        assert (REPO / "workflow" / "report" / f"{prod.name}.rst").is_file()
        assert set(prod.kinds) <= set(schemas.enum("scans", "kind"))


def test_cli_has_a_subcommand_per_product():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {p.name for p in registry()} <= set(sub.choices)


def test_schema_has_each_product_block_in_its_kinds_only():
    analysis = schemas.load_schema("config")["properties"]["analysis"]["properties"]
    for prod in registry():
        for kind, block in analysis.items():
            props = block.get("properties", {})
            assert (prod.params_key in props) == (kind in prod.kinds), (prod.name, kind)
        for kind in prod.kinds:
            assert prod.params_key in schemas.analysis_defaults(kind)


def test_kind_tables_follow_the_schema_enums():
    kinds = set(schemas.enum("scans", "kind"))
    assert set(INGEST_BY_KIND) == kinds and set(NORMALIZE_BY_KIND) == kinds
    assert set(schemas.load_schema("config")["properties"]["analysis"]["properties"]) == kinds
    fbk = schemas.formats_by_kind()
    assert set(fbk) == kinds
    assert set().union(*fbk.values()) == set(schemas.enum("scans", "format"))


def test_layout_is_the_only_home_of_results_paths():
    """No rule file or library module spells a results folder; they ask the layout."""
    lay = Layout(REPO / "results" / "demo")
    post = next(p for p in registry() if p.name == "posterior")  # a product without a part
    assert lay.product_store(post, "s1").name == "s1.zarr"
    assert lay.product_store(post, "s1").parent.name == post.directory
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for folder in ("/scans/", "/raw/", "/logs/", "/benchmarks/", "/posterior/", "/checkpoints/"):
            assert folder not in text, (smk.name, folder)
    for mod in ("summary.py", "cli.py", "steps.py"):
        text = (REPO / "src" / "xafsflow" / mod).read_text()
        for folder in ("scans", "raw", "logs", "posterior", "checkpoints"):
            assert f'/ "{folder}"' not in text, (mod, folder)


def test_help_is_quick_and_imports_no_heavy_library():
    code = ("import sys, time; t = time.time(); from xafsflow.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('numba', 'dask', 'distributed', 'matplotlib', 'larch', 'scipy') if m in sys.modules]; "
            "print(heavy, time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]", out
    t = time.time()
    subprocess.run([sys.executable, "-m", "xafsflow", "--help"], capture_output=True, check=True)
    assert time.time() - t < 3.0  # the interpreter start included; the import itself is checked above
