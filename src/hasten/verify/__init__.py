"""Quality metrics and the accuracy-budget gate."""

from hasten.core.quality import Quality
from hasten.verify.budget import Budget, BudgetVerdict, check_budget, paired_drop
from hasten.verify.evaluate import bootstrap_ci, collect_outputs, evaluate, evaluate_scores, perfect
from hasten.verify.metrics import Metric, get_metric

__all__ = [
    "Budget",
    "BudgetVerdict",
    "Metric",
    "Quality",
    "bootstrap_ci",
    "check_budget",
    "collect_outputs",
    "evaluate",
    "evaluate_scores",
    "get_metric",
    "paired_drop",
    "perfect",
]
