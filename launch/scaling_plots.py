"""The PNG plots of `graft scaling`: loss against compute with the fitted frontier, IsoFLOP curves with their
minima, N_opt and D_opt against compute with bootstrap bands, and approach 3's residuals."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from launch.scaling_fit import isoflop_parabolas, optimal_at, parametric_loss  # noqa: E402

COLORS = {"approach1": "tab:blue", "approach2": "tab:orange", "approach3": "tab:green"}


def _compute_axis(data) -> np.ndarray:
    lo, hi = np.log10(data["C"].min()), np.log10(data["C"].max())
    return np.logspace(lo - 0.5, hi + 0.5, 60)


def loss_vs_compute(data, fits, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    points = ax.scatter(data["C"], data["L"], c=np.log10(data["N"]), cmap="viridis", s=28, zorder=3)
    fig.colorbar(points, ax=ax, label="log10 N (parameters)")
    if "approach3" in fits:
        c = _compute_axis(data)
        n, d = optimal_at("approach3", fits["approach3"], c)
        ax.plot(c, parametric_loss(fits["approach3"], n, d), color=COLORS["approach3"],
                label="compute-optimal frontier (approach 3)")
    groups = np.unique(data["group"])
    best = [np.flatnonzero(data["group"] == g)[np.argmin(data["L"][data["group"] == g])] for g in groups]
    ax.plot(data["C"][best], data["L"][best], "s", mfc="none", color=COLORS["approach1"], ms=10,
            label="lowest loss per budget (approach 1)")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel="final held-out loss",
           title="Loss against compute")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def isoflop_curves(data, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    groups = np.unique(data["group"])
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(groups)))
    fitted = {f["group"]: f for f in isoflop_parabolas(data["N"], data["D"], data["C"], data["L"], data["group"])}
    for g, color in zip(groups, colors, strict=True):
        rows = data["group"] == g
        ax.plot(data["N"][rows], data["L"][rows], "o", color=color, label=f"C = {g:.2g}")
        if g in fitted:
            f = fitted[g]
            n = np.logspace(np.log10(f["N_range"][0]) - 0.15, np.log10(f["N_range"][1]) + 0.15, 50)
            ax.plot(n, np.polyval(f["coef_N"], np.log(n)), "-", color=color, lw=1)
            if f["convex"]:
                ax.plot(f["N_opt"], np.polyval(f["coef_N"], np.log(f["N_opt"])), "*", color=color, ms=13,
                        mec="black")
    ax.set(xscale="log", xlabel="parameters N", ylabel="final held-out loss",
           title="IsoFLOP curves (star: fitted minimum, approach 2)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def optimal_allocation(data, fits, samples, level: float, path: Path) -> None:
    c = _compute_axis(data)
    tail = (1 - level) / 2 * 100
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for approach in ("approach1", "approach2", "approach3"):
        if approach not in fits:
            continue
        n, d = optimal_at(approach, fits[approach], c)
        draws = samples.get(approach, {})
        bands = _bands(approach, draws, c, tail)
        for ax, curve, band in zip(axes, (n, d), bands, strict=True):
            ax.plot(c, curve, color=COLORS[approach], label=approach)
            if band is not None:
                ax.fill_between(c, band[0], band[1], color=COLORS[approach], alpha=0.2)
    groups = np.unique(data["group"])
    best = [np.flatnonzero(data["group"] == g)[np.argmin(data["L"][data["group"] == g])] for g in groups]
    for ax, values, name in zip(axes, (data["N"], data["D"]), ("N_opt (parameters)", "D_opt (tokens)"), strict=True):
        ax.plot(data["C"][best], values[best], "ks", mfc="none", label="best run per budget")
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel=name)
        ax.legend(fontsize=8)
    fig.suptitle(f"Compute-optimal allocation ({level:.0%} bootstrap bands)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bands(approach, draws, c, tail):
    """Pointwise percentile bands of N_opt(C) and D_opt(C) over the bootstrap draws' fits."""
    keys = ("G", "k", "a") if approach == "approach3" else ("k_N", "a", "k_D", "b")
    if not draws or any(k not in draws for k in keys):
        return None, None
    ok = np.all([np.isfinite(draws[k]) for k in keys], axis=0)
    if ok.sum() < 10:
        return None, None
    curves_n, curves_d = [], []
    for i in np.flatnonzero(ok):
        n, d = optimal_at(approach, {k: draws[k][i] for k in keys}, c)
        curves_n.append(n)
        curves_d.append(d)
    return [(np.percentile(x, tail, axis=0), np.percentile(x, 100 - tail, axis=0)) for x in (curves_n, curves_d)]


def residuals(data, fit, path: Path) -> None:
    resid = np.log(data["L"]) - np.log(parametric_loss(fit, data["N"], data["D"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, x, name in zip(axes, (data["N"], data["D"]), ("parameters N", "tokens D"), strict=True):
        points = ax.scatter(x, resid, c=np.log10(data["C"]), cmap="viridis", s=24)
        ax.axhline(0, color="grey", lw=1)
        ax.set(xscale="log", xlabel=name)
    axes[0].set_ylabel("log L observed - log L fitted")
    fig.colorbar(points, ax=axes, label="log10 C")
    fig.suptitle("Approach 3 residuals")
    fig.savefig(path, dpi=110)
    plt.close(fig)
