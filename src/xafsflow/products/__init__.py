"""The product registry: one module per product, found by discovery.

Every module in this package whose name does not start with ``_`` defines
``PRODUCT``, a :class:`Product` that declares which scan kinds it takes, the
schema fragment of its parameters, the summary fields it adds, and the module
functions that run it:

``add_arguments(parser)``
    the product's own command-line options (beyond the common ones);
``run(args) -> str``
    run it on one scan store and write its store, TSV and PNG; returns a
    one-line report;
``check(params, scan) -> list[str]``
    problems with its resolved parameters that can be seen before any job runs
    (``snakemake -n``), in the same words the job would use;
``summary(attrs) -> dict``
    its summary fields (names without the product prefix) and ``flags`` from
    its store's attributes.

A campaign-level product (``campaign_level=True``, e.g. ``domain_model``) is made
once per campaign from its kind-level parameter block: its command takes no
scan store (:func:`xafsflow.products._common.add_campaign_product_arguments`),
its store is ``<directory>/<campaign_id>.zarr``, the rules build it with
``campaign_outputs``/``campaign_args`` (``workflow/rules/common.smk``) and the
summary chains it before the per-scan products of every scan that gets it.

The CLI's subcommands, the config schema, the summary and report columns and
the rules' target lists are all built from :func:`registry`, so a new product
touches its own module, rule file (``workflow/rules/<name>.smk``), schema
fragment (``workflow/schemas/products/<name>.schema.yaml``) and tests only.

This module is imported by the CLI and at DAG-building time, so product
modules import their science lazily (inside functions).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass(frozen=True)
class Product:
    """What the workflow needs to know about one product.

    Attributes
    ----------
    name : str
        Rule name, CLI subcommand, log folder and summary-column prefix.
    directory : str
        Folder under ``results/<campaign>/`` holding its stores.
    kinds : tuple of str
        Scan kinds it applies to (values of the scan sheet's ``kind``).
    params_key : str
        Its parameter block: ``analysis.<kind>.<params_key>`` in the config.
    summary_fields : tuple of str
        Columns it adds to ``summary.tsv`` (written ``<name>.<field>``).
    description : str
        One line for ``xafsflow --help``.
    version : int
        Bumped when the product's output for the same input and parameters
        changes; part of the rule's parameter hash, so products rerun.
    part : str or None
        Store suffix when several products share a directory
        (``<scan_id>.<part>.zarr``).
    campaign_level : bool
        A product of the whole campaign (store names start with ``_``).
    campaign_id : str
        Store stem of a campaign-level product (``<directory>/<campaign_id>.zarr``);
        it starts with ``_``, which no scan id does.
    module : str
        The module holding ``run``, ``check``, ``summary``, ``add_arguments``.
    kind_defaults : dict
        Per-kind defaults that differ from the fragment's, ``{kind: {key: default}}``
        (top-level keys of the fragment), e.g. another model for another kind.
    kind_schema : dict
        Per-kind changes of other schema keywords of a top-level key,
        ``{kind: {key: {keyword: value}}}`` (e.g. a narrower ``enum``, a
        ``type`` that admits null, the kind's own ``description``).
    """

    name: str
    directory: str
    kinds: tuple[str, ...]
    params_key: str
    summary_fields: tuple[str, ...]
    description: str
    module: str
    version: int = 1
    part: str | None = None
    campaign_level: bool = False
    campaign_id: str = "_campaign"
    kind_defaults: dict = field(default_factory=dict, hash=False, compare=False)
    kind_schema: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def schema_fragment(self) -> str:
        """File name of the parameter schema fragment in ``workflow/schemas/products/``."""
        return f"{self.name}.schema.yaml"

    @property
    def rule_file(self) -> str:
        """Rule file in ``workflow/rules/``."""
        return f"{self.name}.smk"

    def columns(self) -> list[str]:
        """Its summary columns, namespaced."""
        return [f"{self.name}.{f}" for f in self.summary_fields]

    def applies_to(self, kind: str, params: dict) -> bool:
        """Whether a scan of ``kind`` with resolved analysis ``params`` gets this product."""
        return kind in self.kinds and bool(params.get(self.params_key, {}).get("enabled", True))

    def impl(self):
        """The product's module (run, check, summary, add_arguments)."""
        return importlib.import_module(self.module)


@lru_cache(maxsize=None)
def registry() -> tuple[Product, ...]:
    """Every product, in a stable order (module name)."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        prod = getattr(mod, "PRODUCT", None)
        if not isinstance(prod, Product):
            raise TypeError(f"product module {mod.__name__} defines no PRODUCT")
        found.append(prod)
    names = [p.name for p in found]
    if len(set(names)) != len(names):
        raise ValueError(f"product names repeat: {names}")
    return tuple(found)


def get(name: str) -> Product:
    """The product called ``name``."""
    for p in registry():
        if p.name == name:
            return p
    raise KeyError(f"no product {name!r}; products: {', '.join(p.name for p in registry())}")
