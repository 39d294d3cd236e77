"""The fits of `graft scaling`, on arrays N (parameters), D (tokens), C (FLOPs), L (final held-out loss) and
a budget group per run. Each returns a dict of named parameters, or raises FitError saying what the data
lacks. scipy does the optimizing; nothing here is a hand-written optimizer.

- Kaplan et al. (2020): L(N) = (N_c / N)^alpha_N over the best run of each size, L(D) = (D_c / D)^alpha_D over
  the best run of each token count (least squares in log-log; two fits, "kaplan_N" and "kaplan_D").
- Chinchilla (Hoffmann et al. 2022) approach 1: the lowest-loss run of each budget; N_opt = k_N C^a and
  D_opt = k_D C^b fitted to them in log-log.
- Approach 2: per budget with >= 3 sizes, a parabola of L in log N (and in log D); its vertex is that budget's
  N_opt (D_opt); the vertices fitted as power laws in C.
- Approach 3: L = E + A/N^alpha + B/D^beta, i.e. log L = LSE(a - alpha log N, b - beta log D, e), fitted by
  minimizing the Huber loss (delta 1e-3) of the log-loss residuals with L-BFGS, started from the best points of
  a grid (the paper's grid). Compute-optimal: with C = k N D (k the median of C / (N D) over the runs, ~6),
  N_opt = G (C/k)^a, D_opt = (C/k) / N_opt, a = beta/(alpha+beta), G = (alpha A / (beta B))^(1/(alpha+beta)).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

HUBER_DELTA = 1e-3
# Chinchilla's grid of initializations for (e, a, b, alpha, beta), with E = exp(e), A = exp(a), B = exp(b).
START_GRID = np.array(list(itertools.product(np.arange(-1.0, 1.01, 0.5), np.arange(0.0, 25.1, 5.0),
                                             np.arange(0.0, 25.1, 5.0), np.arange(0.0, 2.01, 0.5),
                                             np.arange(0.0, 2.01, 0.5))))
LBFGS_STARTS = 8  # L-BFGS runs from this many of the grid's best points (the grid is evaluated in full)
LBFGS_MAX_ITER = 1000  # a well-posed fit converges in ~100-200 iterations; a degenerate one is cut here
MIN_SIZES_PER_BUDGET = 3  # a parabola needs three sizes


class FitError(ValueError):
    """The data cannot support this fit (too few sizes, budgets or runs); the message says which."""


def _power_law(x: np.ndarray, y: np.ndarray, copies: np.ndarray | None = None) -> tuple[float, float]:
    """(exponent p, coefficient k) of y = k x^p by least squares in log-log, each point counted `copies` times."""
    if len(np.unique(x)) < 2:
        raise FitError("needs at least 2 distinct values")
    weights = None if copies is None else np.sqrt(copies)  # polyfit weights residuals, not squared residuals
    with np.errstate(over="ignore"):
        p, log_k = np.polyfit(np.log(x), np.log(y), 1, w=weights)
        return float(p), float(np.exp(log_k))


def _best_per(key: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct key: the lowest loss and how many copies of that run there are. A bootstrap resample
    repeats runs; keeping their count keeps it a bootstrap (dropping repeats would make it a subsample, whose
    spread is too narrow)."""
    keys = np.unique(key)
    best = np.array([loss[key == k].min() for k in keys])
    copies = np.array([np.sum((key == k) & (loss == b)) for k, b in zip(keys, best, strict=True)])
    return keys, best, copies


def kaplan(x, L, name: str) -> dict:
    """Kaplan's L = (x_c / x)^alpha_x over the best run of each x (N: sizes, D: token counts)."""
    values, best, copies = _best_per(x, L)
    if len(values) < 2:
        raise FitError(f"Kaplan L({name}) needs runs of at least 2 distinct {name}")
    p, k = _power_law(values, best, copies)
    return {f"alpha_{name}": -p, f"{name}_c": float(np.exp(-np.log(k) / p))}


def approach1(N, D, C, L, group) -> dict:
    """The lowest-loss run of each budget group; power laws of its N and D in its C."""
    groups = np.unique(group)
    if len(groups) < 2:
        raise FitError("approach 1 needs at least 2 budgets")
    best = np.array([np.flatnonzero(group == g)[np.argmin(L[group == g])] for g in groups])
    copies = np.array([np.sum((group == group[i]) & (L == L[i])) for i in best])  # see _best_per
    a, k_n = _power_law(C[best], N[best], copies)
    b, k_d = _power_law(C[best], D[best], copies)
    return {"a": a, "k_N": k_n, "b": b, "k_D": k_d}


