"""Prediction tokens: a signed, compact record of one prediction that any sidecar can count.

With N model pods behind a load balancer the outcome pipeline does not know which pod served a
request, so a label posted with a request id may reach a sidecar that never saw the prediction.
A token carries the prediction itself (which baseline, when, score, decision, segments, request
id hash), signed with a key shared by the app and the sidecars: any sidecar verifies it and turns
the label into counters without a join store. The label producer treats it as an opaque string.

Layout (big-endian, version 1), then base64url without padding::

    version     u8      1
    baseline    4 B     baseline_id(baseline): which model version and vocabulary
    minute      u32     prediction time in unix minutes
    score       f32     NaN: no score
    decision    u8      index into the vocabulary's decisions; 254 __other__, 255 none
    segments    u16 x K one per segment key of the baseline (sorted); 0xFFFF __other__ or absent
    request id  8 B     blake2b(request id, digest_size=8): labels stay idempotent per request
    mac         10 B    HMAC-SHA256(key, everything above), truncated

That is ``32 + 2 K`` bytes, ``ceil((32 + 2 K) * 4 / 3)`` characters: 48 for two segment keys.
The vocabularies (segment keys and values, decisions) are derived from the baseline file alone
(:meth:`TokenVocabulary.of`), so the app and every sidecar loading the same file agree on them.

Keys are at least 16 random bytes, written as hex (``OTEL_ML_TOKEN_KEY``, or one per line in a
file named by ``OTEL_ML_TOKEN_KEY_FILE``). Rotation: decode with a list of keys, the new one
first; the app signs with the first key it is given; drop the old key once tokens signed with
it are older than the label horizon. Stdlib only, so the sidecar and the app share it cheaply.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

if TYPE_CHECKING:
    from .baseline import Baseline

__all__ = [
    "DECISION_NONE",
    "DECISION_OTHER",
    "MIN_KEY_BYTES",
    "SEGMENT_OTHER",
    "TOKEN_KEY_ENV",
    "TOKEN_KEY_FILE_ENV",
    "TOKEN_VERSION",
    "TokenError",
    "TokenPrediction",
    "TokenSigner",
    "TokenVocabulary",
    "baseline_id",
    "check_key",
    "decode_token",
    "encode_token",
    "load_token_keys",
    "request_id_hash",
    "token_length",
    "vocabularies_of",
]

TOKEN_VERSION: Final = 1
MIN_KEY_BYTES: Final = 16
TOKEN_KEY_ENV: Final = "OTEL_ML_TOKEN_KEY"
TOKEN_KEY_FILE_ENV: Final = "OTEL_ML_TOKEN_KEY_FILE"
DECISION_OTHER: Final = 254  # a decision the baseline never saw
DECISION_NONE: Final = 255  # no decision (no finite score, or no rule)
SEGMENT_OTHER: Final = 0xFFFF  # a value the baseline never saw, or the row had none
_MAX_DECISIONS: Final = DECISION_OTHER  # indices 0..253
_MAX_SEGMENT_VALUES: Final = SEGMENT_OTHER  # indices 0..65534
_ALL: Final = "__all__"  # otel_ml._names.ALL (kept here so this module stays stdlib only)
_OTHER: Final = "__other__"  # otel_ml._names.OTHER
_MAC_BYTES: Final = 10
_HEAD: Final = struct.Struct(">B4sIfB")  # version, baseline id, minute, score, decision
_MIN_BYTES: Final = _HEAD.size + 8 + _MAC_BYTES  # a token of a baseline without segment keys
_MAX_TEXT: Final = 4096  # longer than any token: refused before decoding
_BLOCK: Final = 64  # SHA-256 block size, for HMAC's key pads
_F32_MAX: Final = 3.4028234663852886e38
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")

Reason = Literal["malformed", "forged_token", "unknown_baseline"]


class TokenError(ValueError):
    """A token that cannot be counted; ``reason`` is the ``ml_labels_unmatched_total`` reason."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason


