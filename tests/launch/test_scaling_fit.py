"""Scaling fits on synthetic runs from a known L(N, D) = E + A/N^alpha + B/D^beta with log-normal noise: each
approach recovers the known values within its bootstrap interval, and the intervals' coverage over repeated
data sets is close to their level. Bad runs in a results CSV are named and left out."""

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np
import pytest

from launch.scaling import scaling
from launch.scaling_analysis import arrays, bootstrap, fit_all, intervals
from launch.scaling_data import Run

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Chinchilla's published fit
TRUE_A = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])  # N_opt ~ C^a when C = 6 N D
BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)


def true_loss(n, d):
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def isoflop_runs(seed: int, noise: float = 0.01, sizes: int = 7) -> list[Run]:
    """An IsoFLOP grid centred near the true optimum of each budget (C = 6 N D), noisy final losses."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in BUDGETS:
        centre = 0.6 * c ** 0.45
        for factor in np.logspace(-0.8, 0.8, sizes):
            n = centre * factor
            d = c / (6 * n)
            runs.append(Run(f"r{len(runs)}", n, n, d, c, true_loss(n, d) * np.exp(rng.normal(0, noise)), c))
    return runs


def kaplan_runs(seed: int, noise: float = 0.01, law: str = "N") -> list[Run]:
    """Kaplan's regimes: L = (N_c/N)^0.076 with data unlimited (one large D), or L = (D_c/D)^0.095 with model
    size unlimited (one large N); his published constants."""
    rng = np.random.default_rng(seed)
    runs = []
    for x in np.logspace(6, 10, 16):
        n, d, loss = (x, 1e15, (8.8e13 / x) ** 0.076) if law == "N" else (1e15, x, (5.4e13 / x) ** 0.095)
        runs.append(Run(f"{law}{x:.0f}", n, n, d, 6 * n * d, loss * np.exp(rng.normal(0, noise))))
    return runs


def _inside(interval, value) -> bool:
    return interval[0] <= value <= interval[1]


@pytest.mark.slow
def test_every_approach_recovers_the_known_law_within_its_interval():
    data = arrays(isoflop_runs(seed=1), "total")
    fits, failed = fit_all(data, 1e21)
    assert not failed
    bounds = intervals(bootstrap(data, 1e21, fits, draws=100, seed=0), 0.95)
    for key in ("E", "A", "B", "alpha", "beta"):
        assert _inside(bounds["approach3"][key], TRUE[key]), (key, fits["approach3"][key], bounds["approach3"][key])
    for approach in ("approach1", "approach2", "approach3"):
        assert _inside(bounds[approach]["a"], TRUE_A), (approach, fits[approach]["a"], bounds[approach]["a"])
        assert _inside(bounds[approach]["b"], 1 - TRUE_A), (approach, bounds[approach]["b"])
    # The point estimates are close as well, not only inside wide intervals.
    assert abs(fits["approach3"]["alpha"] - TRUE["alpha"]) < 0.03
    assert abs(fits["approach3"]["beta"] - TRUE["beta"]) < 0.03
    assert abs(fits["approach2"]["a"] - TRUE_A) < 0.05

    for law, alpha, scale in (("N", 0.076, 8.8e13), ("D", 0.095, 5.4e13)):
        data = arrays(kaplan_runs(seed=2, law=law), "total")
        k_fits, failed = fit_all(data, 1e21, approaches=(f"kaplan_{law}",))
        assert not failed
        k_bounds = intervals(bootstrap(data, 1e21, k_fits, draws=200, seed=0), 0.95)[f"kaplan_{law}"]
        assert _inside(k_bounds[f"alpha_{law}"], alpha) and _inside(k_bounds[f"{law}_c"], scale), k_bounds


def _hit(make_runs, approach: str, key: str, truth: float, draws: int, level: float, seed: int) -> bool:
    data = arrays(make_runs(seed + 100), "total")
    fits, _ = fit_all(data, 1e21, approaches=(approach,))
    return _inside(intervals(bootstrap(data, 1e21, fits, draws, seed), level)[approach][key], truth)


def _coverage(make_runs, approach: str, key: str, truth: float, datasets: int, draws: int, level: float) -> float:
    """The share of `datasets` independent data sets whose `level` interval covers `truth`. The data sets are
    fitted two at a time in fresh processes: pure numerics, so the suite's second core would idle otherwise."""
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        hits = pool.map(partial(_hit, make_runs, approach, key, truth, draws, level), range(datasets))
        return sum(hits) / datasets


def test_interval_coverage_is_close_to_its_level():
    """80% intervals over 40 independent data sets: the count of hits is Binomial(40, 0.8) if the intervals
    are right (mean 32, sd 2.5); [25, 38] is the central 99.5% of it."""
    for make_runs, approach, key, truth in ((kaplan_runs, "kaplan_N", "alpha_N", 0.076),
                                            (isoflop_runs, "approach2", "a", TRUE_A)):
        coverage = _coverage(make_runs, approach, key, truth, datasets=40, draws=100, level=0.8)
        assert 25 / 40 <= coverage <= 38 / 40, (approach, key, coverage)


@pytest.mark.slow
def test_parametric_interval_coverage():
    """Approach 3 (L-BFGS per draw, slower, so 20 draws each): 80% intervals of alpha over 40 data sets, the
    same two-sided bound as above: intervals too narrow fail below, intervals so wide that they (nearly) always
    cover fail above."""
    coverage = _coverage(partial(isoflop_runs, sizes=5), "approach3", "alpha", TRUE["alpha"], datasets=40,
                         draws=20, level=0.8)
    assert 25 / 40 <= coverage <= 38 / 40, coverage


def test_bad_rows_of_a_results_csv_are_named_and_left_out(tmp_path):
    rows = ["name,params,tokens,loss,flops,budget"]
    for run in isoflop_runs(seed=3, sizes=5)[:15]:  # three budgets of five sizes
        rows.append(f"{run.name},{run.params},{run.tokens},{run.loss},{run.flops},{run.budget}")
    rows += ["blew_up,1e8,1e10,nan,6e18,6e18", "never_evaluated,2e8,1e10,,1.2e19,1.2e19",
             "lonely,3e8,5e10,2.4,9e19,9e19"]  # a budget of one size: no IsoFLOP parabola
    (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
    report = scaling([str(tmp_path / "results.csv")], tmp_path / "out", draws=20, params="total")
    assert {x["name"]: x["reason"] for x in report["left_out"]} == {
        "blew_up": "diverged (loss nan)", "never_evaluated": "missing final loss"}
    assert any("lonely" in note and "left out of approach 2" in note for note in report["one_size_budgets"])
    assert report["runs"] == 16  # the 15 good runs and "lonely"; the two bad ones are not fitted
    written = json.loads((tmp_path / "out" / "fits.json").read_text())
    assert set(written["fits"]) == {"kaplan_N", "kaplan_D", "approach1", "approach2", "approach3"}
    for name in ("scaling.md", "runs.csv", "loss_vs_compute.png", "isoflop.png", "optimal_allocation.png",
                 "residuals.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert "blew_up" not in (tmp_path / "out" / "runs.csv").read_text()
