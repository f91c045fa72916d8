"""Random streams that depend only on what a task is, never on when or where it ran."""

from __future__ import annotations

import hashlib

import numpy as np


def stable_key(*parts) -> int:
    """A 64-bit integer from ``parts`` (str/int), stable across runs and machines.

    Python's ``hash()`` is salted per process, so it must never seed anything.
    """
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def seed_sequence(campaign_seed: int, *key) -> np.random.SeedSequence:
    """``SeedSequence([campaign_seed, stable_key(*key)])``."""
    return np.random.SeedSequence([int(campaign_seed), stable_key(*key)])


def rng(campaign_seed: int, *key) -> np.random.Generator:
    """The generator of the task identified by ``key`` (e.g. scan id, step, K, run)."""
    return np.random.default_rng(seed_sequence(campaign_seed, *key))
