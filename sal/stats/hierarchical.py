"""The Bayesian hierarchical model across data sets (Corani, Benavoli, Demsar, Mangili & Zaffalon 2017,
"Statistical comparison of classifiers through Bayesian hierarchical modelling"; Benavoli, Corani, Demsar &
Zaffalon 2017, section 5): "is the method better on a new data set of this kind?".

Data set i has n_i paired differences x_ij (method - baseline), correlated rho within the data set (0 for seeds
that train independently, sal's case; 1/k for k-fold cross-validation, whose folds share training data):
    x_i ~ N(delta_i 1, sigma_i^2 ((1 - rho) I + rho 1 1')),   delta_i ~ t_nu(delta_0, sigma_0),
    sigma_i ~ U(0, 1000),  delta_0 ~ U(-1000, 1000),  sigma_0 ~ U(0, sigma0_bound),
    nu = 1 + Gamma(alpha, beta) (beta a rate),  alpha ~ U(alpha_low, alpha_high),  beta ~ U(beta_low, beta_high),
on data divided by the data sets' mean seed sd (so every bound is a multiple of the seeds' sd), or by a tenth
of the largest |x| where that is larger (seeds that nearly tie: the bounds are then multiples of it). The prior on
(alpha, beta) is IDSIA's R script's (hierarchical_test.R: U(0.5, 5), U(0.05, 0.15); ``IDSIA_R``, sal's default)
or baycomp's, which is also the IDSIA tutorial's Python (U(1, 2), U(0.01, 0.1); ``BAYCOMP``). Both of those
bound sigma_0 by 1000 x the sd of the data sets' means and delta_0 by the largest |x|; sal bounds sigma_0 by
``sigma0_bound`` x the seeds' sd (1000 by default) instead, a bound that does not collapse to 0 when a few data
sets agree, and which the report varies (``prior_sensitivity``) because with few data sets it is the answer.

Two answers about a new data set's delta_new ~ t_nu(delta_0, sigma_0) against the ROPE r, both oriented
(worse, within the ROPE, better):
- ``predictive``: the posterior mean of (P(delta_new < -r), P(|delta_new| <= r), P(delta_new > r)), the chance
  that a new data set's delta lands there;
- ``most_probable``: the share of posterior draws in which each of those three is the largest, what baycomp's
  ``HierarchicalTest.probs`` and the IDSIA scripts report: how sure the posterior is which outcome is the most
  likely. It nears 1 while a new data set still often lands elsewhere: on IDSIA's NBC vs HNB (tests/published)
  HNB is the most probable winner in 0.997 of the draws (published 0.998), a new data set goes its way with
  probability 0.58.

Sampled by Gibbs with the t prior written as a scale mixture (delta_i | lambda_i ~ N(delta_0, sigma_0^2 /
lambda_i), lambda_i ~ Gamma(nu/2, nu/2)); nu - 1 on a log-spaced grid, with the grid's Jacobian (a cell of a
grid uniform in log(nu - 1) is nu - 1 wide in nu, so it holds p(nu) (nu - 1) of the mass; without that factor
the prior drawn was Gamma(alpha - 1, beta)), alpha and beta on uniform grids, each drawn within its cell.
Several chains run side by side (and, for ``prior_sensitivity``, the chains of every bound in one loop); each
probability carries its Monte Carlo standard error by batch means over the chains. Seeded: the same data give
the same probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special

__all__ = ["BAYCOMP", "IDSIA_R", "PRIOR_DOMINATED_BELOW", "SIGMA0_BOUNDS", "HierarchicalPosterior",
           "HierarchicalPrior", "hierarchical_posterior", "hierarchical_test", "prior_sensitivity"]

S_MAX = D_MAX = 1000.0  # bounds of sigma_i and |delta_0|, in the seeds' sd
SIGMA0_BOUND = 1000.0  # the default bound of sigma_0, in the seeds' sd
SIGMA0_BOUNDS = (10.0, 100.0, 1000.0, 10000.0)  # the bounds a prior-sensitivity report shows
# Below this many data sets the answer moves with the bound on sigma_0 by more than its Monte Carlo error: the
# posterior restates the prior (docs/statistics.md, "Second opinions", measured there)
PRIOR_DOMINATED_BELOW = 5
SIGMA2_FLOOR = 1e-8  # a data set's variance, on that scale, below which its seeds count as tied
# nu - 1 from 1e-4 (where nu's t is a Cauchy) to 1e3 (where it is a normal): the priors' widest Gamma(alpha,
# beta), IDSIA_R's Gamma(5, 0.05) and BAYCOMP's Gamma(2, 0.01), have 5e-17 and 5e-4 of their mass above 1e3
G_GRID = np.exp(np.linspace(math.log(1e-4), math.log(1e3), 241))
LOG_G_STEP = math.log(G_GRID[1] / G_GRID[0])
GRID_CELLS = 40  # cells of the alpha and beta grids
BATCHES = 10  # batch means per chain for the Monte Carlo errors


@dataclass(frozen=True)
class HierarchicalPrior:
    """nu = nu_min + Gamma(alpha, beta), alpha ~ U(*alpha), beta ~ U(*beta) (beta a rate)."""

    name: str
    alpha: tuple[float, float]
    beta: tuple[float, float]
    nu_min: float = 1.0

    def nu_mean(self) -> float:
        """The prior mean of nu: nu_min + E[alpha] E[1/beta]."""
        (a0, a1), (b0, b1) = self.alpha, self.beta
        return self.nu_min + (a0 + a1) / 2 * math.log(b1 / b0) / (b1 - b0)


IDSIA_R = HierarchicalPrior("IDSIA R script (Corani et al. 2017)", (0.5, 5.0), (0.05, 0.15))
BAYCOMP = HierarchicalPrior("baycomp and the IDSIA tutorial's Python", (1.0, 2.0), (0.01, 0.1))


@dataclass(frozen=True)
class HierarchicalPosterior:
    """Each triple is (worse, within the ROPE, better) in the metric's direction; ``*_se`` their Monte Carlo
    standard errors (batch means over the chains)."""

    predictive: tuple[float, float, float]
    predictive_se: tuple[float, float, float]
    most_probable: tuple[float, float, float]
    most_probable_se: tuple[float, float, float]
    n_sets: int
    sigma0_bound: float
    prior: str
    rho: float
    chains: int
    draws: int  # kept per chain

    @property
    def prior_dominated(self) -> bool:
        return self.n_sets < PRIOR_DOMINATED_BELOW


@dataclass(frozen=True)
class _Grids:
    """A prior's grids and the terms on them that do not change from step to step."""

    nu: np.ndarray  # nu_min + G_GRID
    log_g: np.ndarray
    nu_term: np.ndarray  # the lambdas' Gamma(nu/2, nu/2) normalising term, per data set
    alpha: np.ndarray  # cell midpoints
    alpha_width: float
    log_gamma_alpha: np.ndarray
    beta: np.ndarray
    beta_width: float
    log_beta: np.ndarray


