"""The Bayesian hierarchical model across data sets (Benavoli, Corani, Demsar & Zaffalon 2017, section 5;
Corani et al. 2017): "is the method better on a new data set of this kind?".

Data set i has n_i paired per-seed differences x_ij (seeds train independently: correlation 0):
    x_ij ~ N(delta_i, sigma_i^2),  delta_i ~ t_nu(delta_0, sigma_0),
    sigma_i ~ U(0, s_max),  delta_0 ~ U(-d_max, d_max),  sigma_0 ~ U(0, s0_max),
    nu ~ Gamma(a, b),  a ~ U(0.5, 5),  b ~ U(0.05, 0.15)
with the bounds of baycomp's defaults on data scaled by their mean standard deviation (s_max = s0_max = 1000,
d_max = 1000 on that scale). The answer is the posterior predictive of delta_new ~ t_nu(delta_0, sigma_0):
P(delta_new < -rope), P(|delta_new| <= rope), P(delta_new > rope), averaged over the posterior.

Sampled by Gibbs with the t prior written as a scale mixture (delta_i | lambda_i ~ N(delta_0, sigma_0^2 /
lambda_i), lambda_i ~ Gamma(nu/2, nu/2)); nu, a and b by griddy Gibbs on fixed grids. Seeded: the same data
give the same probabilities. With two data sets the posterior of sigma_0 is barely constrained, so the
predictive stays near even odds even when both data sets point the same way: that is what two can say.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special
from scipy import stats as sps

__all__ = ["hierarchical_test"]

S_MAX = S0_MAX = D_MAX = 1000.0  # on the scale of the data's mean standard deviation
SIGMA2_FLOOR = 1e-8  # a data set's variance, on that scale, below which its seeds count as tied
NU_GRID = np.exp(np.linspace(math.log(0.5), math.log(200.0), 120))
A_GRID = np.linspace(0.5, 5.0, 40)
B_GRID = np.linspace(0.05, 0.15, 40)


def _inv_gamma_truncated(rng: np.random.Generator, shape: float, scale: float, upper: float) -> float:
    """sigma^2 ~ InvGamma(shape, scale) restricted to sigma^2 <= upper: scale / Gamma(shape), redrawn above
    ``upper`` (the bounds are far out, so a redraw is rare), by the inverse CDF after a few misses."""
    scale = max(scale, SIGMA2_FLOOR * 1e-3)  # a spread of exactly 0 (tied seeds) has no inverse gamma
    for _ in range(20):
        value = scale / rng.gamma(shape)
        if value <= upper:
            return float(value)
    dist = sps.invgamma(shape, scale=scale)
    return float(dist.ppf(rng.uniform(0, dist.cdf(upper))))


def _grid_draw(rng: np.random.Generator, grid: np.ndarray, log_p: np.ndarray) -> float:
    cdf = np.cumsum(np.exp(log_p - log_p.max()))
    return float(grid[min(np.searchsorted(cdf, rng.uniform(0, cdf[-1])), len(grid) - 1)])


def hierarchical_test(samples: list[np.ndarray], *, rope: float, higher_is_better: bool = True,
                      draws: int = 3000, burn: int = 500, random_state: int = 0) -> tuple[float, float, float]:
    """(P(worse), P(within the ROPE), P(better)) on a new data set, from each data set's per-seed paired
    differences (method - baseline); "better" reads in the metric's direction. Needs two or more data sets,
    each with two or more seeds."""
    data = [np.asarray(x, float) for x in samples]
    if len(data) < 2 or any(len(x) < 2 for x in data):
        raise ValueError("the hierarchical model needs >= 2 data sets with >= 2 paired seeds each")
    # The unit of the bounds: the seeds' mean sd, but never a vanishing one (seeds that tie leave only
    # rounding noise, 1e-17, which would blow the data up past every bound)
    scale = max(float(np.mean([x.std(ddof=1) for x in data])), 0.1 * max(np.abs(x).max() for x in data)) or 1.0
    data = [x / scale for x in data]
    r = rope / scale
    q = len(data)
    n = np.array([len(x) for x in data], float)
    means = np.array([x.mean() for x in data])
    rng = np.random.default_rng(random_state)
    delta = means.copy()
    sigma2 = np.array([max(x.var(ddof=1), SIGMA2_FLOOR) for x in data])
    lam = np.ones(q)
    delta0, sigma02, nu, a, b = float(means.mean()), float(max(means.var(), 1e-2)), 5.0, 2.0, 0.1
    kept = np.empty((draws, 3))  # nu, delta_0, sigma_0 after the burn-in
    for step in range(burn + draws):
        # delta_i: normal likelihood (n_i seeds) times the normal of the mixture
        prec = n / sigma2 + lam / sigma02
        mean = (n * means / sigma2 + lam * delta0 / sigma02) / prec
        delta = rng.normal(mean, 1 / np.sqrt(prec))
        spread = np.array([((x - d) ** 2).sum() / 2 for x, d in zip(data, delta)])
        # floored: a data set whose seeds all differ by the same amount has no spread (tied accuracies)
        sigma2 = np.maximum(spread / rng.gamma((n - 1) / 2), SIGMA2_FLOOR)
        for i in np.flatnonzero(sigma2 > S_MAX ** 2):  # outside sigma_i's uniform prior: redraw there
            sigma2[i] = _inv_gamma_truncated(rng, (n[i] - 1) / 2, spread[i], S_MAX ** 2)
        dev2 = (delta - delta0) ** 2
        lam = rng.gamma((nu + 1) / 2, 2 / (nu + dev2 / sigma02))
        # delta_0: normal given the mixture, kept inside its uniform prior
        prec0 = lam.sum() / sigma02
        delta0 = float(np.clip(rng.normal((lam * delta).sum() / lam.sum(), 1 / math.sqrt(prec0)), -D_MAX, D_MAX))
        sigma02 = max(_inv_gamma_truncated(rng, (q - 1) / 2, (lam * (delta - delta0) ** 2).sum() / 2, S0_MAX ** 2),
                      SIGMA2_FLOOR)  # data sets that agree exactly would collapse it to 0
        # nu | lambda, a, b (its Gamma(a, b) prior, b a rate); then a and b | nu
        log_lam = np.log(lam).sum()
        log_p = ((a - 1) * np.log(NU_GRID) - b * NU_GRID
                 + q * (NU_GRID / 2 * np.log(NU_GRID / 2) - special.gammaln(NU_GRID / 2))
                 + (NU_GRID / 2 - 1) * log_lam - NU_GRID / 2 * lam.sum())
        nu = _grid_draw(rng, NU_GRID, log_p)
        a = _grid_draw(rng, A_GRID, A_GRID * math.log(b) - special.gammaln(A_GRID) + (A_GRID - 1) * math.log(nu))
        b = _grid_draw(rng, B_GRID, a * np.log(B_GRID) - B_GRID * nu)
        if step >= burn:
            kept[step - burn] = nu, delta0, math.sqrt(sigma02)
    # the predictive delta_new ~ t_nu(delta_0, sigma_0), averaged over the posterior draws
    lo = sps.t.cdf(-r, kept[:, 0], loc=kept[:, 1], scale=kept[:, 2]).mean()
    hi = sps.t.sf(r, kept[:, 0], loc=kept[:, 1], scale=kept[:, 2]).mean()
    out = np.array([lo, 1 - lo - hi, hi])
    if not higher_is_better:
        out = out[::-1]
    return float(out[0]), float(out[1]), float(out[2])
