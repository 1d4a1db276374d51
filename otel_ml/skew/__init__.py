"""Training/serving skew: replay captured serving inputs through the training pipeline.

:func:`replay` reads a capture spool (``Capture(...)`` in ``@monitor``), runs each raw request
through the training-time feature code, compares the features with the served ones, re-scores
and reports per feature and per model version: mismatches, the score-difference distribution,
decision flips per segment and the worst request ids. ``otel-ml skew replay`` is its command
line; :func:`push` sends a report's series to a Pushgateway (scheduled mode). Not imported by
``import otel_ml``.
"""

from ._load import DuplicateKeyError, SkewInputError
from ._push import push, registry_for
from ._replay import DEFAULT_ATOL, DEFAULT_RTOL, replay
from ._report import (
    FAIL_ON_CHECKS,
    FailOn,
    FeatureSkew,
    FlipCount,
    ScoreDifference,
    SkewReport,
    VersionSkew,
    WorstRow,
    parse_fail_on,
)

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "FAIL_ON_CHECKS",
    "DuplicateKeyError",
    "FailOn",
    "FeatureSkew",
    "FlipCount",
    "ScoreDifference",
    "SkewInputError",
    "SkewReport",
    "VersionSkew",
    "WorstRow",
    "parse_fail_on",
    "push",
    "registry_for",
    "replay",
]
