"""Run the real Prometheus and Alertmanager on loopback, as child processes with their own dirs.

Used by the demo (when Debian's ``prometheus`` and ``prometheus-alertmanager`` are installed)
and by the end-to-end test. Both servers bind 127.0.0.1 on free ports, keep their data in a
temporary directory, get ``--web.external-url`` so links carry no hostname, and Alertmanager's
gossip port is disabled; a Pushgateway (Debian's ``prometheus-pushgateway``) runs beside them when
asked. :meth:`PrometheusStack.stop` terminates them all and is safe to call twice.
"""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml

__all__ = ["PrometheusStack", "free_port", "stack_binaries"]

T = TypeVar("T")
PUSHGATEWAY = "prometheus-pushgateway"  # Debian's name of the Prometheus Pushgateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_binaries() -> tuple[str, str] | None:
    """Paths of ``prometheus`` and ``prometheus-alertmanager`` (or ``alertmanager``), if installed."""
    prometheus = shutil.which("prometheus")
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    return (prometheus, alertmanager) if prometheus and alertmanager else None


class PrometheusStack:
    """Prometheus scraping ``targets`` and evaluating ``rule_files``, paging a webhook via Alertmanager."""

    def __init__(
        self,
        workdir: Path,
        *,
        targets: Mapping[str, Sequence[str]],
        rule_files: Sequence[Path],
        webhook_url: str,
        interval: str = "1s",
        group_by: Sequence[str] = ("alertname", "ml_model_name", "ml_model_version", "ml_feature", "ml_segment"),
        pushgateway: bool = False,
    ) -> None:
        """``pushgateway`` also runs a Pushgateway (batch jobs such as ``otel-ml skew replay`` push to
        :attr:`pushgateway_url`), scraped with ``honor_labels`` so the pushed labels stay."""
        binaries = stack_binaries()
        if binaries is None:
            raise FileNotFoundError(
                "prometheus and prometheus-alertmanager are not installed "
                "(apt-get install prometheus prometheus-alertmanager)"
            )
        self.prometheus_bin, self.alertmanager_bin = binaries
        self.workdir = workdir
        self.targets = targets
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.webhook_url = webhook_url
        self.interval = interval
        self.group_by = list(group_by)
        self.prom_port = free_port()
        self.am_port = free_port()
        self.pushgateway_bin = shutil.which(PUSHGATEWAY) if pushgateway else None
        if pushgateway and self.pushgateway_bin is None:
            raise FileNotFoundError(f"{PUSHGATEWAY} is not installed (apt-get install {PUSHGATEWAY})")
        self.pgw_port = free_port() if pushgateway else 0
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    @property
    def pushgateway_url(self) -> str:
        return f"http://127.0.0.1:{self.pgw_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.am_port}"

    def _write_configs(self) -> tuple[Path, Path]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        prom: dict[str, Any] = {
            "global": {
                "scrape_interval": self.interval,
                "evaluation_interval": self.interval,
                "scrape_timeout": self.interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.am_port}"]}]}]},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(hosts)}]} for job, hosts in self.targets.items()
            ],
        }
        if self.pgw_port:
            prom["scrape_configs"].append(
                {
                    "job_name": "pushgateway",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{self.pgw_port}"]}],
                }
            )
        am = {
            "route": {
                "receiver": "pager",
                "group_by": self.group_by,
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "pager", "webhook_configs": [{"url": self.webhook_url, "send_resolved": True}]}],
        }
        prom_file, am_file = self.workdir / "prometheus.yml", self.workdir / "alertmanager.yml"
        prom_file.write_text(yaml.safe_dump(prom, sort_keys=False))
        am_file.write_text(yaml.safe_dump(am, sort_keys=False))
        return prom_file, am_file

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        try:
            self._procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir))
        finally:
            log.close()

    def start(self, timeout: float = 30.0) -> PrometheusStack:
        prom_file, am_file = self._write_configs()
        try:
            self._spawn(
                "alertmanager",
                [
                    self.alertmanager_bin,
                    f"--config.file={am_file}",
                    f"--storage.path={self.workdir / 'am'}",
                    f"--web.listen-address=127.0.0.1:{self.am_port}",
                    "--cluster.listen-address=",
                    f"--web.external-url={self.alertmanager_url}/",
                ],
            )
            self._spawn(
                "prometheus",
                [
                    self.prometheus_bin,
                    f"--config.file={prom_file}",
                    f"--storage.tsdb.path={self.workdir / 'prom'}",
                    f"--web.listen-address=127.0.0.1:{self.prom_port}",
                    f"--web.external-url={self.prometheus_url}/",
                ],
            )
            urls = [self.alertmanager_url, self.prometheus_url]
            if self.pushgateway_bin is not None:
                self._spawn(
                    "pushgateway",
                    [
                        self.pushgateway_bin,
                        f"--web.listen-address=127.0.0.1:{self.pgw_port}",
                        # its own file: Debian's default (/var/lib/prometheus/pushgateway.data) would hand
                        # this run the groups an earlier run pushed
                        f"--persistence.file={self.workdir / 'pushgateway.data'}",
                    ],
                )
                urls.append(self.pushgateway_url)
            for url in urls:
                self.wait_for(functools.partial(_ready, url), timeout, f"{url}/-/ready")
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for(self, check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
        """Poll ``check`` until it returns something truthy; raise TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; see {self.workdir}/*.log")
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(interval)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (raises on a PromQL error)."""
        response = requests.get(self.prometheus_url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"query failed: {expr}: {body.get('error')}")
        return list(body["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Prometheus currently holds (pending or firing)."""
        response = requests.get(self.prometheus_url + "/api/v1/alerts", timeout=10)
        return list(response.json()["data"]["alerts"])

    def target_health(self) -> dict[str, str]:
        response = requests.get(self.prometheus_url + "/api/v1/targets", timeout=10)
        return {t["labels"]["job"]: t["health"] for t in response.json()["data"]["activeTargets"]}

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()

    def __enter__(self) -> PrometheusStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False