class TokenPrediction(NamedTuple):
    """What a verified token says about its prediction."""

    model: str
    version: str
    score: float | None
    decision: str | None
    segments: tuple[tuple[str, str], ...]  # (segment key, value), sorted by key
    prediction_time: float  # unix seconds, at the start of the prediction's minute
    rid_hash: int  # request_id_hash() of the request id
    baseline_id: bytes


def request_id_hash(request_id: str) -> int:
    """The 64-bit hash of a request id, as a signed big-endian integer (an SQLite INTEGER).

    The join store keys predictions by the same hash, so a label posted with a token and one
    posted with the request id are the same label (first one wins)."""
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def baseline_id(baseline: Baseline) -> bytes:
    """4 bytes naming a baseline's content: the first bytes of the SHA-256 that the sidecar's
    ``baseline_fingerprint`` hashes (canonical JSON without ``created``/``library_version``),
    so refitting the same data at another time keeps the id."""
    return baseline.fingerprint()[:4]


@dataclass(frozen=True)
class TokenVocabulary:
    """The index spaces of one baseline's tokens: segment keys, their values, decisions."""

    baseline_id: bytes
    model: str
    version: str
    segment_keys: tuple[str, ...]  # sorted, without __all__
    segment_values: tuple[tuple[str, ...], ...]  # per key, sorted, without __other__
    decisions: tuple[str, ...]  # sorted

    @classmethod
    def of(cls, baseline: Baseline) -> TokenVocabulary:
        """Derived from the baseline file alone, so the app and every sidecar agree.

        Segment keys and values are those of ``score.decision_rates`` (the overall ``__all__``
        row and ``__other__`` values aside: ``__other__`` is the reserved index); decisions are
        every decision in it, plus ``"true"``/``"false"`` when the score profile has a
        threshold rule (``decision_threshold``)."""
        score = baseline.score
        rates: Mapping[str, Mapping[str, Mapping[str, float]]] = score.decision_rates if score is not None else {}
        keys = tuple(sorted(k for k in rates if k != _ALL))
        values = tuple(tuple(sorted(v for v in rates[k] if v != _OTHER)) for k in keys)
        decisions = {d for per_key in rates.values() for shares in per_key.values() for d in shares}
        if score is not None and getattr(score, "decision_threshold", None) is not None:
            decisions |= {"true", "false"}
        for key, vals in zip(keys, values):
            if len(vals) > _MAX_SEGMENT_VALUES:
                raise ValueError(f"segment {key!r} has {len(vals)} values; a token holds at most {_MAX_SEGMENT_VALUES}")
        if len(decisions) > _MAX_DECISIONS:
            raise ValueError(f"{len(decisions)} decisions; a token holds at most {_MAX_DECISIONS}")
        return cls(
            baseline_id(baseline),
            baseline.model_name,
            baseline.model_version,
            keys,
            values,
            tuple(sorted(decisions)),
        )

    @property
    def token_bytes(self) -> int:
        return _MIN_BYTES + 2 * len(self.segment_keys)


def token_length(vocabulary: TokenVocabulary) -> int:
    """Characters in a token of this vocabulary (base64url without padding)."""
    return -(-vocabulary.token_bytes * 4 // 3)


def vocabularies_of(baselines: Iterable[Baseline]) -> dict[bytes, TokenVocabulary]:
    """The ``vocabularies`` argument of :func:`decode_token`, keyed by baseline id.

    Two different baselines sharing a 4-byte id (one chance in ~4e9 per pair) are refused:
    their tokens could not be told apart."""
    out: dict[bytes, TokenVocabulary] = {}
    for baseline in baselines:
        vocab = TokenVocabulary.of(baseline)
        seen = out.get(vocab.baseline_id)
        if seen is not None and seen != vocab:
            raise ValueError(
                f"baselines of {seen.model} {seen.version} and {vocab.model} {vocab.version} share the token id "
                f"{vocab.baseline_id.hex()}: change either file (e.g. refit) to tell their tokens apart"
            )
        out[vocab.baseline_id] = vocab
    return out


def check_key(key: bytes) -> bytes:
    """The key itself, if it is bytes of at least :data:`MIN_KEY_BYTES`; else ``ValueError``."""
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"a token key is bytes, got {type(key).__name__} (hex text: bytes.fromhex(text))")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"a token key needs at least {MIN_KEY_BYTES} bytes ({2 * MIN_KEY_BYTES} hex digits), got {len(key)}; "
            'make one with: python -c "import secrets; print(secrets.token_hex(32))"'
        )
    return bytes(key)


