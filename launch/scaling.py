"""`graft scaling`: collect runs, fit, bootstrap, check on a held-out budget; write the table, JSON and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_pipeline.errors import UserError
from launch import scaling_plots
from launch.scaling_analysis import arrays, bootstrap, fit_all, held_out_check, intervals
from launch.scaling_data import collect, write_csv
from launch.scaling_fit import isoflop_parabolas

TITLES = {"kaplan_N": "Kaplan power law L(N) = (N_c/N)^alpha_N (best run per size)",
          "kaplan_D": "Kaplan power law L(D) = (D_c/D)^alpha_D (best run per token count)",
          "approach1": "Chinchilla approach 1 (lowest loss per budget): N_opt = k_N C^a, D_opt = k_D C^b",
          "approach2": "Chinchilla approach 2 (IsoFLOP parabolas): N_opt = k_N C^a, D_opt = k_D C^b",
          "approach3": "Chinchilla approach 3: L = E + A/N^alpha + B/D^beta (Huber on log L, L-BFGS)"}


def scaling(inputs: list[str], out: Path, budget: float | None = None, draws: int = 1000, level: float = 0.95,
            params: str = "non_embedding", seed: int = 0) -> dict:
    if not 0 < level < 1:
        raise UserError(f"--level must be between 0 and 1, got {level}")
    if draws < 10:
        raise UserError(f"--draws must be at least 10, got {draws}")
    runs, left_out = collect(inputs)
    for name, why in left_out:
        print(f"left out {name}: {why}")
    if len(runs) < 2:
        raise UserError(f"only {len(runs)} usable run(s) in {', '.join(inputs)}; a fit needs at least 2")
    data = arrays(runs, params)
    budget = budget or float(data["C"].max())
    fits, failed = fit_all(data, budget)
    for approach, why in failed.items():
        print(f"not fitted: {approach}: {why}")
    samples = bootstrap(data, budget, fits, draws, seed)
    report = {"inputs": list(inputs), "params": params, "budget": budget, "level": level, "draws": draws,
              "runs": len(runs), "left_out": [{"name": n, "reason": w} for n, w in left_out],
              "not_fitted": failed, "fits": {}, "held_out": held_out_check(data, budget)}
    bounds = intervals(samples, level)
    for approach, fit in fits.items():
        report["fits"][approach] = {k: {"value": v, "interval": bounds[approach][k]}
                                    for k, v in fit.items() if not k.startswith("_")}
        report["fits"][approach]["failed_draws"] = bounds[approach]["failed_draws"]
    report["one_size_budgets"] = _one_size_budgets(runs, data)
    report["off_grid_minima"] = _off_grid_minima(data)
    for note in report["off_grid_minima"]:
        print(f"warning: {note}")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(runs, out / "runs.csv")
    (out / "fits.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "scaling.md").write_text(markdown(report))
    scaling_plots.loss_vs_compute(data, fits, out / "loss_vs_compute.png")
    scaling_plots.isoflop_curves(data, out / "isoflop.png")
    scaling_plots.optimal_allocation(data, fits, samples, level, out / "optimal_allocation.png")
    if "approach3" in fits:
        scaling_plots.residuals(data, fits["approach3"], out / "residuals.png")
    print(markdown(report))
    print(f"wrote {out}/scaling.md, fits.json, runs.csv and plots (*.png)")
    return report


def _one_size_budgets(runs, data) -> list[str]:
    """Budgets with fewer than 3 sizes, named by their runs: left out of approach 2 (no parabola)."""
    notes = []
    for g in np.unique(data["group"]):
        rows = np.flatnonzero(data["group"] == g)
        if len(np.unique(data["N"][rows])) < 3:
            notes.append(f"budget {g:.3g}: {len(np.unique(data['N'][rows]))} size(s) "
                         f"({', '.join(runs[i].name for i in rows)}), left out of approach 2")
    return notes


def _off_grid_minima(data) -> list[str]:
    """IsoFLOP minima that lie outside their budget's sizes: extrapolated, so biased; the grid needs sizes there."""
    notes = []
    for f in isoflop_parabolas(data["N"], data["D"], data["C"], data["L"], data["group"]):
        low, high = f["N_range"]
        if not f["convex"]:
            notes.append(f"budget {f['C']:.3g}: the IsoFLOP curve is not convex (no minimum inside the grid); "
                         "left out of approach 2")
        elif not low <= f["N_opt"] <= high:
            notes.append(f"budget {f['C']:.3g}: the fitted minimum N = {f['N_opt']:.3g} lies outside the sizes "
                         f"trained ({low:.3g} to {high:.3g}); add sizes on that side")
    return notes


def markdown(report: dict) -> str:
    pct = f"{report['level']:.0%}"
    lines = [f"# Scaling fits ({report['runs']} runs, N = {report['params'].replace('_', '-')} parameters, "
             f"{report['draws']} bootstrap draws)", ""]
    for approach, fit in report["fits"].items():
        lines += [f"## {TITLES[approach]}", "", f"| parameter | value | {pct} interval |", "| --- | --- | --- |"]
        for key, entry in fit.items():
            if key == "failed_draws":
                continue
            low, high = entry["interval"]
            interval = f"[{low:.4g}, {high:.4g}]" if low is not None else "n/a"
            label = f"{key} at C = {report['budget']:.3g}" if key in ("N_opt", "D_opt") else key
            lines.append(f"| {label} | {entry['value']:.4g} | {interval} |")
        if fit["failed_draws"]:
            lines.append(f"\n{fit['failed_draws']} of {report['draws']} draws could not be fitted.")
        lines.append("")
    if report["not_fitted"]:
        lines += ["## Not fitted", ""] + [f"- {a}: {w}" for a, w in report["not_fitted"].items()] + [""]
    if report["off_grid_minima"]:
        lines += ["## IsoFLOP warnings", ""] + [f"- {x}" for x in report["off_grid_minima"]] + [""]
    if report["left_out"] or report["one_size_budgets"]:
        lines += ["## Left out", ""] + [f"- {x['name']}: {x['reason']}" for x in report["left_out"]] \
            + [f"- {x}" for x in report["one_size_budgets"]] + [""]
    lines += ["## Held-out check (refit without the largest budget)", ""]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in report["held_out"].items()]
    return "\n".join(lines) + "\n"
