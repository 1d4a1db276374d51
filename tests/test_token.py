"""Prediction tokens: what a token carries, what it refuses, and what a monitor hands back.

Expected values come from outside ``_token``: float32 rounding from numpy, request id hashes
and MACs from ``hashlib``/``hmac`` directly, and one token is packed by hand from the documented
layout, so the layout is checked, not just the round trip.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import struct
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import test_never_hurt as never_hurt
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import otel_ml
from otel_ml import Baseline, ModelMonitor, fit_baseline, monitor
from otel_ml import _names as names
from otel_ml import _token as tk
from otel_ml._token import TokenError, TokenVocabulary, decode_token, encode_token

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
MINUTE = 29_602_349  # 2026-04-14T..: a realistic unix minute


def hand_rid(request_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big", signed=True)


def f32(x: float) -> float:
    return float(np.float32(x))


def reason(text: str, key: Any = KEY, vocabularies: Any = None) -> str:
    with pytest.raises(TokenError) as info:
        decode_token(text, key, vocabularies)
    return info.value.reason


@pytest.fixture(scope="module")
def vocab(baseline: Baseline) -> TokenVocabulary:
    return TokenVocabulary.of(baseline)


@pytest.fixture(scope="module")
def vocabs(vocab: TokenVocabulary) -> dict[bytes, TokenVocabulary]:
    return {vocab.baseline_id: vocab}


@pytest.fixture(scope="module")
def token(vocab: TokenVocabulary) -> str:
    return encode_token(
        vocab,
        KEY,
        minute=MINUTE,
        score=0.8125,
        decision="true",
        segments={"country": "DE", "device": "web"},
        request_id="req-1",
    )


class TestVocabulary:
    def test_from_the_baselines_decision_rates(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        v = TokenVocabulary.of(baseline)
        assert (v.model, v.version) == ("fraud", "v3")
        assert v.segment_keys == ("country", "device")  # sorted, __all__ left out
        assert v.segment_values == (
            tuple(sorted(training_frame["country"].unique())),
            tuple(sorted(training_frame["device"].unique())),
        )
        assert v.decisions == ("false", "true")

    def test_baseline_id_is_the_sidecars_fingerprint_prefix(self, baseline: Baseline) -> None:
        from otel_ml.sidecar._persist import baseline_fingerprint

        fingerprint = baseline_fingerprint(SimpleNamespace(baseline=baseline))  # type: ignore[arg-type]
        assert tk.baseline_id(baseline).hex() == fingerprint[:8]

    def test_the_id_ignores_when_and_by_which_version_it_was_fitted(self, baseline: Baseline) -> None:
        data = baseline.to_dict()
        data["created"], data["library_version"] = "1999-01-01T00:00:00Z", "0.0.1"
        assert tk.baseline_id(Baseline.from_dict(data)) == tk.baseline_id(baseline)
        data["model"]["version"] = "v4"
        assert tk.baseline_id(Baseline.from_dict(data)) != tk.baseline_id(baseline)

    def test_other_values_are_the_reserved_index_and_a_threshold_adds_true_false(self, baseline: Baseline) -> None:
        rates = {
            "__all__": {"__all__": {"review": 0.5, "pass": 0.5}},
            "region": {"eu": {"pass": 1.0}, "__other__": {"review": 1.0}, "us": {"pass": 1.0}},
        }
        fake = SimpleNamespace(
            model_name="m",
            model_version="1",
            to_dict=baseline.to_dict,
            fingerprint=getattr(baseline, "fingerprint", None),  # the id is hashed from one or the other
            score=SimpleNamespace(decision_rates=rates, decision_threshold=0.7),
        )
        v = TokenVocabulary.of(fake)  # type: ignore[arg-type]
        assert v.segment_keys == ("region",) and v.segment_values == (("eu", "us"),)
        assert v.decisions == ("false", "pass", "review", "true")

    def test_a_baseline_without_a_score_profile_has_empty_vocabularies(self, training_frame: pd.DataFrame) -> None:
        b = fit_baseline(training_frame[["amount"]], model="m", version="1")
        v = TokenVocabulary.of(b)
        assert v.segment_keys == () and v.decisions == () and tk.token_length(v) == math.ceil(32 * 4 / 3)

    def test_two_processes_derive_equal_vocabularies_from_one_file(self, baseline: Baseline, tmp_path: Path) -> None:
        path = baseline.save(tmp_path / "b.json")
        script = (
            "import json, sys; from dataclasses import asdict; from otel_ml import Baseline; "
            "from otel_ml._token import TokenVocabulary; "
            "v = asdict(TokenVocabulary.of(Baseline.load(sys.argv[1]))); v['baseline_id'] = v['baseline_id'].hex(); "
            "print(json.dumps(v))"
        )
        seen = []
        for seed in ("1", "2"):  # set and dict orders differ between hash seeds
            env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
            env["PYTHONPATH"] = str(Path(otel_ml.__file__).parent.parent)
            out = subprocess.run(
                [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True, env=env
            )
            seen.append(json.loads(out.stdout))
        mine = asdict(TokenVocabulary.of(Baseline.load(path)))
        mine["baseline_id"] = mine["baseline_id"].hex()
        assert seen[0] == seen[1] == json.loads(json.dumps(mine))

    def test_reserved_strings_match_the_names_module(self) -> None:
        assert (tk._ALL, tk._OTHER) == (names.ALL, names.OTHER)

    def test_two_baselines_with_one_id_are_refused(self, baseline: Baseline) -> None:
        clash = SimpleNamespace(
            model_name="x",
            model_version="y",
            to_dict=baseline.to_dict,
            fingerprint=getattr(baseline, "fingerprint", None),
            score=baseline.score,
        )  # same content hash, other names: a stand-in for a 4-byte collision
        with pytest.raises(ValueError, match="share the token id"):
            tk.vocabularies_of([baseline, clash])  # type: ignore[list-item]
        assert list(tk.vocabularies_of([baseline, baseline])) == [tk.baseline_id(baseline)]


class TestLayout:
    def test_a_hand_packed_token_decodes(self, vocab: TokenVocabulary, vocabs: Any) -> None:
        """The module docstring's layout, packed here with struct and hmac."""
        payload = (
            bytes([1])
            + vocab.baseline_id
            + struct.pack(">I", MINUTE)
            + struct.pack(">f", 0.25)
            + bytes([vocab.decisions.index("false")])
            + struct.pack(">HH", vocab.segment_values[0].index("FR"), 0xFFFF)
            + hashlib.blake2b(b"abc", digest_size=8).digest()
        )
        raw = payload + hmac.new(KEY, payload, "sha256").digest()[:10]
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        got = decode_token(text, KEY, vocabs)
        assert got.score == 0.25 and got.decision == "false"
        assert got.segments == (("country", "FR"), ("device", "__other__"))
        assert got.prediction_time == MINUTE * 60 and got.rid_hash == hand_rid("abc")
        assert (got.model, got.version, got.baseline_id) == ("fraud", "v3", vocab.baseline_id)
        mine = encode_token(
            vocab, KEY, minute=MINUTE, score=0.25, decision="false", segments={"country": "FR"}, request_id="abc"
        )
        assert mine == text

    def test_length_for_two_segment_keys(self, vocab: TokenVocabulary, token: str) -> None:
        raw_bytes = 1 + 4 + 4 + 4 + 1 + 2 * 2 + 8 + 10
        assert raw_bytes == 36 and len(token) == math.ceil(raw_bytes * 4 / 3) == tk.token_length(vocab) == 48
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    def test_the_signer_mac_is_hmac_sha256(self, vocab: TokenVocabulary) -> None:
        for size in (16, 32, 64, 65, 200):  # longer than a SHA-256 block: RFC 2104 hashes the key first
            key = bytes((7 * i + size) % 256 for i in range(size))
            for payload in (b"", b"x" * 26, bytes(range(256))):
                expected = hmac.digest(key, payload, "sha256")[:10]
                assert tk.TokenSigner(vocab, key).mac(payload) == expected