@lru_cache(maxsize=8)
def _grids(prior: HierarchicalPrior) -> _Grids:
    nu = prior.nu_min + G_GRID
    (a0, a1), (b0, b1) = prior.alpha, prior.beta
    alpha = a0 + (a1 - a0) / GRID_CELLS * (np.arange(GRID_CELLS) + 0.5)
    beta = b0 + (b1 - b0) / GRID_CELLS * (np.arange(GRID_CELLS) + 0.5)
    return _Grids(nu, np.log(G_GRID), nu / 2 * np.log(nu / 2) - special.gammaln(nu / 2), alpha,
                  (a1 - a0) / GRID_CELLS, special.gammaln(alpha), beta, (b1 - b0) / GRID_CELLS, np.log(beta))


def _draw_cells(rng: np.random.Generator, log_p: np.ndarray) -> np.ndarray:
    """One cell per row of ``log_p`` (chains x cells), with probability proportional to exp(log_p)."""
    cdf = np.cumsum(np.exp(log_p - log_p.max(axis=1, keepdims=True)), axis=1)
    u = rng.uniform(0, 1, len(cdf)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), cdf.shape[1] - 1)


def _draw_nu_excess(rng: np.random.Generator, alpha: np.ndarray, beta: np.ndarray, q: int, sum_lam: np.ndarray,
                    sum_log_lam: np.ndarray, grids: _Grids) -> np.ndarray:
    """g = nu - nu_min | lambda, alpha, beta per chain: the Gamma(alpha, beta) prior times the lambdas'
    Gamma(nu/2, nu/2) likelihood (q of them; q = 0 draws from the prior), on the log grid. A cell of width h in
    log g holds about p(g) g h of the mass, so the Jacobian log g joins the log density."""
    log_p = (alpha[:, None] * grids.log_g - beta[:, None] * G_GRID + q * grids.nu_term
             + (grids.nu / 2 - 1) * sum_log_lam[:, None] - grids.nu / 2 * sum_lam[:, None])
    cell = _draw_cells(rng, log_p)  # (alpha - 1) log g + log g, the Jacobian, is alpha log g
    return G_GRID[cell] * np.exp(rng.uniform(-0.5, 0.5, len(cell)) * LOG_G_STEP)


