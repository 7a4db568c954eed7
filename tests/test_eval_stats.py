"""IQM and stratified-bootstrap intervals (rliable semantics) on worked examples and checkable properties."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from metarl.evaluation.stats import Interval, aggregate, columnwise_mean_ci, iqm, stratified_bootstrap_ci


def _mean(m: np.ndarray) -> float:
    return float(np.mean(m))


# ----------------------------------------------------------------------------------------------- IQM


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (list(range(1, 9)), 4.5),  # drop 2 from each end: mean of 3..6
        ([1, 2, 3, 100], 2.5),  # n = 4: drop 1 each end
        ([1, 2, 3, 4, 100], 3.0),  # n = 5: int(1.25) = 1 dropped each end: mean of 2, 3, 4
        ([1, 2, 3], 2.0),  # n < 4: nothing dropped, the plain mean
        ([7.0], 7.0),
        ([[4, 3], [2, 1]], 2.5),  # any shape: all entries, as rliable's axis=None
    ],
)
def test_iqm_worked_examples(values: Any, expected: float) -> None:
    assert iqm(values) == pytest.approx(expected)


def test_iqm_ignores_outliers_that_the_mean_does_not() -> None:
    values = [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1e6]
    assert iqm(values) == 1.0
    assert np.mean(values) > 1e5


def test_iqm_matches_scipy_trim_mean() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for n in range(1, 40):
        x = rng.normal(size=n)
        assert iqm(x) == pytest.approx(stats.trim_mean(x, 0.25), abs=1e-12), n


@pytest.mark.parametrize(
    ("values", "match"),
    [([], "empty"), ([1.0, float("nan")], "finite.*nan"), ([float("inf")], "finite.*inf"), (["a"], "numbers")],
)
def test_iqm_rejects_bad_input(values: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        iqm(values)


# ----------------------------------------------------------------------------------------------- bootstrap


def test_constant_scores_give_a_zero_width_interval_at_the_constant() -> None:
    scores = np.full((5, 7), 0.375)
    for statistic in (iqm, _mean):
        ci = stratified_bootstrap_ci(scores, statistic, reps=200)
        assert ci == Interval(0.375, 0.375, 0.375)
        assert ci.width == 0.0


def test_ci_of_the_mean_of_normal_data_covers_it_with_the_textbook_width() -> None:
    mu, sigma, n = 2.0, 3.0, 400
    x = np.random.default_rng(11).normal(mu, sigma, size=(n, 1))  # one task: the plain bootstrap
    ci = stratified_bootstrap_ci(x, _mean, reps=4000, seed=5)
    assert ci.point == pytest.approx(float(x.mean()))
    assert ci.low < mu < ci.high
    assert ci.low < ci.point < ci.high
    assert ci.width == pytest.approx(2 * 1.96 * sigma / np.sqrt(n), rel=0.15)


def test_wider_confidence_gives_a_wider_interval() -> None:
    x = np.random.default_rng(0).random((8, 5))
    narrow = stratified_bootstrap_ci(x, iqm, confidence=0.5)
    wide = stratified_bootstrap_ci(x, iqm, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    x = np.random.default_rng(1).random((6, 4))
    a = stratified_bootstrap_ci(x, iqm, reps=500, seed=7)
    b = stratified_bootstrap_ci(x, iqm, reps=500, seed=7)
    c = stratified_bootstrap_ci(x, iqm, reps=500, seed=8)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.point == c.point == iqm(x)


def test_replicates_resample_runs_within_each_task_independently() -> None:
    runs, tasks = 6, 4
    scores = 100.0 * np.arange(tasks)[None, :] + np.arange(runs)[:, None]  # column j holds 100j + run
    seen: list[np.ndarray] = []

    def record(m: np.ndarray) -> float:
        assert m.shape == (runs, tasks)
        seen.append(m.copy())
        return 0.0

    stratified_bootstrap_ci(scores, record, reps=300, seed=0)
    assert len(seen) == 301  # the original matrix and every replicate
    replicates = seen[:-1]  # the last call is the point estimate on the original scores
    np.testing.assert_array_equal(seen[-1], scores)
    for m in replicates:
        for j in range(tasks):  # a column only ever holds values of that same task
            assert set(m[:, j]) <= set(scores[:, j])
    rows = [m - 100.0 * np.arange(tasks) for m in replicates]  # the run index drawn for each (row, task)
    assert any(len(set(r[:, 0])) < runs for r in rows)  # drawn with replacement
    assert any(not np.array_equal(r[:, 0], r[:, 1]) for r in rows)  # tasks draw their runs independently


def test_columnwise_mean_ci_is_the_one_column_stratified_bootstrap() -> None:
    x = np.random.default_rng(2).random((5, 1))
    (col,) = columnwise_mean_ci(x, reps=300, seed=4)
    assert col == stratified_bootstrap_ci(x, _mean, reps=300, seed=4)


def test_columnwise_mean_ci_has_one_interval_per_column() -> None:
    x = np.column_stack([np.full(4, 0.5), np.array([0.0, 1.0, 0.0, 1.0])])
    constant, varying = columnwise_mean_ci(x, reps=300)
    assert constant == Interval(0.5, 0.5, 0.5)
    assert varying.point == 0.5 and varying.low < 0.5 < varying.high


def test_aggregate_gives_iqm_and_mean_with_intervals_around_them() -> None:
    x = np.random.default_rng(4).random((10, 50))
    out = aggregate(x, reps=500)
    assert set(out) == {"iqm", "mean"}
    assert out["iqm"].point == pytest.approx(iqm(x))
    assert out["mean"].point == pytest.approx(float(x.mean()))
    for ci in out.values():
        assert ci.low < ci.point < ci.high


@pytest.mark.parametrize(
    ("scores", "match"),
    [
        (np.arange(5.0), r"2-D array \[num_runs, num_tasks\], got shape \(5,\)"),
        (np.zeros((2, 3, 4)), r"2-D.*shape \(2, 3, 4\)"),
        (np.zeros((0, 3)), r"empty \(shape \(0, 3\)\)"),
        (np.array([[0.5, np.nan]]), "finite numbers, got nan"),
        (np.array([[0.5], [-np.inf]]), "finite numbers, got -inf"),
    ],
)
def test_bad_scores_are_rejected_with_what_was_given(scores: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stratified_bootstrap_ci(scores, iqm)
    with pytest.raises(ValueError, match=match):
        aggregate(scores)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reps": 0}, r"reps must be a positive integer, got 0"),
        ({"reps": 2.5}, r"reps must be a positive integer, got 2.5"),
        ({"reps": True}, r"reps must be a positive integer, got True"),
        ({"confidence": 0.0}, r"confidence must be a number in \(0, 1\).*got 0.0"),
        ({"confidence": 1}, r"confidence must be a number in \(0, 1\).*got 1"),
        ({"confidence": 95}, r"got 95"),
    ],
)
def test_bad_bootstrap_arguments_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stratified_bootstrap_ci(np.ones((3, 2)), iqm, **kwargs)


def test_interval_format() -> None:
    assert Interval(0.5, 0.25, 0.75).format() == "0.500 [0.250, 0.750]"
    assert Interval(12.0, 10.0, 14.5).format(1) == "12.0 [10.0, 14.5]"


@pytest.mark.parametrize(("runs", "tasks", "kind"), [(5, 50, "uniform"), (3, 50, "binary"), (10, 8, "skewed")])
def test_iqm_and_its_interval_agree_with_rliable(runs: int, tasks: int, kind: str) -> None:
    import warnings

    from rliable import library as rly
    from rliable import metrics

    rng = np.random.default_rng(runs * 100 + tasks)
    scores = {
        "uniform": lambda: rng.random((runs, tasks)),
        "binary": lambda: (rng.random((runs, tasks)) < 0.6).astype(float),  # per-goal success of few seeds
        "skewed": lambda: rng.beta(0.5, 3.0, (runs, tasks)),
    }[kind]()
    reps = 5000
    ours = aggregate(scores, reps=reps, seed=0)

    def both(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch: random_state is deprecated
        points, intervals = rly.get_interval_estimates(
            {"a": scores}, both, reps=reps, random_state=np.random.RandomState(0)
        )
    for i, name in enumerate(("iqm", "mean")):
        # the statistic itself: the same trimmed mean, exactly
        assert ours[name].point == pytest.approx(points["a"][i], abs=1e-12)
        # the interval ends: two independent bootstraps of the same size differ by Monte-Carlo error only.
        # A 2.5% quantile of R replicates has standard error sqrt(p(1-p)/R) / f(q); for a near-normal bootstrap
        # distribution of sd s, f(q) = phi(1.96) / s, so SE = 2.67 s / sqrt(R).  Allow 4 standard errors of the
        # difference of two such estimates (sqrt(2) SE), with s from our own interval (width = 3.92 s).
        s = (ours[name].high - ours[name].low) / 3.92
        tol = 4 * np.sqrt(2) * 2.67 * s / np.sqrt(reps) + 1e-9
        assert abs(ours[name].low - intervals["a"][0, i]) <= tol, (name, ours[name], intervals["a"][:, i], tol)
        assert abs(ours[name].high - intervals["a"][1, i]) <= tol, (name, ours[name], intervals["a"][:, i], tol)