class TestRoundTrip:
    @settings(max_examples=300, deadline=None)
    @given(
        minute=st.integers(0, 2**32 - 1),
        score=st.none() | st.floats(allow_nan=True, allow_infinity=True),
        decision=st.none() | st.sampled_from(["true", "false", "maybe"]),
        country=st.none() | st.sampled_from(["US", "DE", "FR", "BR", "JP", "Atlantis", "__other__"]),
        device=st.none() | st.sampled_from(["ios", "android", "web", "fridge"]),
        request_id=st.text(max_size=80),
    )
    def test_what_goes_in_comes_out(
        self,
        vocab: TokenVocabulary,
        vocabs: Any,
        minute: int,
        score: float | None,
        decision: str | None,
        country: str | None,
        device: str | None,
        request_id: str,
    ) -> None:
        segments = {"country": country, "device": device, "ignored": "x"}
        text = encode_token(
            vocab, KEY, minute=minute, score=score, decision=decision, segments=segments, request_id=request_id
        )
        got = decode_token(text, [OTHER_KEY, KEY], vocabs)
        fits = score is not None and math.isfinite(score) and abs(score) <= float(np.finfo(np.float32).max)
        assert got.score == (f32(score) if fits else None)  # type: ignore[arg-type]
        assert got.decision == {"true": "true", "false": "false", "maybe": "__other__", None: None}[decision]
        known = {"country": {"US", "DE", "FR", "BR", "JP"}, "device": {"ios", "android", "web"}}
        expect = tuple((k, v if v in known[k] else "__other__") for k, v in (("country", country), ("device", device)))
        assert got.segments == expect
        assert got.prediction_time == minute * 60.0
        rid = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        assert got.rid_hash == int.from_bytes(rid, "big", signed=True) == tk.request_id_hash(request_id)

    def test_a_minute_out_of_range_is_refused(self, vocab: TokenVocabulary) -> None:
        for minute in (-1, 2**32):
            with pytest.raises(ValueError, match="minute"):
                encode_token(vocab, KEY, minute=minute, score=0.5, decision=None, segments={}, request_id="r")


