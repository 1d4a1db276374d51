"""Prediction tokens on the app side: which key signs, and minting one per single-row call.

A monitor mints tokens only when it has a key (``token_key=``, or ``OTEL_ML_TOKEN_KEY`` /
``OTEL_ML_TOKEN_KEY_FILE`` with a baseline that has a score profile); without one, a call pays
nothing for them. A token says what the call predicted (score, decision, the baseline's segment
values of the row, the request id), so the label producer can post it to any sidecar.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._frame import is_single_row
from .._token import TokenSigner, TokenVocabulary, check_key, load_token_keys
from ..baseline import Baseline
from ._context import CallState
from ._counting import scalar_label
from ._errors import InstrumentationErrors

__all__ = ["ATTR_PREDICTION_TOKEN", "TokenCallState", "TokenMinter", "minter_for"]

from .._names import ATTR_PREDICTION_TOKEN

_log = logging.getLogger("otel_ml")


class TokenMinter:
    """Signs the token of one row's prediction with a monitor's vocabulary and key."""

    __slots__ = ("_decide", "_signer")

    def __init__(self, signer: TokenSigner, decide: Callable[[float | None], str | None]) -> None:
        self._signer = signer
        self._decide = decide  # the monitor's rule: score -> decision label (None: no decision)

    def mint(self, row: Any, score: float | None, decision: str | None, request_id: str) -> str | None:
        """The token of a prediction already decided (the counted score and decision)."""
        return self._signer.sign(int(time.time() // 60), score, decision, row, request_id, scalar_label)

    def mint_for_score(self, row: Any, score: float, request_id: str) -> str | None:
        """The token for a score the function is about to return (the rule decides it here)."""
        if not is_single_row(row):
            return None
        score = float(score)
        decision = self._decide(score) if math.isfinite(score) else None
        return self.mint(row, score, decision, request_id)


def minter_for(
    token_key: bytes | None,
    baseline: Baseline | None,
    decide: Callable[[float | None], str | None],
    environ: Mapping[str, str] | None = None,
) -> TokenMinter | None:
    """The monitor's minter: from ``token_key=`` (an error without a baseline or when too short),
    else from the environment when the baseline has a score profile (a bad key there is logged
    and tokens stay off: a monitoring setting never stops the app from starting)."""
    if token_key is not None:
        key = check_key(token_key)
        if baseline is None:
            raise ValueError("token_key= needs baseline=: a token names its baseline, whose vocabulary it indexes")
    else:
        if baseline is None or baseline.score is None:
            return None
        try:
            keys = load_token_keys(environ=environ)
        except ValueError as exc:
            _log.error(
                "otel-ml: %s; %s %s mints no prediction tokens", exc, baseline.model_name, baseline.model_version
            )
            return None
        if not keys:
            return None
        key = keys[0]
    return TokenMinter(TokenSigner(TokenVocabulary.of(baseline), key), decide)


class TokenCallState(CallState):
    """The state of a call whose monitor mints tokens: the token is made once, for the score
    the function hands to :func:`~otel_ml.current_prediction_token` or else for the counted one."""

    __slots__ = ("_args", "_errors", "_kwargs", "_minter", "_read", "_score")

    def __init__(
        self,
        minter: TokenMinter,
        errors: InstrumentationErrors,
        read: Callable[[tuple[Any, ...], dict[str, Any]], Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._request_id = None
        self.fallback = None
        self.token = None
        self.usage = None
        self.review_pi = None
        self.nested_cpu = 0
        self._minter = minter
        self._errors = errors
        self._read = read  # the call's features are read(args, kwargs); no reference to the Call (no cycle)
        self._args = args
        self._kwargs = kwargs
        self._score: float | None = None  # the score self.token was made for

    def prediction_token(self, score: float | None) -> str | None:
        if score is None:
            return self.token
        try:
            value = float(score)
            if self.token is None or not _same(self._score, value):
                row = self._read(self._args, self._kwargs)
                self.token = self._minter.mint_for_score(row, value, self.request_id)
                self._score = value
        except Exception as exc:  # never into the app: counted, and no token
            self._errors.report("token", exc)
            return None
        return self.token

    def issue(self, row: Any, score: Any, decision: Any) -> None:
        """At the end of a counted single-row call: the token of what was counted, unless the
        function already took one for the same score."""
        # a float score comes only from the single-row path; a batch of one row is no token
        if not isinstance(score, float) and (score is not None or not is_single_row(row)):
            return
        if self.token is not None and _same(self._score, score):
            return
        self.token = self._minter.mint(row, score, decision, self.request_id)
        self._score = score


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))
