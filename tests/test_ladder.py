"""Ladder tuning, chain extension, starts from the K - 1 solution and K past k_max."""

from __future__ import annotations

import numpy as np
import pytest

from xafsflow.bayes import nagata
from xafsflow.bayes.ladder import (evidence_peak, expected_acceptance, move_top, pair_distances,
                                   refine_ladder, remap_state, tune_ladder)
from xafsflow.bayes.models import peaks_model
from xafsflow.bayes.posterior import (Convergence, LadderTuning, PosteriorSpec, analyse, auto_ladder,
                                      convergence_report, mode_start, noise_scale)
from xafsflow.bayes.remc import ChainSettings, initial_state, run_chain


def test_distance_and_acceptance_are_inverse():
    a = np.array([0.01, 0.1, 0.3, 0.5, 0.9])
    d = pair_distances(a)
    assert np.all(np.diff(d) < 0)  # rarer exchanges: farther apart
    np.testing.assert_allclose([expected_acceptance(v) for v in d], a, rtol=1e-12)


def test_refine_splits_bottlenecks_and_merges_redundant_replicas():
    b = np.concatenate([[0.0], np.geomspace(1.0, 1e4, 9)])
    rates = np.full(9, 0.4)
    rates[6] = 0.01  # a bottleneck between b[6] and b[7]
    rates[1:3] = 0.97  # two pairs so close that a point between them is redundant
    new = refine_ladder(b, rates, target=0.3, max_replicas=64)
    assert new[0] == 0.0 and new[-1] == b[-1] and np.all(np.diff(new) > 0)
    inside = np.sum((new > b[6]) & (new < b[7]))
    assert inside == int(np.ceil(pair_distances([0.01])[0] / pair_distances([0.3])[0])) - 1
    assert b[2] not in new  # merged away
    for v in np.concatenate([b[:2], b[3:]]):
        assert v in new  # nothing else moves
    capped = refine_ladder(b, rates, target=0.3, max_replicas=b.size + 1)
    assert np.sum((capped > b[6]) & (capped < b[7])) == 1


def test_remapped_state_is_consistent(tmp_path):
    x, y = nagata.data(3)
    model = peaks_model(3)
    b = np.concatenate([[0.0], np.geomspace(1e-2, 100, 7)])
    st = initial_state(x, y, model, b, np.random.default_rng(1))
    new_b = refine_ladder(b, np.array([0.5, 0.5, 0.02, 0.5, 0.5, 0.5, 0.5]), 0.3, 64)
    new = remap_state(st, b, new_b)
    assert new.theta.shape == (new_b.size, model.n_params)
    for s in range(new_b.size):
        np.testing.assert_allclose(new.sse[s], np.sum((y - model.evaluate(x, new.theta[s])) ** 2), rtol=1e-9)
    assert np.all(new.ex_tried == 0) and list(new.slot_of) == list(range(new_b.size))


def _real_fe2o3(shared):
    from xafsflow.io.xdi import energy_axis, read_xdi
    from xafsflow.xas import normalize_edge

    scan = read_xdi(shared / "xdi" / "fe2o3_rt.xdi")
    e, _ = energy_axis(scan)
    mu = scan.data[:, scan.column_labels.index("mutrans")]
    r = normalize_edge(e, mu)
    e0 = float(r.e0)
    m = (e >= e0 - 15) & (e <= e0 + 40)
    return e[m], r.norm[m], e0


def test_pilot_grows_the_ladder_where_measured_xanes_exchanges_rarely(shared):
    """Real Fe2O3 XANES, K = 3: the geometric ladder has a pair exchanging in under 10 % of tries;
    the pilot adds replicas (within the cap), keeps both ends, and records what it measured."""
    x, y, e0 = _real_fe2o3(shared)
    spec = PosteriorSpec(e0=e0)
    model = spec.build(3, x)
    base = auto_ladder(x, y, spec.build(4, x), 32, 10 / noise_scale(y) ** 2, np.random.default_rng(1))
    settings = ChainSettings(sweeps=4000, burn_in=4000)
    geometric = run_chain(x, y, model, base, settings, np.random.SeedSequence(7))
    assert geometric.exchange_rate.min() < 0.1
    tuned = tune_ladder(x, y, model, base, settings, np.random.SeedSequence(5), max_replicas=64)
    b = tuned["bvals"]
    assert b[0] == 0.0 and b[-1] == base[-1] and np.all(np.diff(b) > 0)
    assert 32 < b.size <= 64
    assert len(tuned["rounds"]) >= 2 and tuned["exchange_rate"].size == tuned["rounds"][-1][0] - 1