def _draw_alpha_beta(rng: np.random.Generator, g: np.ndarray, beta: np.ndarray,
                     grids: _Grids) -> tuple[np.ndarray, np.ndarray]:
    """alpha | g, beta, then beta | g, alpha (g ~ Gamma(alpha, beta), uniform priors), each on its grid."""
    log_g = np.log(g)[:, None]
    cell = _draw_cells(rng, grids.alpha * np.log(beta)[:, None] - grids.log_gamma_alpha + (grids.alpha - 1) * log_g)
    alpha = grids.alpha[cell] + rng.uniform(-0.5, 0.5, len(g)) * grids.alpha_width
    cell = _draw_cells(rng, alpha[:, None] * grids.log_beta - grids.beta * g[:, None])
    return alpha, grids.beta[cell] + rng.uniform(-0.5, 0.5, len(g)) * grids.beta_width


def _inv_gamma_truncated(rng: np.random.Generator, shape: np.ndarray, scale: np.ndarray,
                         upper: float | np.ndarray) -> np.ndarray:
    """scale / G, G ~ Gamma(shape), restricted to at most ``upper``: drawn directly, and where a draw lands
    above (rare, except for sigma_0 with few data sets, whose posterior reaches its bound) by the inverse upper
    tail of the gamma restricted to G >= scale / upper."""
    scale = np.maximum(scale, SIGMA2_FLOOR * 1e-3)  # a spread of exactly 0 (tied seeds) has no inverse gamma
    value = scale / rng.gamma(shape)
    upper = np.broadcast_to(upper, value.shape)
    over = value > upper
    if over.any():
        s, low = np.broadcast_to(shape, value.shape)[over], scale[over] / upper[over]
        tail = special.gammaincc(s, low)  # P(G >= low)
        gam = np.where(tail > 0, special.gammainccinv(s, rng.uniform(0, 1, len(s)) * tail), low)
        value[over] = np.minimum(scale[over] / np.maximum(gam, low), upper[over])
    return value


def _truncated_normal(rng: np.random.Generator, mean: np.ndarray, sd: np.ndarray, bound: float) -> np.ndarray:
    lo, hi = special.ndtr((-bound - mean) / sd), special.ndtr((bound - mean) / sd)
    u = lo + rng.uniform(0, 1, len(mean)) * (hi - lo)
    return np.clip(mean + sd * special.ndtri(np.clip(u, 1e-300, 1 - 1e-16)), -bound, bound)


