"""Meta-test evaluation: the EvalResult record (stable JSON keys) and the held-out-task protocol."""

from metarl.evaluation.result import EvalResult, evaluate, load_eval_result

__all__ = ["EvalResult", "evaluate", "load_eval_result"]
