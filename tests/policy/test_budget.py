"""Error budgets: the binomial arithmetic against known values, and the promise itself shown
over many random draws of the shipped model's reference data: the error rate of the automatic
decisions at the calibrated threshold stays within the budget at least as often as the
confidence level says. A shifted data set is caught by the live bound."""

from __future__ import annotations

import random
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from tandem_cli import dataset
from tandem_cli.calibrate import cases_from
from tandem_cli.feedback import write
from tandem_cli.improvement import score
from tandem_cli.main import app
from tandem_policy.budget import (
    Calibration,
    Case,
    TooFewLabels,
    binomial_cdf,
    calibrate,
    calibrate_segments,
    fewest_cases,
    upper_bound,
)
from tandem_policy.loader import PolicyError, load_policy, parse_policy
from tandem_scoring.registry import load_model
from tandem_shared.events import ModelRef, TaskSubmitted
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
BUDGET, CONFIDENCE = 0.02, 0.9
DRAWS, DRAWN = 300, 400


def test_the_binomial_arithmetic_matches_known_values() -> None:
    assert binomial_cdf(0, 10, 0.1) == pytest.approx(0.9**10)
    assert binomial_cdf(1, 10, 0.1) == pytest.approx(0.9**10 + 10 * 0.1 * 0.9**9)
    assert binomial_cdf(10, 10, 0.3) == 1.0
    # No error in n trials bounds the rate near 3/n at 95% (the rule of three).
    assert upper_bound(0, 600, 0.95) == pytest.approx(1 - 0.05 ** (1 / 600), rel=1e-6)
    assert upper_bound(0, 600, 0.95) < 0.005 < upper_bound(0, 590, 0.95)
    assert fewest_cases(0.005, 0.95) == 598


@cache
def reference() -> tuple[Case, ...]:
    """Every row of the breast cancer data scored by the shipped tumor_screening/1."""
    model = load_model(ROOT / "models" / "tumor_screening" / "1")
    names = [f.name for f in model.manifest.ordered_features]
    rows = [
        (dict(zip(names, map(float, features), strict=True)), str(label))
        for split in (dataset.train_split(), dataset.holdout_split())
        for features, label in zip(split.features, split.labels, strict=True)
    ]
    tasks = [
        TaskSubmitted(task_id=f"r-{i}", task_type="tumor_screening", features=f)
        for i, (f, _) in enumerate(rows)
    ]
    return tuple(
        Case(r.confidence, r.prediction == label)
        for r, (_, label) in zip(score(model, tasks), rows, strict=True)
    )


def error_at(population: tuple[Case, ...], threshold: float) -> float:
    automated = [c for c in population if c.confidence >= threshold]
    return sum(not c.right for c in automated) / len(automated)


def test_the_budget_holds_at_least_as_often_as_promised_over_random_draws() -> None:
    """The data set is the population: each draw calibrates on 400 cases taken from it at
    random, and the error of what its threshold automates is then known exactly."""
    population = reference()
    rng = random.Random(20)
    kept = refused = 0
    for draw in range(DRAWS):
        sample = [rng.choice(population) for _ in range(DRAWN)]
        try:
            found = calibrate(sample, BUDGET, CONFIDENCE, seed=draw)
        except TooFewLabels:
            refused += 1  # nothing promised, nothing automated on its word
            continue
        kept += error_at(population, found.threshold) <= BUDGET
    promised = DRAWS - refused
    assert promised >= DRAWS // 2  # the budget is within reach of this model and data
    assert kept / promised >= CONFIDENCE, (kept, promised)


def worse(population: tuple[Case, ...], share: float, below: float, seed: int) -> tuple[Case, ...]:
    """The population where the model is worse where it is less sure: ``share`` of its right
    answers below confidence ``below`` are wrong."""
    rng = random.Random(seed)
    return tuple(
        Case(c.confidence, c.right and (c.confidence >= below or rng.random() >= share))
        for c in population
    )


def test_a_budget_kept_per_segment_holds_in_every_segment_together() -> None:
    """Two clinics, the model worse in one of them. A threshold per clinic keeps both within
    the budget together, at least as often as promised; the one threshold calibrated on both
    clinics' cases does not, since the better clinic's cases hide the worse one's errors."""
    clinics = {"north": reference(), "south": worse(reference(), 0.3, below=0.99, seed=7)}
    budget, draws = 0.05, 150
    rng = random.Random(21)
    each_kept = pooled_kept = 0
    for draw in range(draws):
        drawn = {k: [rng.choice(cases) for _ in range(DRAWN)] for k, cases in clinics.items()}
        found = calibrate_segments(drawn, budget, CONFIDENCE, seed=draw)
        each_kept += all(
            error_at(clinics[k], f.threshold) <= budget  # a refused clinic automates nothing
            for k, f in found.items()
            if isinstance(f, Calibration)
        )
        try:
            pooled = calibrate([*drawn["north"], *drawn["south"]], budget, CONFIDENCE, seed=draw)
        except TooFewLabels:
            pooled_kept += 1
            continue
        pooled_kept += all(error_at(c, pooled.threshold) <= budget for c in clinics.values())
    assert each_kept / draws >= CONFIDENCE, each_kept
    assert pooled_kept / draws < CONFIDENCE, pooled_kept


def test_too_few_labels_are_refused_with_what_it_takes() -> None:
    with pytest.raises(TooFewLabels, match="needs 598 confident cases without an error"):
        calibrate(list(reference())[:200], 0.005, 0.95)