class TestRefused:
    def test_every_single_bit_flip_of_the_bytes(self, token: str, vocabs: Any) -> None:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        reasons = set()
        for bit in range(len(raw) * 8):
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            text = base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip("=")
            reasons.add(reason(text, vocabularies=vocabs))
        assert reasons == {"malformed", "forged_token"}  # malformed: the version byte

    def test_every_single_bit_flip_of_the_text(self, token: str, vocabs: Any) -> None:
        for i, ch in enumerate(token):
            for bit in range(8):
                text = token[:i] + chr(ord(ch) ^ (1 << bit)) + token[i + 1 :]
                assert reason(text, vocabularies=vocabs) in ("malformed", "forged_token"), (i, bit)

    def test_stray_bits_and_other_spellings_are_malformed(self, vocab: TokenVocabulary, vocabs: Any) -> None:
        one_key = TokenVocabulary(vocab.baseline_id, "m", "v", ("k",), (("a",),), ())
        good = encode_token(one_key, KEY, minute=1, score=0.5, decision=None, segments={"k": "a"}, request_id="r")
        assert len(good) == 46  # 34 bytes: the last character has 4 unused bits
        stray = (
            good[:-1]
            + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(good[-1]) ^ 1
            ]
        )
        assert decode_token(good, KEY, {vocab.baseline_id: one_key}).segments == (("k", "a"),)
        assert reason(stray, vocabularies={vocab.baseline_id: one_key}) == "malformed"
        token = encode_token(vocab, KEY, minute=1, score=0.5, decision=None, segments={}, request_id="r")
        raw = base64.urlsafe_b64decode(token)
        for spelling in (base64.b64encode(raw).decode(), token + "=", token + "==", " " + token, token + "\n"):
            if spelling != token:
                assert reason(spelling, vocabularies=vocabs) == "malformed", spelling

    def test_truncated_and_extended(self, token: str, vocabs: Any) -> None:
        for cut in range(len(token)):
            assert reason(token[:cut], vocabularies=vocabs) == "malformed", cut
        for extra in ("A", "AA", "AAA", "AAAA", token):
            assert reason(token + extra, vocabularies=vocabs) == "malformed", extra

    @settings(max_examples=300, deadline=None)
    @given(garbage=st.text(max_size=200) | st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode()))
    def test_garbage(self, garbage: str, vocabs: Any) -> None:
        with pytest.raises(TokenError) as info:
            decode_token(garbage, KEY, vocabs)
        assert info.value.reason in ("malformed", "forged_token")

    def test_not_base64_or_not_text_is_malformed(self, vocabs: Any) -> None:
        for garbage in ("", "!!!!", "é" * 48, "A" * 5000, None, 42, b"AQMV"):
            assert reason(garbage, vocabularies=vocabs) == "malformed"  # type: ignore[arg-type]

    def test_a_wrong_key_is_a_forgery(self, token: str, vocabs: Any) -> None:
        assert reason(token, OTHER_KEY, vocabs) == "forged_token"

    def test_a_genuine_token_of_an_unloaded_baseline(self, token: str) -> None:
        assert reason(token, KEY, {}) == "unknown_baseline"

    def test_an_index_outside_the_vocabulary_is_malformed(self, vocab: TokenVocabulary, vocabs: Any) -> None:
        """Only a key holder can make one (the MAC is valid): e.g. an app with another vocabulary."""
        for decision, country in ((len(vocab.decisions), 0), (0, len(vocab.segment_values[0]))):
            payload = struct.pack(">B4sIfB2H8s", 1, vocab.baseline_id, 1, 0.5, decision, country, 0, b"12345678")
            raw = payload + hmac.digest(KEY, payload, "sha256")[:10]
            assert reason(base64.urlsafe_b64encode(raw).decode().rstrip("="), vocabularies=vocabs) == "malformed"

    def test_key_rotation(self, vocab: TokenVocabulary, vocabs: Any) -> None:
        old = encode_token(vocab, OTHER_KEY, minute=1, score=0.1, decision=None, segments={}, request_id="a")
        new = encode_token(vocab, KEY, minute=1, score=0.1, decision=None, segments={}, request_id="a")
        assert old != new
        for text in (old, new):
            assert decode_token(text, [KEY, OTHER_KEY], vocabs).rid_hash == hand_rid("a")
        assert reason(old, [KEY], vocabs) == "forged_token"  # the old key dropped
        with pytest.raises(ValueError):
            decode_token(new, [], vocabs)