def isoflop_parabolas(N, D, C, L, group) -> list[dict]:
    """Per budget group with >= 3 sizes: the parabola of L in log N and in log D, and their vertices."""
    fits = []
    for g in np.unique(group):
        rows = group == g
        if len(np.unique(N[rows])) < MIN_SIZES_PER_BUDGET:
            continue
        pn = np.polyfit(np.log(N[rows]), L[rows], 2)
        pd = np.polyfit(np.log(D[rows]), L[rows], 2)
        fits.append({"group": g, "C": float(np.exp(np.log(C[rows]).mean())), "coef_N": pn, "coef_D": pd,
                     "convex": bool(pn[0] > 0 and pd[0] > 0),
                     "N_opt": float(np.exp(-pn[1] / (2 * pn[0]))), "D_opt": float(np.exp(-pd[1] / (2 * pd[0]))),
                     "N_range": (float(N[rows].min()), float(N[rows].max()))})
    return fits


def approach2(N, D, C, L, group) -> dict:
    usable = [f for f in isoflop_parabolas(N, D, C, L, group) if f["convex"]]
    if len(usable) < 2:
        raise FitError(f"approach 2 needs at least 2 budgets with {MIN_SIZES_PER_BUDGET} or more sizes and a "
                       "convex IsoFLOP curve")
    c = np.array([f["C"] for f in usable])
    a, k_n = _power_law(c, np.array([f["N_opt"] for f in usable]))
    b, k_d = _power_law(c, np.array([f["D_opt"] for f in usable]))
    return {"a": a, "k_N": k_n, "b": b, "k_D": k_d}


def _objective(x, log_n, log_d, log_l):
    e, a, b, alpha, beta = x
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)  # log-sum-exp and its softmax weights, written out: scipy's add per-call overhead
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    weights /= total
    r = top + np.log(total) - log_l
    h = np.clip(r, -HUBER_DELTA, HUBER_DELTA)  # the Huber loss's derivative
    grad = np.array([h @ weights[2], h @ weights[0], h @ weights[1], -(h * weights[0]) @ log_n,
                     -(h * weights[1]) @ log_d])
    return _huber(r).sum() / HUBER_DELTA, grad / HUBER_DELTA


def _huber(r: np.ndarray) -> np.ndarray:
    magnitude = np.abs(r)
    return np.where(magnitude <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (magnitude - 0.5 * HUBER_DELTA))


def _grid_values(log_n, log_d, log_l) -> np.ndarray:
    e, a, b, alpha, beta = (START_GRID[:, i:i + 1] for i in range(5))
    pred = np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)
    return _huber(pred - log_l).sum(axis=1)


def fit_parametric(N, D, L, starts: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Approach 3's (E, A, B, alpha, beta), and the solutions found (best first, to restart bootstraps from)."""
    if len(np.unique(N)) < 2 or len(np.unique(D)) < 2 or len(L) < 5:
        raise FitError("approach 3 needs at least 5 runs over 2 or more sizes and token counts")
    log_n, log_d, log_l = np.log(N), np.log(D), np.log(L)
    if starts is None:
        starts = START_GRID[np.argsort(_grid_values(log_n, log_d, log_l))[:LBFGS_STARTS]]
    results = [minimize(_objective, x0, args=(log_n, log_d, log_l), jac=True, method="L-BFGS-B",
                        options={"maxiter": LBFGS_MAX_ITER, "ftol": 1e-15, "gtol": 1e-12}) for x0 in starts]
    results.sort(key=lambda r: r.fun)
    e, a, b, alpha, beta = results[0].x
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": float(alpha),
            "beta": float(beta)}, np.array([r.x for r in results])


def parametric_optimum(fit: dict, flops_per_nd: float) -> dict:
    """Compute-optimal exponents and the coefficient G of approach 3's fit, with C = flops_per_nd * N * D."""
    alpha, beta = fit["alpha"], fit["beta"]
    if alpha <= 0 or beta <= 0:
        raise FitError(f"approach 3 fitted alpha={alpha:.3g}, beta={beta:.3g}: no compute-optimal allocation")
    g = (alpha * fit["A"] / (beta * fit["B"])) ** (1 / (alpha + beta))
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta), "G": g, "k": flops_per_nd}


def parametric_loss(fit: dict, N, D) -> np.ndarray:
    return fit["E"] + fit["A"] / np.asarray(N) ** fit["alpha"] + fit["B"] / np.asarray(D) ** fit["beta"]


def optimal_at(approach: str, fit: dict, budget) -> tuple:
    """(N_opt, D_opt) at FLOPs `budget` (scalar or array) from an approach's fit."""
    budget = np.asarray(budget, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):  # a wild bootstrap draw gives inf: a failed draw
        return _optimal_at(approach, fit, budget)


def _optimal_at(approach: str, fit: dict, budget: np.ndarray) -> tuple:
    if approach == "approach3":
        n = fit["G"] * (budget / fit["k"]) ** fit["a"]
        return n, budget / fit["k"] / n
    return fit["k_N"] * budget ** fit["a"], fit["k_D"] * budget ** fit["b"]