def test_evidence_peak_is_where_an_analytic_log_z_peaks():
    """F(b) = N b E0 + (P/2) ln(1 + b/c) (a linear-Gaussian model with misfit E0): <E>_b = F'(b)/N and
    log Z(b) = (N/2) ln(b/2 pi) - F(b); the peak from the mean energies equals the maximiser of log Z."""
    from scipy.optimize import brentq, minimize_scalar

    n, p, e0, c = 120, 9, 2.0e-3, 3.0

    def log_z(logb):
        b = np.exp(logb)
        return 0.5 * n * np.log(b / (2 * np.pi)) - (n * b * e0 + 0.5 * p * np.log1p(b / c))

    exact = np.exp(minimize_scalar(lambda t: -log_z(t), bounds=(0, 15), method="bounded",
                                   options={"xatol": 1e-10}).x)
    assert exact == pytest.approx(brentq(lambda b: 1 / (2 * b) - e0 - p / (2 * n * (b + c)), 1, 1e5), rel=1e-6)
    b = np.concatenate([[0.0], np.geomspace(1e-2, 1e7, 60)])
    mean_e = np.concatenate([[1.0], e0 + p / (2 * n * (b[1:] + c))])
    assert evidence_peak(b, mean_e) == pytest.approx(exact, rel=0.01)
    assert evidence_peak(b[b < exact / 2], mean_e[b < exact / 2]) is None  # the peak lies above this ladder


def test_evidence_peak_agrees_with_the_noise_estimate_of_a_chain():
    """Two estimators of the same b-hat on one chain: the crossing 2 b <E>_b = 1 and the maximum of the
    reweighted log Z(b) (Tokuda et al.), within 10 %."""
    from xafsflow.bayes.free_energy import estimate_noise

    x, y = nagata.data(3)
    b = np.concatenate([[0.0], np.geomspace(1e-1, 1e4, 23)])
    r = run_chain(x, y, peaks_model(3), b, ChainSettings(sweeps=2000, burn_in=2000), np.random.SeedSequence(3))
    peak = evidence_peak(b, r.energies.mean(axis=0))
    noise = estimate_noise(r.energies, b, x.size)
    assert peak == pytest.approx(noise["b_hat"], rel=0.10) and not noise["at_ladder_edge"]
    # the same replicas cut just above the peak (a top set too low): b-hat near the top is flagged
    m = int(np.searchsorted(b, 1.5 * peak)) + 1
    cut = estimate_noise(r.energies[:, :m], b[:m], x.size, b_range=(b[1], b[-1]))
    assert cut["at_ladder_edge"]


def test_move_top_truncates_or_extends_and_keeps_measured_rates():
    b = np.concatenate([[0.0], np.geomspace(1.0, 1e4, 9)])
    rates = np.linspace(0.1, 0.9, 9)
    cut, r = move_top(b, rates, 50.0)
    assert cut[-1] == 50.0 and np.all(cut[:-1] == b[b < 50.0]) and np.all(np.diff(cut) > 0)
    assert r.size == cut.size - 1 and r[-1] == rates[cut.size - 2]  # the pair that contained 50 eV^-2
    up, r2 = move_top(b, rates, 1e5)
    assert up[-1] == pytest.approx(1e5) and np.all(up[: b.size] == b) and np.all(np.diff(up) > 0)
    assert np.all(r2[: rates.size] == rates) and np.all(r2[rates.size:] == 0.3) and r2.size == up.size - 1
    # the added pairs are neither split nor merged away before they are measured (merging them all left one
    # pair that never exchanged on measured FeO, K = 5)
    refined = refine_ladder(up, r2, target=0.3, max_replicas=64)
    assert np.all(np.isin(up[b.size - 1:], refined))


def test_pilot_moves_the_top_near_the_evidence_peak_on_measured_xanes(shared):
    """Real Fe2O3 XANES, K = 3: the misfit puts the evidence peak far below 10 / (rough noise)^2; the
    pilot moves the top to 4 b-hat, and a chain on that ladder finds its b-hat below half the top
    (no posterior weight lost above it) with every neighbour exchanging at least as often as on the
    geometric ladder's worst pair."""
    from xafsflow.bayes.free_energy import estimate_noise

    x, y, e0 = _real_fe2o3(shared)
    spec = PosteriorSpec(e0=e0)
    model = spec.build(3, x)
    base = auto_ladder(x, y, spec.build(4, x), 32, 10 / noise_scale(y) ** 2, np.random.default_rng(1))
    settings = ChainSettings(sweeps=4000, burn_in=4000)
    tuned = tune_ladder(x, y, model, base, settings, np.random.SeedSequence(5), max_replicas=64, top_factor=4.0)
    b = tuned["bvals"]
    assert b[0] == 0.0 and np.all(np.diff(b) > 0) and b.size <= 64
    assert tuned["b_hat"] is not None and b[-1] < base[-1] / 10
    assert b[-1] == pytest.approx(4.0 * tuned["b_hat"], rel=0.5)  # set in the last move, measured again since
    assert np.min(np.abs(np.log(b[1:] / tuned["b_hat"]))) <= np.log(1.05)  # a replica where the posterior is read
    chain = run_chain(x, y, model, b, settings, np.random.SeedSequence(7))
    noise = estimate_noise(chain.energies, b, x.size, b_range=(base[1], base[-1]))
    assert noise["b_hat"] < b[-1] / 2 and not noise["at_ladder_edge"]
    assert chain.exchange_rate.min() >= 0.1