class TestKeys:
    def test_short_or_non_bytes_keys_are_refused(self, vocab: TokenVocabulary) -> None:
        with pytest.raises(ValueError, match="at least 16 bytes"):
            tk.TokenSigner(vocab, b"x" * 15)
        with pytest.raises(TypeError, match="bytes"):
            tk.TokenSigner(vocab, "00" * 32)  # type: ignore[arg-type]
        assert tk.check_key(b"x" * 16) == b"x" * 16

    def test_from_the_environment(self) -> None:
        assert tk.load_token_keys(environ={}) == ()
        assert tk.load_token_keys(environ={"OTEL_ML_TOKEN_KEY": KEY.hex()}) == (KEY,)
        both = {"OTEL_ML_TOKEN_KEY": f" {KEY.hex()} , {OTHER_KEY.hex().upper()} "}
        assert tk.load_token_keys(environ=both) == (KEY, OTHER_KEY)
        for bad, match in (("zz" * 16, "hex"), ("ab" * 15, "at least 16 bytes"), (",", "no token key")):
            with pytest.raises(ValueError, match=match) as info:
                tk.load_token_keys(environ={"OTEL_ML_TOKEN_KEY": bad})
            assert "OTEL_ML_TOKEN_KEY" in str(info.value)

    def test_from_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "key"
        path.write_text(f"# rotated 2026-04\n{OTHER_KEY.hex()}\n\n{KEY.hex()}\n")
        assert tk.load_token_keys(path) == (OTHER_KEY, KEY)
        env = {"OTEL_ML_TOKEN_KEY_FILE": str(path), "OTEL_ML_TOKEN_KEY": KEY.hex()}
        assert tk.load_token_keys(environ=env) == (OTHER_KEY, KEY)  # the file wins
        with pytest.raises(ValueError, match="cannot read"):
            tk.load_token_keys(tmp_path / "missing")
        path.write_text("# nothing yet\n")
        with pytest.raises(ValueError, match="no token key"):
            tk.load_token_keys(path)


