"""A simulated XMCD pair with known components: NiFe2O4-like Ni L2,3 (Ni2+, 8 d electrons, n_h = 2).

Each helicity: two arctan edge steps (2:1, at the L3 and L2 maxima) plus three
pseudo-Voigt components (Gaussian sd convolved with a 1 eV FWHM Lorentzian,
:func:`xafsflow.bayes.models.pvoigt`): the L3 main line, an L3 satellite
shoulder, the L2 line. The helicities differ in the components' areas only, so
the dichroism mu+ - mu- is the components with the area differences: negative
at the L3 main line, positive at the shoulder and at L2 (K_pos = 2, K_neg = 1).
The exact moments come from the noiseless spectra with the same windows and
steps the analysis uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xafsflow.bayes.models import pvoigt
from xafsflow.xas import sum_rules as sr

# (centre eV, Gaussian sd eV, area mu+, area mu-)
NI_COMPONENTS = (
    (853.0, 0.45, 5.0, 6.2),
    (855.2, 0.70, 1.5, 1.2),
    (870.3, 0.55, 2.3, 1.9),
)
NI_L3, NI_L2 = 853.0, 870.3
N_HOLES = 2.0


def simulate_xmcd_pair(seed: int, noise_sd: float = 0.01, grid_step: float = 0.25, e_lo: float = 845.0,
                       e_hi: float = 882.0, components=NI_COMPONENTS, scale: float = 1.0) -> dict:
    """Normalized mu+, mu- (step height 1) with Gaussian noise and the ground truth.

    ``noise_sd``: Gaussian noise sd (normalized units); ``grid_step``: energy step (eV). ``scale`` multiplies the dichroism (area differences). Returns energy,
    mu_plus, mu_minus, the noiseless spectra and ``truth`` (components, K's,
    steps, windows, exact p, q, r and moments for n_h = 2, P_c = 1).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 9]))
    e = np.arange(e_lo, e_hi + 1e-9, grid_step)
    steps = sr.edge_steps(e, NI_L3, NI_L2, 1.0, 1.0)
    comps = [(c, s, 0.5 * (ap + am) + 0.5 * scale * (ap - am), 0.5 * (ap + am) - 0.5 * scale * (ap - am))
             for c, s, ap, am in components]
    clean_p = steps + sum(pvoigt(e, ap, c, s) for c, s, ap, am in comps)
    clean_m = steps + sum(pvoigt(e, am, c, s) for c, s, ap, am in comps)
    w3, w23 = sr.default_windows(NI_L3, NI_L2, float(e[0]), float(e[-1]))
    # exact integrals from the noiseless spectra on a fine grid (same windows, same steps)
    fine = np.linspace(e_lo, e_hi, 200001)
    fp = sr.edge_steps(fine, NI_L3, NI_L2, 1.0, 1.0) + sum(pvoigt(fine, ap, c, s) for c, s, ap, am in comps)
    fm = sr.edge_steps(fine, NI_L3, NI_L2, 1.0, 1.0) + sum(pvoigt(fine, am, c, s) for c, s, ap, am in comps)
    p, q, r = sr.integrals(fine, fp, fm, sr.edge_steps(fine, NI_L3, NI_L2, 1.0, 1.0), w3, w23)
    mom = sr.moments(p, q, r, N_HOLES, 1.0)
    diff = [ap - am for c, s, ap, am in comps]
    truth = {
        "element": "Ni", "edge": "L23", "n_holes": N_HOLES, "polarization": 1.0, "noise_sd": noise_sd,
        "components": [{"centre": c, "sd": s, "area_plus": ap, "area_minus": am} for c, s, ap, am in comps],
        "lorentz_fwhm": 1.0, "K_plus": len(comps), "K_minus": len(comps),
        "K_pos": int(sum(d > 0 for d in diff)), "K_neg": int(sum(d < 0 for d in diff)),
        "steps": {"l3": NI_L3, "l2": NI_L2, "width": 1.0, "height": 1.0},
        "windows": {"l3": list(w3), "l23": list(w23)},
        "p": p, "q": q, "r": r, "m_orb": float(mom["m_orb"]), "m_spin_eff": float(mom["m_spin_eff"]),
        "ratio": float(mom["ratio"]),
    }
    return {"energy": e, "mu_plus": clean_p + rng.normal(0, noise_sd, e.size),
            "mu_minus": clean_m + rng.normal(0, noise_sd, e.size), "clean_plus": clean_p, "clean_minus": clean_m,
            "truth": truth}


def write_xmcd_pair(directory, seed: int, noise_sd: float = 0.01, pre_level: float = 0.3,
                    edge_jump: float = 0.8) -> dict:
    """Write ``ni_l23_plus.dat``/``ni_l23_minus.dat`` (beamline-like columns: a header block, a label
    line ``energy I0 Isample``) and ``truth.json``; raw mu = pre_level + slope + edge_jump * normalized."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sim = simulate_xmcd_pair(seed, noise_sd)
    e = sim["energy"]
    i0 = 1.0e5 * (1.0 + 0.001 * (e - e[0]))
    for name, key, slope in (("plus", "mu_plus", 2e-4), ("minus", "mu_minus", -1e-4)):
        mu = pre_level + slope * (e - e[0]) + edge_jump * sim[key]
        with open(d / f"ni_l23_{name}.dat", "w") as fh:
            fh.write(f"# simulated NiFe2O4-like Ni L2,3 XMCD, helicity {name} (xafsflow simulate xmcd)\n")
            fh.write(f"# seed {seed}, noise sd {noise_sd} (normalized units)\n")
            fh.write("energy\tI0\tIsample\n")
            for ei, a, m in zip(e, i0, mu):
                fh.write(f"{ei:.4f}\t{a:.3f}\t{a * m:.6f}\n")
    truth = dict(sim["truth"], files=["ni_l23_plus.dat", "ni_l23_minus.dat"], pre_level=pre_level,
                 edge_jump=edge_jump, seed=seed)
    (d / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth
