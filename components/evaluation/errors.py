"""The one error type of the evaluation layer: says what was received, what was expected and where."""


class EvaluationError(Exception):
    """Bad or missing input to evaluation (model, data, thresholds, metrics files, params).

    The message names the file (and key) at fault, what was found and what was expected,
    and where it helps, the command that produces the missing input.
    """