def test_a_shifted_population_breaks_the_live_bound() -> None:
    """QA samples of automatic decisions at the calibrated threshold: on the data the model
    knows, the bound stays within the budget; where a tenth of the cases' labels have moved,
    the bound passes it."""
    population = reference()
    found = calibrate(list(population), BUDGET * 2, CONFIDENCE)
    automated = [c for c in population if c.confidence >= found.threshold]
    errors = sum(not c.right for c in automated)
    assert upper_bound(errors, len(automated), CONFIDENCE) <= BUDGET * 2
    rng = random.Random(3)
    shifted = [Case(c.confidence, c.right and rng.random() > 0.1) for c in automated]
    moved = sum(not c.right for c in shifted)
    assert upper_bound(moved, len(shifted), CONFIDENCE) > BUDGET * 2


def test_tandem_policy_calibrate_writes_the_next_version_or_refuses(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="the models dependency group is not installed")
    policy = ROOT / "deploy" / "local" / "policy.yaml"
    out = tmp_path / "calibrated.yaml"
    common = [
        "policy", "calibrate", str(policy), "--task-type", "tumor_screening",
        "--model", "tumor_screening", "--models-dir", str(ROOT / "models"),
    ]  # fmt: skip
    refused = CliRunner().invoke(app, [*common, "--max-error", "0.005", "--out", str(out)])
    assert refused.exit_code == 1 and "needs 598 confident cases" in refused.output
    assert not out.exists()

    done = CliRunner().invoke(
        app,
        [*common, "--max-error", "0.05", "--confidence", "0.9", "--out", str(out),
         "--tasks-per-day", "100"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    # 45 clean samples show 5% at 90%; 100 a day, 99.2% automatic: 2,977 in 30 days.
    assert "set qa_sample_rate to 0.015 or more" in done.output
    assert "What each budget costs" in done.output and "cannot promise" in done.output
    written = load_policy(out)
    rules = written.task_types["tumor_screening"]
    budget = rules.error_budget
    assert written.version == load_policy(policy).version + 1
    assert budget is not None and budget.calibrated is not None
    assert set(rules.auto.values()) == {budget.calibrated.threshold}
    assert budget.calibrated.upper_bound <= 0.05
    assert budget.calibrated.data == "171 holdout rows of tumor_screening/1, 0 QA verdicts"

    # A threshold loosened by hand after calibration breaks the promise: refused.
    text = out.read_text().replace(f"benign: {budget.calibrated.threshold}", "benign: 0.5", 1)
    with pytest.raises(PolicyError, match="below the calibrated"):
        parse_policy(text)


def test_tandem_policy_calibrate_per_segment_writes_a_threshold_per_clinic(
    tmp_path: Path,
) -> None:
    """QA verdicts of three clinics: the model is worse in south, and west has too few
    verdicts. Each promised clinic gets its own threshold; west's tasks go to people."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        (ROOT / "deploy" / "local" / "policy.yaml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    clinics = {
        "north": reference(),
        "south": worse(reference(), 0.3, below=0.99, seed=5),
        "west": reference()[:40],
    }
    rows = [
        {
            "task_id": f"{clinic}-{i}", "task_type": "tumor_screening",
            "model_name": "tumor_screening", "model_version": "1", "confidence": case.confidence,
            "agreed": case.right, "qa_sample": True, "segment.clinic": clinic,
        }
        for clinic, cases in clinics.items()
        for i, case in enumerate(cases)
    ]  # fmt: skip
    labels, out = tmp_path / "labels.csv", tmp_path / "calibrated.yaml"
    write(rows, labels)
    common = [
        "policy", "calibrate", str(policy), "--task-type", "tumor_screening",
        "--model", "tumor_screening", "--max-error", "0.05", "--confidence", "0.9",
        "--per-segment", "clinic",
    ]  # fmt: skip
    no_labels = CliRunner().invoke(app, common)
    assert no_labels.exit_code == 2 and "belong to no segment" in no_labels.output
    done = CliRunner().invoke(
        app, [*common, "--labels", str(labels), "--out", str(out), "--tasks-per-day", "1000"]
    )
    assert done.exit_code == 0, done.output
    # 45 clean samples per clinic; south is automated least, so its watch needs the most.
    assert "clinic=south needs the most: set qa_sample_rate to 0.004 or more" in done.output
    assert "clinic=west: people decide its tasks" in done.output
    assert "each of 2 of 3 values of clinic, all together with 90% confidence" in done.output
    budget = load_policy(out).task_types["tumor_screening"].error_budget
    assert budget is not None and budget.per_segment == "clinic"
    assert set(budget.segments) == {"north", "south"}
    north, south = budget.segments["north"], budget.segments["south"]
    assert north.threshold < south.threshold  # the worse clinic automates less
    assert north.automation_rate > south.automation_rate
    assert max(north.upper_bound, south.upper_bound) <= 0.05
    assert north.data == f"{len(reference())} QA verdicts of tumor_screening/1"

    # The what-if's curve per clinic takes the same verdicts, each with its clinic.
    curve_cases = cases_from(ROOT / "models", labels)(
        "tumor_screening", ModelRef(name="tumor_screening", version="1"), "clinic"
    )
    assert Counter(c.segment for c in curve_cases) == {k: len(v) for k, v in clinics.items()}