def _sample(data: list[np.ndarray], r: float, *, rho: float, prior: HierarchicalPrior, sigma0_bound: np.ndarray,
            draws: int, burn: int, rng: np.random.Generator) -> np.ndarray:
    """Posterior draws (chains x draws x 3) of the predictive's (P(< -r), P(within), P(> r)) on scaled data, one
    chain per entry of ``sigma0_bound`` (chains under different bounds run side by side: one loop for all)."""
    chains = len(sigma0_bound)
    q = len(data)
    grids = _grids(prior)
    n = np.array([len(x) for x in data], float)
    padded = np.zeros((q, int(n.max())))
    mask = np.zeros_like(padded)
    for i, x in enumerate(data):
        padded[i, :len(x)], mask[i, :len(x)] = x, 1.0
    sum_x = padded.sum(axis=1)
    inflate = 1 + (n - 1) * rho  # Var(mean of data set i) = sigma_i^2 inflate_i / n_i
    means = sum_x / n
    delta = np.tile(means, (chains, 1))
    sigma2 = np.tile([max(x.var(ddof=1), SIGMA2_FLOOR) for x in data], (chains, 1))
    lam = np.ones((chains, q))
    delta0 = np.full(chains, means.mean())
    # chains start apart in the spread between data sets, the parameter that mixes slowest
    sigma02 = max(float(means.var()), 1e-2) * np.exp(rng.normal(0, 1, chains))
    g = np.full(chains, 10.0)
    alpha = np.full(chains, sum(prior.alpha) / 2)
    beta = np.full(chains, sum(prior.beta) / 2)
    kept = np.empty((chains, draws, 3))  # nu, delta_0, sigma_0
    for step in range(burn + draws):
        nu = prior.nu_min + g
        # delta_i: the data set's mean (correlated scores inflate its variance) times the mixture's normal
        prec = n / (inflate * sigma2) + lam / sigma02[:, None]
        mean = (sum_x / (inflate * sigma2) + lam * delta0[:, None] / sigma02[:, None]) / prec
        delta = rng.normal(mean, 1 / np.sqrt(prec))
        # sigma_i^2: the quadratic form of the residuals under (1 - rho) I + rho 1 1'
        resid = (padded[None] - delta[:, :, None]) * mask
        quad = ((resid ** 2).sum(axis=2) - rho / inflate * resid.sum(axis=2) ** 2) / (1 - rho)
        # floored: a data set whose seeds all differ by the same amount has no spread (tied accuracies)
        sigma2 = np.maximum(_inv_gamma_truncated(rng, (n - 1) / 2, np.maximum(quad, 0) / 2, S_MAX ** 2),
                            SIGMA2_FLOOR)
        lam = rng.gamma((nu[:, None] + 1) / 2, 2 / (nu[:, None] + (delta - delta0[:, None]) ** 2 / sigma02[:, None]))
        sum_lam = lam.sum(axis=1)
        delta0 = _truncated_normal(rng, (lam * delta).sum(axis=1) / sum_lam, np.sqrt(sigma02 / sum_lam), D_MAX)
        spread0 = (lam * (delta - delta0[:, None]) ** 2).sum(axis=1) / 2
        sigma02 = np.maximum(_inv_gamma_truncated(rng, np.full(chains, (q - 1) / 2), spread0, sigma0_bound ** 2),
                             SIGMA2_FLOOR)  # data sets that agree exactly would collapse it to 0
        g = _draw_nu_excess(rng, alpha, beta, q, sum_lam, np.log(lam).sum(axis=1), grids)
        alpha, beta = _draw_alpha_beta(rng, g, beta, grids)
        if step >= burn:
            kept[:, step - burn] = np.column_stack([prior.nu_min + g, delta0, np.sqrt(sigma02)])
    nu, loc, scale = kept[..., 0], kept[..., 1], kept[..., 2]
    below = special.stdtr(nu, (-r - loc) / scale)
    above = special.stdtr(nu, (loc - r) / scale)
    return np.stack([below, 1 - below - above, above], axis=-1)


