"""The public surface is exactly ``__all__``: no name appears or disappears unnoticed."""

import types

import otel_ml


def test_all_is_sorted_and_complete() -> None:
    public = sorted(
        name
        for name, value in vars(otel_ml).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)  # subpackages
    )
    assert otel_ml.__all__ == sorted(otel_ml.__all__)
    assert public == otel_ml.__all__


def test_public_objects_report_the_public_module() -> None:
    for name in otel_ml.__all__:
        assert getattr(otel_ml, name).__module__ == "otel_ml", name


def test_version_is_a_string() -> None:
    assert isinstance(otel_ml.__version__, str) and otel_ml.__version__.count(".") == 2
