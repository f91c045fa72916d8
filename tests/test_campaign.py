"""Campaign configuration and scan sheet validation (no Snakemake)."""

from __future__ import annotations

import copy

import pytest
import yaml

from xafsflow.campaign import load_campaign, parse_overrides, resolve_params, validate_config
from xafsflow.errors import ConfigError, ScanSheetError
from xafsflow.schemas import load_schema, schema_dir

from conftest import REPO

HEADER = "scan_id\tkind\tpath\tformat\tenergy\tmu\toverrides\n"


def _config(tmp_path, sheet_text, **extra):
    sheet = tmp_path / "scans.tsv"
    sheet.write_text(sheet_text)
    return {"campaign": "t", "scans": str(sheet), **extra}


def _good_row(shared, sid="cu", kind="xanes", extra=""):
    return f"{sid}\t{kind}\t{shared}/xdi/cu_metal_rt.xdi\txdi\t\t\t{extra}\n"


def test_library_reads_the_workflow_schemas():
    for name in ("config", "scans"):
        assert (schema_dir() / f"{name}.schema.yaml").read_text() == (
            REPO / "workflow" / "schemas" / f"{name}.schema.yaml").read_text()


def test_defaults_come_from_the_schema(tmp_path, shared):
    cfg = validate_config(_config(tmp_path, HEADER + _good_row(shared)))
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    norm_defaults = {k: v["default"] for k, v in schema["definitions"]["normalize"]["properties"].items()}
    for kind in ("xanes", "exafs", "xmcd", "stack"):
        assert cfg["analysis"][kind]["normalize"] == norm_defaults
    assert cfg["seed"] == schema["properties"]["seed"]["default"]
    # defaults are copies: changing one kind leaves the others alone
    cfg["analysis"]["xanes"]["normalize"]["pre1"] = -1
    assert cfg["analysis"]["exafs"]["normalize"]["pre1"] == norm_defaults["pre1"]


def test_demo_campaign_is_valid(monkeypatch):
    from xafsflow.simulate.demo import DEMO_FILES

    monkeypatch.chdir(REPO)
    produced = {f"resources/demo/{n}" for n in DEMO_FILES}
    camp = load_campaign(REPO / "config/config.yaml", produced=produced)
    assert {s.kind for s in camp.scans} == {"xanes", "exafs", "xmcd", "stack", "domain_image"}
    x2 = camp.scan("xanes_02")
    assert x2.params["normalize"]["pre1"] == -180 and x2.params["normalize"]["nnorm"] == 1
    # the override leaves the kind default of other keys in place
    assert x2.params["normalize"]["norm1"] == camp.config["analysis"]["xanes"]["normalize"]["norm1"]


def test_bad_config_names_the_field(tmp_path, shared):
    with pytest.raises(ConfigError, match=r"seed"):
        validate_config(_config(tmp_path, HEADER + _good_row(shared), seed=-3))
    with pytest.raises(ConfigError, match=r"analysis.xanes.normalize.*nnorm|nnorm"):
        validate_config(_config(tmp_path, HEADER, analysis={"xanes": {"normalize": {"nnorm": 9}}}))
    with pytest.raises(ConfigError, match=r"unexpected|Additional properties"):
        validate_config(_config(tmp_path, HEADER, colour="red"))


@pytest.mark.parametrize(
    "row2, field, words",
    [
        ("cu\txanes\t{x}\txdi\t\t\t\n", "scan_id", "duplicate"),
        ("cu2\txanse\t{x}\txdi\t\t\t\n", "kind", "xanse"),
        ("_cu\txanes\t{x}\txdi\t\t\t\n", "scan_id", "_cu"),
        ("cu2\txanes\tno/such/file.xdi\txdi\t\t\t\n", "path", "does not exist"),
        ("cu2\txanes\t{x}\ttiff_stack\t\t\t\n", "format", "does not fit"),
        ("cu2\txanes\t{x}\txdi\t\t\tnormalize.pre_one=-200\n", "overrides", "pre_one"),
        ("cu2\txanes\t{x}\txdi\t\t\tnormalize.nnorm=7\n", "overrides", "7"),
        ("cu2\txanes\t{x}\txdi\t\t\tnormalize pre1 -200\n", "overrides", "section.key=value"),
        ("cu2\txanes\t{x}\txdi\t\tmu_typo\t\n", "mu", "mu_typo"),
        ("cu2\txanes\t{x}\tcolumns\t\t\t\n", "energy", "energy"),
    ],
)
def test_bad_sheet_row_names_line_scan_and_field(tmp_path, shared, row2, field, words):
    x = f"{shared}/xdi/cu_metal_rt.xdi"
    cfg = _config(tmp_path, HEADER + _good_row(shared) + row2.format(x=x))
    with pytest.raises(ScanSheetError) as err:
        load_campaign(cfg)
    msg = str(err.value)
    assert "line 3" in msg, msg
    assert f"field {field!r}" in msg, msg
    assert words in msg, msg
    assert "scans.tsv" in msg


def test_unknown_sheet_column(tmp_path, shared):
    cfg = _config(tmp_path, "scan_id\tkind\tpath\tformat\tcolour\n" + f"a\txanes\t{shared}/xdi/cu_metal_rt.xdi\txdi\tred\n")
    with pytest.raises(ScanSheetError, match=r"line 1.*unknown column 'colour'"):
        load_campaign(cfg)


def test_column_mapping_checked_against_real_file(tmp_path, shared):
    ok = _config(tmp_path, HEADER + f"cu\txanes\t{shared}/xdi/cu_metal_rt.xdi\txdi\tENERGY\tmutrans\t\n")
    assert load_campaign(ok).scan("cu").mapping() == {"energy": "ENERGY", "mu": "mutrans"}


def test_produced_paths_need_not_exist(tmp_path):
    cfg = _config(tmp_path, HEADER + "a\txanes\tlater/a.xdi\txdi\t\t\t\n")
    with pytest.raises(ScanSheetError, match="no rule produces it"):
        load_campaign(cfg)
    assert load_campaign(copy.deepcopy(cfg), produced={"later/a.xdi"}).ids() == ["a"]


def test_parse_overrides():
    assert parse_overrides("normalize.pre1=-200; normalize.norm2=null") == {"normalize": {"pre1": -200, "norm2": None}}
    with pytest.raises(ValueError):
        parse_overrides("normalize.=3")


def test_resolve_params_rejects_unknown_keys():
    cfg = validate_config({"campaign": "t", "scans": "x"})
    with pytest.raises(ValueError, match="smoothing"):
        resolve_params(cfg, "xanes", {"normalize": {"smoothing": 2}})
    with pytest.raises(ValueError, match="fitting"):
        resolve_params(cfg, "exafs", {"fitting": {"a": 1}})


def test_load_schema_returns_copies():
    a = load_schema("config")
    a["properties"]["seed"]["default"] = -1
    assert load_schema("config")["properties"]["seed"]["default"] != -1


def test_kind_params_leaves_the_callers_dict_alone():
    from xafsflow.campaign import kind_params

    given = {"posterior": {"k_max": 2}}
    first = kind_params("xanes", given)
    assert given == {"posterior": {"k_max": 2}}  # no defaults written into the caller's dict
    assert first["posterior"]["k_max"] == 2 and "k_min" in first["posterior"]