def _mean_and_se(values: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean over chains and draws, and its standard error by batch means (``BATCHES`` consecutive batches per
    chain, long enough that their means are nearly independent)."""
    chains, draws, k = values.shape
    size = draws // BATCHES
    batches = values[:, :size * BATCHES].reshape(chains * BATCHES, size, k).mean(axis=1)
    se = batches.std(axis=0, ddof=1) / math.sqrt(len(batches))
    return tuple(float(v) for v in values.mean(axis=(0, 1))), tuple(float(v) for v in se)


def prior_sensitivity(samples: list[np.ndarray], *, rope: float, bounds: tuple[float, ...] = SIGMA0_BOUNDS,
                      rho: float = 0.0, higher_is_better: bool = True, prior: HierarchicalPrior = IDSIA_R,
                      chains: int = 8, draws: int = 1000, burn: int = 500,
                      random_state: int = 0) -> dict[float, HierarchicalPosterior]:
    """Both answers for a new data set at each bound on sigma_0 (in the seeds' sd), from each data set's paired
    differences (method - baseline); "better" reads in the metric's direction. ``rho``: the correlation of one
    data set's scores (0 for independent seeds, 1/k for k-fold cross-validation). With few data sets the answer
    is the bound's. Needs two or more data sets, each with two or more scores."""
    data = [np.asarray(x, float) for x in samples]
    if len(data) < 2 or any(len(x) < 2 for x in data):
        raise ValueError("the hierarchical model needs >= 2 data sets with >= 2 paired seeds each")
    if not 0 <= rho < 1:
        raise ValueError(f"rho = {rho}: the correlation of a data set's scores must be in [0, 1) (0 for "
                         "independent seeds, 1/k for k-fold cross-validation)")
    if draws < 2 * BATCHES or chains < 1:
        raise ValueError(f"draws = {draws}, chains = {chains}: need draws >= {2 * BATCHES} and chains >= 1")
    # The unit of the bounds: the seeds' mean sd, but never a vanishing one (seeds that tie leave only
    # rounding noise, 1e-17, which would blow the data up past every bound)
    scale = max(float(np.mean([x.std(ddof=1) for x in data])), 0.1 * max(np.abs(x).max() for x in data)) or 1.0
    probs = _sample([x / scale for x in data], rope / scale, rho=rho, prior=prior,
                    sigma0_bound=np.repeat(np.asarray(bounds, float), chains), draws=draws, burn=burn,
                    rng=np.random.default_rng(random_state))
    winners = np.eye(3)[probs.argmax(axis=-1)]  # 1 where the outcome is the most probable in that draw
    if not higher_is_better:  # (below, within, above) -> (worse, within, better)
        probs, winners = probs[..., ::-1], winners[..., ::-1]
    out = {}
    for k, bound in enumerate(bounds):
        mine = slice(k * chains, (k + 1) * chains)
        predictive, predictive_se = _mean_and_se(probs[mine])
        most_probable, most_probable_se = _mean_and_se(winners[mine])
        out[bound] = HierarchicalPosterior(predictive, predictive_se, most_probable, most_probable_se,
                                           n_sets=len(data), sigma0_bound=bound, prior=prior.name, rho=rho,
                                           chains=chains, draws=draws)
    return out


def hierarchical_posterior(samples: list[np.ndarray], *, rope: float, sigma0_bound: float = SIGMA0_BOUND,
                           **kwargs) -> HierarchicalPosterior:
    """Both answers for a new data set at one bound on sigma_0 (``prior_sensitivity`` for the arguments)."""
    return prior_sensitivity(samples, rope=rope, bounds=(sigma0_bound,), **kwargs)[sigma0_bound]


def hierarchical_test(samples: list[np.ndarray], *, rope: float, higher_is_better: bool = True,
                      random_state: int = 0, **kwargs) -> tuple[float, float, float]:
    """The predictive answer alone, (P(worse), P(within the ROPE), P(better)) on a new data set, the posterior
    mean of the predictive probabilities (``hierarchical_posterior`` for both answers and their errors)."""
    return hierarchical_posterior(samples, rope=rope, higher_is_better=higher_is_better, random_state=random_state,
                                  **kwargs).predictive
