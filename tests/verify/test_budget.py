from __future__ import annotations

import numpy as np
import pytest

from hasten.core import HastenError
from hasten.core.quality import Quality
from hasten.verify import Budget, check_budget, paired_drop, perfect
from hasten.verify.evaluate import bootstrap_ci


def acc(value: float, half: float = 0.0) -> Quality:
    return Quality("accuracy", value, value - half, value + half, 1000, True)


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("1%", "relative", 0.01), (" 2.5 % ", "relative", 0.025), ("0.5pt", "absolute", 0.005),
    ("1 pts", "absolute", 0.01), ("0.005", "absolute", 0.005), ("1e-3", "absolute", 0.001), ("0%", "relative", 0.0),
])
def test_budget_parse(text: str, kind: str, value: float) -> None:
    b = Budget.parse(text)
    assert b.kind == kind and b.value == pytest.approx(value)
    assert Budget.parse(b.text()) == b


@pytest.mark.parametrize(("text", "match"), [
    ("abc", "cannot read"), ("-1%", "negative"), ("200%", "more than everything"), ("", "cannot read"),
    ("1%%", "cannot read"), ("nan", "cannot read"),
])
def test_budget_parse_refuses_garbage(text: str, match: str) -> None:
    with pytest.raises(HastenError, match=match):
        Budget.parse(text)


def test_budget_validates_on_creation() -> None:
    with pytest.raises(HastenError, match="unknown budget kind"):
        Budget("percent", 0.01)
    with pytest.raises(HastenError, match=">= 0"):
        Budget("absolute", -0.1)


def test_relative_accuracy_budget_passes_and_fails() -> None:
    base = acc(0.90)
    ok = check_budget(base, acc(0.895), Budget.parse("1%"))  # allowed 0.009
    assert ok.passed and ok.confident and ok.allowed == pytest.approx(0.009) and ok.drop == pytest.approx(0.005)
    assert ok.message.startswith("accuracy drop 0.5 pt") and "within the 0.9 pt budget" in ok.message
    bad = check_budget(base, acc(0.88), Budget.parse("1%"))
    assert not bad.passed and not bad.confident and "exceeds" in bad.message


def test_absolute_budget_edge_and_confidence() -> None:
    assert check_budget(acc(1.0), acc(0.99), Budget.parse("1pt")).passed  # float round-off at the edge
    v = check_budget(acc(0.90, 0.01), acc(0.897, 0.01), Budget.parse("0.5pt"))
    # drop 0.3 pt, CI 0.3 +- sqrt(2) pt reaches past 0.5 pt: passes but not confidently
    assert v.passed and not v.confident and "not confidently" in v.message
    assert v.drop_ci[0] < 0 < v.drop < 0.005 < v.drop_ci[1]
    tight = check_budget(acc(0.90, 0.01), acc(0.897, 0.01), Budget.parse("0.5pt"), paired_drop_ci=(0.001, 0.004))
    assert tight.passed and tight.confident and tight.drop_ci == (0.001, 0.004)


def test_error_metric_budget_lower_is_better() -> None:
    base = perfect("max_abs")
    small = Quality("max_abs", 0.002, 0.001, 0.003, 100, False)
    v = check_budget(base, small, Budget.parse("0.005"))
    assert v.passed and v.confident and v.drop == pytest.approx(0.002)
    assert v.drop_ci == pytest.approx((0.001, 0.003)) and v.message.startswith("max_abs increase 0.002")
    assert not check_budget(base, Quality("max_abs", 0.01, 0.008, 0.012, 100, False), Budget.parse("0.005")).passed
    with pytest.raises(HastenError, match="relative budget needs a non-zero baseline"):
        check_budget(base, small, Budget.parse("1%"))


def test_fidelity_budget_against_the_perfect_baseline() -> None:
    v = check_budget(perfect("cosine"), Quality("cosine", 0.998, 0.997, 0.999, 50, True), Budget.parse("0.5%"))
    assert v.passed and v.confident and v.allowed == pytest.approx(0.005)


def test_mismatched_metrics_are_refused() -> None:
    with pytest.raises(HastenError, match="same metric"):
        check_budget(acc(0.9), perfect("cosine"), Budget.parse("1%"))


def test_paired_drop_is_tighter_than_unpaired_on_correlated_scores() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(400)  # per-example difficulty shared by both models
    variant = base - 0.01 + 0.005 * rng.standard_normal(400)
    drop, (lo, hi) = paired_drop(base, variant)
    assert lo < drop < hi and drop == pytest.approx(0.01, abs=0.002)
    b_ci, v_ci = bootstrap_ci(base), bootstrap_ci(variant)
    unpaired = check_budget(Quality("s", base.mean(), *b_ci, 400, True), Quality("s", variant.mean(), *v_ci, 400, True),
                            Budget.parse("0.02"))
    assert (hi - lo) < (unpaired.drop_ci[1] - unpaired.drop_ci[0]) / 10
    err_drop, _ = paired_drop(np.zeros(3), np.array([0.1, 0.2, 0.3]), higher_is_better=False)
    assert err_drop == pytest.approx(0.2)
    with pytest.raises(HastenError, match="same examples"):
        paired_drop(np.zeros(3), np.zeros(4))