def test_an_extended_chain_is_the_longer_chain(tmp_path):
    x, y = nagata.data(2)
    model = peaks_model(2)
    b = np.concatenate([[0.0], np.geomspace(1e-2, 100, 7)])
    short = ChainSettings(sweeps=200, burn_in=100, checkpoint_every=100)
    long = ChainSettings(sweeps=500, burn_in=100, checkpoint_every=100)
    direct = run_chain(x, y, model, b, long, np.random.SeedSequence(4))
    first = run_chain(x, y, model, b, short, np.random.SeedSequence(4))
    more = run_chain(x, y, model, b, long, np.random.SeedSequence(4), resume=first)
    np.testing.assert_array_equal(more.samples, direct.samples)
    np.testing.assert_array_equal(more.energies, direct.energies)
    # the same through a checkpoint file (another process would find it)
    ck = tmp_path / "c.npz"
    run_chain(x, y, model, b, short, np.random.SeedSequence(4), checkpoint=ck)
    seen = []
    again = run_chain(x, y, model, b, long, np.random.SeedSequence(4), checkpoint=ck,
                      progress=lambda sw, t: seen.append(sw))
    assert seen[0] == 350  # continued after the 300 sweeps of the short chain
    np.testing.assert_array_equal(again.samples, direct.samples)


def test_mode_start_adds_the_missing_peak():
    x, y = nagata.data(7, sigma=0.02)
    K2 = peaks_model(2)
    truth = nagata.truth_vector()
    # the K = 2 "solution" misses the middle peak (centre 1.455)
    prev = {"samples": np.tile(np.r_[truth[:3], truth[6:]], (2, 10, 1))}
    start = mode_start(peaks_model(3), K2, prev, x, y)
    assert start is not None
    assert np.all(np.diff(start[1::3]) > 0)  # centres ordered
    assert abs(start[4] - nagata.MU[1]) < 0.05  # the new component sits on the missing peak


def test_k_grows_past_k_max_while_the_largest_k_keeps_evidence():
    x, y = nagata.data(2012)
    spec = PosteriorSpec(model="peaks", k_min=1, k_max=2, replicas=32, runs=2, sigma=0.1,
                         ladder=list(np.geomspace(1e-2, 100, 31)), settings=ChainSettings(sweeps=1000, burn_in=1000),
                         convergence=Convergence(enabled=False), k_limit=8)
    res = analyse(x, y, spec, 2012, "grow")
    assert res.ks[:3] == [1, 2, 3] and res.ks[-1] < 8  # grew past 2, stopped once the top K lost its evidence
    assert res.k_selected in (3, 4)
    assert res.p_k[-1] < spec.expand_p


def test_convergence_report_names_what_fails():
    entry = {"F_err": 0.3, "F_spread": 0.2, "rhat": np.array([1.0, 1.05, np.nan]),
             "ess_bulk": np.array([500.0, 150.0, np.nan]), "ess_tail": np.array([500.0, 300.0, np.nan]),
             "exchange_rate": np.array([0.3, 0.2]), "sweeps": 2000, "runs": [0, 1]}
    free = np.array([True, True, False])
    r = convergence_report(entry, Convergence(), free)
    assert r["failing"] == ["f_se", "rhat", "ess"] and not r["converged"]
    ok = dict(entry, F_err=0.1, rhat=np.array([1.0, 1.005, 9.0]), ess_bulk=np.array([500.0, 300.0, 0.0]))
    assert convergence_report(ok, Convergence(), free)["converged"]


@pytest.mark.parametrize("field", ["pilot", "extension"])
def test_settings_in_the_spec_reach_the_pipeline(field):
    tuning = LadderTuning(enabled=(field == "pilot"), warmup=100, sweeps=100, rounds=2)
    spec = PosteriorSpec(model="peaks", k_min=2, k_max=2, replicas=8, runs=2, sigma=0.1, tuning=tuning,
                         settings=ChainSettings(sweeps=100, burn_in=100),
                         convergence=Convergence(enabled=(field == "extension"), max_sweeps=400), k_limit=2)
    x, y = nagata.data(4)
    ent = analyse(x, y, spec, 3, "s").per_k[2]
    if field == "pilot":
        assert ent["pilot"] is not None and ent["sweeps"] == 100
    else:
        assert ent["pilot"] is None and ent["sweeps"] == 400 and not ent["convergence"]["converged"]
