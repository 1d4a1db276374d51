"""The scheduled-replay deployment files in exporters/skew/ run as shipped: the CronJob against the
official Kubernetes schemas (strict), the systemd service and timer through ``systemd-analyze
verify``, and the command line both carry through otel-ml's own argument parser."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate as kv
import pytest
import yaml

from otel_ml.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
SKEW = ROOT / "exporters" / "skew"
CRONJOB = SKEW / "cronjob.yaml"
SERVICE = SKEW / "otel-ml-skew-replay.service"
TIMER = SKEW / "otel-ml-skew-replay.timer"
SHIPPED_VENV = "/opt/otel-ml/venv/bin/otel-ml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (systemd-analyze: apt-get install systemd)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=120)


def _cronjob() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(CRONJOB.read_text()) if d]
    return doc  # type: ignore[no-any-return]


def _container() -> dict[str, Any]:
    (c,) = _cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def _parsed(argv: list[str]) -> Any:
    args = build_parser().parse_args(argv)
    assert args.func.__name__ == "_replay"
    return args


@pytest.mark.parametrize("version", ["1.28.0", "latest"])
def test_cronjob_validates_against_the_kubernetes_schemas(version: str) -> None:
    kv.validate(_cronjob(), kv.latest_version() if version == "latest" else version, strict=True)


def test_a_cronjob_schema_violation_is_caught() -> None:
    broken = _cronjob()
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUSer"] = 1
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_cronjob_runs_the_replay_read_only_non_root_and_pushes() -> None:
    c = _container()
    assert c["command"] == ["otel-ml"]
    args = _parsed(c["args"])
    assert args.pushgateway and args.no_progress and args.capture
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[args.capture]["readOnly"] is True
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    pod = _cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    docker_user = re.search(r"^USER (\d+)", (ROOT / "exporters" / "Dockerfile").read_text(), re.MULTILINE)
    assert docker_user and pod["securityContext"]["runAsUser"] == int(docker_user.group(1))
    assert _cronjob()["spec"]["concurrencyPolicy"] == "Forbid"  # a push replaces: never two at once


def _copies(tmp_path: Path) -> tuple[Path, Path]:
    """The service and timer, ExecStart pointing at this interpreter's otel-ml instead of /opt/otel-ml/venv."""
    executable = Path(sys.executable).parent / "otel-ml"
    if not executable.exists():
        pytest.skip(f"no otel-ml script next to {sys.executable} (package not installed into this environment)")
    text = SERVICE.read_text()
    assert SHIPPED_VENV in text
    service = tmp_path / SERVICE.name
    service.write_text(
        text.replace(SHIPPED_VENV, str(executable)).replace(
            "WorkingDirectory=/opt/otel-ml", f"WorkingDirectory={tmp_path}"
        )
    )
    timer = tmp_path / TIMER.name
    timer.write_text(TIMER.read_text())
    return service, timer


def test_systemd_service_and_timer_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    service, timer = _copies(tmp_path)
    result = _run(analyze, "verify", str(service), str(timer))
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr
    missing = _run(analyze, "verify", str(SERVICE))  # the check is real: a missing venv fails it
    assert missing.returncode != 0 and SHIPPED_VENV in missing.stderr


def test_systemd_service_runs_the_replay_hardened(tmp_path: Path) -> None:
    settings: dict[str, list[str]] = {}
    for line in SERVICE.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    assert settings["Type"] == ["oneshot"]
    (exec_start,) = settings["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == SHIPPED_VENV
    args = _parsed(argv[1:])
    assert args.pushgateway and args.no_progress
    assert settings["ReadOnlyPaths"] == [args.capture]
    assert settings["ProtectSystem"] == ["strict"] and settings["NoNewPrivileges"] == ["true"]
    result = _run(_tool("systemd-analyze"), "security", "--offline=true", str(_copies(tmp_path)[0]))
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.0, result.stdout
    timer = TIMER.read_text()
    assert f"Unit={SERVICE.name}" in timer and "Persistent=true" in timer