# -- a monitor that mints tokens ---------------------------------------------------------------
ROW = {"amount": 3.0, "balance_z": 0.1, "n_items": 1, "country": "DE", "device": "web"}


def instrumentation_errors(registry: CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["error_type"]: s.value
        for fam in registry.collect()
        for s in fam.samples
        if s.name == "ml_instrumentation_errors_total"
    }


class TestMonitor:
    def test_a_decorated_call_hands_back_a_token_of_what_it_served(
        self, baseline: Baseline, vocabs: Any, registry: CollectorRegistry, spans: Any
    ) -> None:
        provider, exporter = spans
        inside: list[Any] = []

        @monitor(baseline=baseline, decision=0.7, token_key=KEY, tracer_provider=provider, registry=registry)
        def predict(row: dict[str, Any]) -> float:
            inside.append((otel_ml.current_request_id(), otel_ml.current_prediction_token(0.8)))
            return 0.8

        before = int(time.time() // 60)
        with otel_ml.capture_prediction() as captured:
            assert predict(ROW) == 0.8
        after = int(time.time() // 60)
        (request_id, token_inside), (span,) = inside[0], exporter.get_finished_spans()
        assert captured.token == token_inside == span.attributes["ml.prediction.token"]
        assert captured.request_id == request_id == span.attributes[names.ATTR_REQUEST_ID]
        got = decode_token(captured.token, KEY, vocabs)
        assert (got.model, got.version, got.score, got.decision) == ("fraud", "v3", f32(0.8), "true")
        assert got.segments == (("country", "DE"), ("device", "web"))  # the baseline's keys, not segments=
        assert got.rid_hash == hand_rid(request_id)
        assert before * 60 <= got.prediction_time <= after * 60
        assert instrumentation_errors(registry) == {}

    def test_without_asking_inside_the_token_is_of_the_counted_score(
        self, baseline: Baseline, vocabs: Any, registry: CollectorRegistry
    ) -> None:
        predict = monitor(
            baseline=baseline,
            decision=0.7,
            score=lambda result: result["p"],
            token_key=KEY,
            request_id=lambda row: row["txn"],
            registry=registry,
        )(lambda row: {"p": 0.3})
        with otel_ml.capture_prediction() as captured:
            predict({**ROW, "country": "Atlantis", "txn": "t-1"})
        got = decode_token(captured.token, KEY, vocabs)  # type: ignore[arg-type]
        assert (got.score, got.decision, got.rid_hash) == (f32(0.3), "false", hand_rid("t-1"))
        assert dict(got.segments)["country"] == "__other__"

    def test_observe_and_async(self, baseline: Baseline, vocabs: Any, registry: CollectorRegistry) -> None:
        mon = ModelMonitor(baseline=baseline, decision=0.7, token_key=KEY, registry=registry)
        with mon.observe(ROW) as obs:
            obs.result = 0.9
        assert decode_token(obs.token, KEY, vocabs).decision == "true"  # type: ignore[arg-type]
        assert decode_token(obs.token, KEY, vocabs).rid_hash == hand_rid(obs.request_id)  # type: ignore[arg-type]

        @mon
        async def predict(row: dict[str, Any]) -> float:
            await asyncio.sleep(0)
            return 0.1

        async def handler() -> str | None:
            with otel_ml.capture_prediction() as captured:
                await predict(ROW)
            return captured.token

        assert decode_token(asyncio.run(handler()), KEY, vocabs).score == f32(0.1)  # type: ignore[arg-type]

    def test_no_token_for_a_batch_a_failed_call_or_a_monitor_without_a_key(
        self, baseline: Baseline, training_frame: pd.DataFrame, registry: CollectorRegistry
    ) -> None:
        batch = monitor(baseline=baseline, token_key=KEY, registry=registry)(lambda f: np.full(len(f), 0.5))
        with otel_ml.capture_prediction() as captured:
            batch(training_frame.head(3).drop(columns=["score"]))
        assert captured.token is None and captured.request_id is not None

        @monitor(model="fails", version="1", registry=registry)
        def fails(row: Any) -> float:
            raise KeyError("x")

        with otel_ml.capture_prediction() as captured, pytest.raises(KeyError):
            fails(ROW)
        assert captured.token is None and captured.request_id is None

        plain = monitor(model="plain", version="1", registry=registry)(lambda row: 0.5)
        with otel_ml.capture_prediction() as captured:
            plain(ROW)
        assert captured.token is None and captured.request_id is not None
        assert otel_ml.current_prediction_token(0.5) is None  # outside a call

    def test_the_key_from_the_environment(
        self, baseline: Baseline, vocabs: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setenv("OTEL_ML_TOKEN_KEY", KEY.hex())
        mon = ModelMonitor(baseline=baseline, registry=None)
        with mon.observe(ROW) as obs:
            obs.result = 0.5
        assert decode_token(obs.token, KEY, vocabs).decision is None  # type: ignore[arg-type]  # no rule
        no_baseline = ModelMonitor("m", "1", registry=None)  # no vocabulary: no tokens, no error
        with no_baseline.observe(ROW) as obs:
            obs.result = 0.5
        assert obs.token is None
        monkeypatch.setenv("OTEL_ML_TOKEN_KEY", "too short")
        broken = ModelMonitor(baseline=baseline, registry=None)  # the app still starts
        with broken.observe(ROW) as obs:
            obs.result = 0.5
        assert obs.token is None and "OTEL_ML_TOKEN_KEY" in caplog.text

    def test_an_explicit_key_is_checked(self, baseline: Baseline) -> None:
        with pytest.raises(ValueError, match="at least 16 bytes"):
            ModelMonitor(baseline=baseline, token_key=b"short", registry=None)
        with pytest.raises(ValueError, match="needs baseline"):
            ModelMonitor("m", "1", token_key=KEY, registry=None)

    def test_a_failing_token_never_breaks_the_call(
        self, baseline: Baseline, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def boom(*args: Any, **kwargs: Any) -> str:
            raise RuntimeError("signer down")

        predict = monitor(baseline=baseline, decision=0.7, token_key=KEY, registry=registry)(
            lambda row: otel_ml.current_prediction_token(0.75) or 0.75
        )
        monkeypatch.setattr(tk.TokenSigner, "sign", boom)
        with otel_ml.capture_prediction() as captured:
            assert predict(ROW) == 0.75
        assert captured.token is None
        assert instrumentation_errors(registry) == {"RuntimeError": 2.0}  # inside, then at the end


@settings(max_examples=200, deadline=None)
@given(row=never_hurt.rows, result=never_hurt.results, ask=st.booleans())
def test_a_minting_monitor_never_hurts(baseline: Baseline, row: Any, result: Any, ask: bool) -> None:
    """Hostile rows, results and scores handed to current_prediction_token: the call is the original's."""
    mon = ModelMonitor(baseline=baseline, decision=0.5, token_key=KEY, registry=None)

    @mon
    def predict(features: Any) -> Any:
        if ask:
            otel_ml.current_prediction_token(result)
        return result

    with otel_ml.capture_prediction() as captured:
        assert predict(row) is result
    if captured.token is not None:  # whatever made it into a token decodes
        vocab = TokenVocabulary.of(baseline)
        assert decode_token(captured.token, KEY, {vocab.baseline_id: vocab}).model == "fraud"
