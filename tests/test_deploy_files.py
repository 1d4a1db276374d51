"""The deployment files in exporters/ run as shipped: linted, schema-validated, verified by their tools.

Dockerfile: hadolint, plus the facts Kubernetes relies on (numeric non-root user, ``otel-ml``
entrypoint). Kubernetes manifest: the official schemas (kubernetes-validate, strict), and the
network and security promises (ingest on loopback only, /metrics on a second port, a token from a
Secret for the remote-ingest alternative). systemd: ``systemd-analyze verify`` on a copy whose
ExecStart points at this interpreter's venv, its security score, and the sysusers.d entry.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate as kv
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXPORTERS = ROOT / "exporters"
DOCKERFILE = EXPORTERS / "Dockerfile"
MANIFEST = EXPORTERS / "kubernetes" / "model-with-sidecar.yaml"
UNIT = EXPORTERS / "systemd" / "otel-ml-sidecar.service"
SYSUSERS = EXPORTERS / "systemd" / "otel-ml.sysusers.conf"
SHIPPED_VENV = "/opt/otel-ml/venv/bin/otel-ml"
MEASURED_PEAK_RSS_MIB = 82  # sidecar peak RSS measured for the manifest's comment (one model, 100 predictions/s)


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(
            f"{name} not installed (scripts/test installs the test extra; systemd-analyze: apt-get install systemd)"
        )
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=120, cwd=cwd)


# -- Dockerfile -----------------------------------------------------------------------------------------
def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_passes_hadolint() -> None:
    result = _run(_tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_otel_ml_as_a_numeric_non_root_user() -> None:
    steps = _instructions()
    bases = [arg for op, arg in steps if op == "FROM"]
    assert bases and all(re.match(r"python:3\.\d+-slim", b) for b in bases), bases
    users = [arg for op, arg in steps if op == "USER"]
    assert len(users) == 1 and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[0]), users
    assert [arg for op, arg in steps if op == "ENTRYPOINT"] == ['["otel-ml"]']
    cmd = yaml.safe_load([arg for op, arg in steps if op == "CMD"][-1])
    assert cmd[:2] == ["sidecar", "--config"]
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    assert "pip install /src" in runs
    for op, arg in steps:  # every file the build copies from the context exists in the repository
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), source


# -- Kubernetes -----------------------------------------------------------------------------------------
def _documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def _kind(kind: str) -> dict[str, Any]:
    (doc,) = (d for d in _documents() if d["kind"] == kind)
    return doc


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _kind("Deployment")["spec"]["template"]["spec"]
    return spec


def _sidecar() -> dict[str, Any]:
    (container,) = (c for c in _pod()["containers"] if c["name"] == "otel-ml-sidecar")
    return container


def _sidecar_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(_kind("ConfigMap")["data"]["sidecar.yaml"])
    return data


@pytest.mark.parametrize("version", ["1.28.0", "latest"])
def test_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    version = kv.latest_version() if version == "latest" else version
    validated = []
    for doc in _documents():
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError:
            # custom resources (prometheus-operator) have no schema in the Kubernetes set
            assert doc["apiVersion"].startswith("monitoring.coreos.com/"), doc["kind"]
            continue
        validated.append(doc["kind"])
    assert sorted(validated) == ["ConfigMap", "Deployment", "Service"]


def test_a_schema_violation_is_caught() -> None:
    broken = _kind("Deployment")
    broken["spec"]["template"]["spec"]["containers"][1]["securityContext"]["runAsUSer"] = 10001
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_sidecar_container_is_non_root_read_only_and_sized_from_measured_rss() -> None:
    sidecar = _sidecar()
    security = sidecar["securityContext"]
    docker_user = next(arg for op, arg in _instructions() if op == "USER").split(":")[0]
    assert security["runAsUser"] == int(docker_user)
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert sidecar["args"] == yaml.safe_load(next(arg for op, arg in _instructions() if op == "CMD"))
    resources = sidecar["resources"]

    def mib(quantity: str) -> int:
        number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
        return int(number) * (1024 if unit == "Gi" else 1)

    assert MEASURED_PEAK_RSS_MIB < mib(resources["requests"]["memory"]) <= mib(resources["limits"]["memory"])
    assert f"{MEASURED_PEAK_RSS_MIB} MiB peak" in MANIFEST.read_text()
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    state_dir = str(Path(_sidecar_config()["state_file"]).parent)
    assert state_dir in mounts  # the only writable place besides /tmp under a read-only root


def test_ingest_listens_on_loopback_and_metrics_on_a_second_port() -> None:
    from otel_ml.sidecar._config import SidecarConfig

    config = SidecarConfig.from_mapping(_sidecar_config())
    assert config.listen[0] == "127.0.0.1"
    assert config.metrics_listen is not None and config.metrics_listen[0] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in _sidecar()["ports"]}
    assert ports == {"otel-ml-metrics": config.metrics_listen[1]}  # the ingest port is not even declared
    for probe in ("readinessProbe", "livenessProbe"):
        assert _sidecar()[probe]["httpGet"]["port"] == "otel-ml-metrics"
    service_ports = {p["targetPort"] for p in _kind("Service")["spec"]["ports"]}
    assert "otel-ml-metrics" in service_ports and config.listen[1] not in service_ports
    endpoints = _kind("PodMonitor")["spec"]["podMetricsEndpoints"]
    relabelled = [
        e for e in endpoints if any(r.get("replacement") == "otel-ml-sidecar" for r in e.get("relabelings", []))
    ]
    (sidecar_endpoint,) = relabelled
    assert sidecar_endpoint["port"] == "otel-ml-metrics"
    app_ports = {p["name"] for c in _pod()["containers"] for p in c.get("ports", [])}
    assert {e["port"] for e in endpoints} <= app_ports


def test_remote_ingest_alternative_reads_its_token_from_a_secret(tmp_path: Path) -> None:
    from otel_ml.sidecar._config import SidecarConfig

    text = _kind("ConfigMap")["data"]["sidecar.yaml"]
    alternative: dict[str, Any] = {}
    for line in re.findall(r"^# ((?:listen|ingest_token_file): .+)$", text, re.MULTILINE):
        alternative.update(yaml.safe_load(line))
    assert set(alternative) == {"listen", "ingest_token_file"}
    volume = next(v for v in _pod()["volumes"] if "secret" in v)
    mount = next(m for m in _sidecar()["volumeMounts"] if m["name"] == volume["name"])
    token_path = Path(alternative["ingest_token_file"])
    assert token_path.parent == Path(mount["mountPath"]) and mount["readOnly"] is True
    assert volume["secret"]["secretName"] in text  # the kubectl create secret line names it
    (tmp_path / token_path.name).write_text("s3cret\n")
    config = SidecarConfig.from_mapping(
        {**_sidecar_config(), **alternative, "ingest_token_file": token_path.name}, base=tmp_path
    )
    assert config.token == "s3cret" and config.listen[0] == "0.0.0.0"


# -- systemd --------------------------------------------------------------------------------------------
def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this interpreter's venv instead of /opt/otel-ml/venv."""
    text = UNIT.read_text()
    assert SHIPPED_VENV in text
    executable = Path(sys.executable).parent / "otel-ml"
    if not executable.exists():
        pytest.skip(f"no otel-ml script next to {sys.executable} (package not installed into this environment)")
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(SHIPPED_VENV, str(executable)))
    return copy


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "verify", str(_unit_for_this_machine(tmp_path)))
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr
    missing = _run(analyze, "verify", str(UNIT))  # the check is real: a missing venv fails it
    assert missing.returncode != 0 and SHIPPED_VENV in missing.stderr


def test_systemd_unit_is_hardened(tmp_path: Path) -> None:
    settings = _unit_settings()
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "true",
        "ProtectHome": "true",
        "PrivateTmp": "true",
        "StateDirectory": "otel-ml",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings.get(key) == [value], key
    assert "/var/lib/otel-ml/" in (ROOT / "exporters" / "sidecar.yaml").read_text()  # state_file inside StateDirectory
    result = _run(_tool("systemd-analyze"), "security", "--offline=true", str(_unit_for_this_machine(tmp_path)))
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.0, result.stdout  # "OK" on systemd's 0-10 exposure scale


def test_sysusers_entry_creates_the_units_user(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    (user,) = _unit_settings()["User"]
    (tmp_path / "etc").mkdir()
    result = _run(sysusers, f"--root={tmp_path}", str(SYSUSERS))
    assert result.returncode == 0, result.stdout + result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    assert user in passwd
    assert passwd[user][5] == "/var/lib/otel-ml" and passwd[user][6].endswith("nologin")
    assert int(passwd[user][2]) < 1000  # a system user