def _parse_keys(text: str, where: str) -> tuple[bytes, ...]:
    """Hex keys separated by commas or newlines (``#`` starts a comment line); first one signs."""
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        for part in line.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                key = bytes.fromhex(part)
            except ValueError:
                raise ValueError(f"{where}: a token key is hex digits (e.g. secrets.token_hex(32))") from None
            try:
                keys.append(check_key(key))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
    if not keys:
        raise ValueError(f"{where}: no token key in it")
    return tuple(keys)


def load_token_keys(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> tuple[bytes, ...]:
    """The configured token keys, the signing key first; ``()`` when none is configured.

    From the file ``path`` if given, else the file named by ``OTEL_ML_TOKEN_KEY_FILE`` (a
    mounted secret), else ``OTEL_ML_TOKEN_KEY``. Keys are hex (at least 32 digits), separated
    by commas or newlines; more than one is a rotation: the first signs, any of them verifies.
    An unreadable file, text that is not hex, or a key shorter than 16 bytes is a ``ValueError``
    naming its source."""
    env = os.environ if environ is None else environ
    if path is None and env.get(TOKEN_KEY_FILE_ENV):
        path = env[TOKEN_KEY_FILE_ENV]
    if path is not None:
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the token key file: {exc}") from None
        return _parse_keys(text, str(path))
    text = env.get(TOKEN_KEY_ENV, "")
    return _parse_keys(text, TOKEN_KEY_ENV) if text.strip() else ()


class TokenSigner:
    """Signs tokens of one vocabulary with one key: the app's hot path (about 2-3 us a token).

    HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once, so a token costs
    two SHA-256 ``copy`` + ``update`` calls; equal to ``hmac.digest`` (tested)."""

    __slots__ = ("_inner", "_outer", "_pack", "_segment_index", "_decision_index", "vocabulary")

    def __init__(self, vocabulary: TokenVocabulary, key: bytes) -> None:
        key = check_key(key)
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self.vocabulary = vocabulary
        k = len(vocabulary.segment_keys)
        self._pack = struct.Struct(f">B4sIfB{k}H8s").pack
        self._segment_index: tuple[tuple[str, dict[str | None, int]], ...] = tuple(
            (key, {v: i for i, v in enumerate(values)})
            for key, values in zip(vocabulary.segment_keys, vocabulary.segment_values)
        )
        self._decision_index = {d: i for i, d in enumerate(vocabulary.decisions)}

    def mac(self, payload: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_MAC_BYTES]

    def sign(
        self,
        minute: int,
        score: float | None,
        decision: str | None,
        segments: Mapping[str, Any],
        request_id: str,
        label: Callable[[Any], str | None] | None = None,
    ) -> str:
        """The token of one prediction; ``segments`` maps segment keys to values (others ignored).

        A value that is not one of the vocabulary's strings is spelled by ``label`` (the app's
        label spelling) before it is looked up; without ``label`` it is ``__other__``."""
        if score is None or not math.isfinite(score) or abs(score) > _F32_MAX:
            score = math.nan  # float32 cannot hold it: no score, rather than an infinite one
        dec = DECISION_NONE if decision is None else self._decision_index.get(decision, DECISION_OTHER)
        seg = []
        for key, index in self._segment_index:
            value = segments.get(key)
            i = index.get(value) if type(value) is str else None
            if i is None:
                i = SEGMENT_OTHER if label is None or value is None else index.get(label(value), SEGMENT_OTHER)
            seg.append(i)
        rid = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        payload = self._pack(TOKEN_VERSION, self.vocabulary.baseline_id, minute, score, dec, *seg, rid)
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        text = binascii.b2a_base64(payload + outer.digest()[:_MAC_BYTES], newline=False)
        return text.rstrip(b"=").translate(_URLSAFE).decode("ascii")


def encode_token(
    vocabulary: TokenVocabulary,
    key: bytes,
    *,
    minute: int,
    score: float | None,
    decision: str | None,
    segments: Mapping[str, str | None],
    request_id: str,
) -> str:
    """One token (see the module docstring for its layout); a :class:`TokenSigner` signs many.

    ``minute`` is unix minutes (``int(time.time() // 60)``); a decision or segment value the
    vocabulary does not hold is encoded as ``__other__``, a missing one as none/``__other__``."""
    if not 0 <= minute < 2**32:
        raise ValueError(f"minute must be unix minutes in [0, 2**32), got {minute}")
    return TokenSigner(vocabulary, key).sign(
        minute=minute, score=score, decision=decision, segments=segments, request_id=request_id
    )


def _raw(text: str) -> bytes:
    if not isinstance(text, str) or not 0 < len(text) <= _MAX_TEXT:
        raise TokenError("malformed", "not a token string")
    try:
        data = text.encode("ascii")
        raw = base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise TokenError("malformed", "not base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != data:  # one spelling per token: '+', '/', '=', stray bits
        raise TokenError("malformed", "not canonical base64url")
    return raw


def decode_token(
    text: str, key: bytes | Sequence[bytes], vocabularies: Mapping[bytes, TokenVocabulary]
) -> TokenPrediction:
    """Verify and unpack a token; raises :class:`TokenError` with reason ``malformed``,
    ``forged_token`` or ``unknown_baseline``.

    ``key`` is one key or several (rotation: any verifies). Only the length is checked before
    the MAC (a truncated or extended token of a loaded baseline is ``malformed``); everything
    else is read after it, so a corrupted token is ``forged_token``, never a prediction of
    another model, and a genuine token of a baseline this sidecar does not load is
    ``unknown_baseline``."""
    raw = _raw(text)
    if len(raw) < _MIN_BYTES or raw[0] != TOKEN_VERSION:
        raise TokenError("malformed", f"{len(raw)} bytes, version {raw[0] if raw else None}")
    keys = (key,) if isinstance(key, (bytes, bytearray)) else tuple(key)
    if not keys:
        raise ValueError("decode_token needs at least one key")
    _, bid, minute, score, dec = _HEAD.unpack_from(raw)
    vocab = vocabularies.get(bid)
    if vocab is not None and len(raw) != vocab.token_bytes:
        raise TokenError("malformed", f"{len(raw)} bytes, not {vocab.token_bytes}")
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not any(hmac.compare_digest(hmac.digest(check_key(k), payload, "sha256")[:_MAC_BYTES], mac) for k in keys):
        raise TokenError("forged_token", "the signature does not match any key")
    if vocab is None:
        raise TokenError("unknown_baseline", f"baseline id {bid.hex()} is not loaded")
    k = len(vocab.segment_keys)
    seg = struct.unpack_from(f">{k}H8s", payload, _HEAD.size)
    return TokenPrediction(
        vocab.model,
        vocab.version,
        None if not math.isfinite(score) else score,
        _decision(vocab, dec),
        tuple(
            (name, _segment(name, values, i)) for name, values, i in zip(vocab.segment_keys, vocab.segment_values, seg)
        ),
        minute * 60.0,
        int.from_bytes(seg[k], "big", signed=True),
        bid,
    )


def _decision(vocab: TokenVocabulary, index: int) -> str | None:
    if index == DECISION_NONE:
        return None
    if index == DECISION_OTHER:
        return _OTHER
    if index >= len(vocab.decisions):
        raise TokenError("malformed", f"decision index {index} of {len(vocab.decisions)}")
    return vocab.decisions[index]


def _segment(name: str, values: tuple[str, ...], index: int) -> str:
    if index == SEGMENT_OTHER:
        return _OTHER
    if index >= len(values):
        raise TokenError("malformed", f"segment {name!r} index {index} of {len(values)}")
    return values[index]
