"""Upload the generated dashboards to a running Grafana with grafana-client.

The dashboards go into one folder (found by title, created when missing) and are posted with
``overwrite: true``: the uid comes from :class:`MixinConfig`, so an upload replaces the previous
version of the same dashboard instead of adding a copy. Every failure is turned into a
:class:`GrafanaError` whose message says what to do, never a traceback from the HTTP stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._version import __version__

__all__ = ["GrafanaError", "Uploaded", "upload_dashboards"]


class GrafanaError(Exception):
    """An upload that could not be done; the message is meant for the terminal."""


@dataclass(frozen=True)
class Uploaded:
    """One dashboard as Grafana stored it."""

    filename: str
    uid: str
    url: str  # path on the Grafana server, e.g. /d/<uid>/<slug>
    version: int


def _base_url(url: str) -> str:
    """Validate the URL and give its path a trailing slash (grafana-client appends "api")."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GrafanaError(f"not a Grafana URL: {url!r} (expected http(s)://host[:port][/path])")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _redacted(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _reason(exc: BaseException) -> str:
    """The useful end of a connection error chain ("Connection refused"), not three wrappers deep."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    match = re.search(r"Failed to resolve '([^']+)'", text)
    if match:
        return f"cannot resolve host {match.group(1)}"
    if "timed out" in text.lower():
        return "timed out"
    return text


def _explain(exc: Exception, url: str, action: str) -> GrafanaError:
    """Translate grafana-client and niquests exceptions into one actionable message."""
    import niquests
    from grafana_client.client import GrafanaException, GrafanaTimeoutError

    if isinstance(exc, GrafanaTimeoutError) or (isinstance(exc, GrafanaException) and exc.status_code == 0):
        return GrafanaError(f"cannot reach Grafana at {url}: {exc.message}")
    if isinstance(exc, GrafanaException):
        detail = exc.response.get("message") if isinstance(exc.response, dict) else exc.response
        if exc.status_code in (401, 403):
            return GrafanaError(
                f"Grafana rejected the token (HTTP {exc.status_code} while {action}: {detail or exc.message}); "
                "use a service account token with the Editor role on the folder (Admin to create it), "
                "passed as --token or GRAFANA_TOKEN"
            )
        return GrafanaError(f"Grafana at {url} failed while {action}: HTTP {exc.status_code}: {detail or exc.message}")
    if isinstance(exc, (niquests.exceptions.RequestException, OSError)):
        return GrafanaError(f"cannot reach Grafana at {url}: {_reason(exc)}")
    return GrafanaError(f"unexpected answer from Grafana at {url} while {action}: {exc!r}")


def _folder_uid(api: Any, title: str) -> str:
    """The uid of the top-level folder with this title, creating the folder when there is none."""
    from grafana_client.client import GrafanaClientError

    def find() -> str | None:
        for folder in api.folder.get_all_folders() or []:
            if isinstance(folder, dict) and folder.get("title") == title:
                return str(folder["uid"])
        return None

    uid = find()
    if uid is not None:
        return uid
    try:
        created = api.folder.create_folder(title)
    except GrafanaClientError as exc:
        if exc.status_code not in (409, 412):  # created meanwhile by someone else
            raise
        uid = find()
        if uid is None:
            raise
        return uid
    return str(created["uid"])


def upload_dashboards(
    dashboards: Mapping[str, Mapping[str, Any]],
    *,
    url: str,
    token: str | None,
    folder: str,
    timeout: float = 10.0,
) -> list[Uploaded]:
    """POST every dashboard to ``/api/dashboards/db`` into ``folder``, overwriting older versions.

    ``token`` is a Grafana service account token (Bearer); None uses the credentials in the URL
    (``http://user:pass@host``), if any. Raises :class:`GrafanaError` on any failure.
    """
    from grafana_client.api import GrafanaApi

    base = _base_url(url)
    shown = _redacted(base)
    api = GrafanaApi.from_url(base, credential=token, timeout=timeout)
    action = f"looking up folder {folder!r}"
    try:
        folder_uid = _folder_uid(api, folder)
        uploaded = []
        for filename, board in sorted(dashboards.items()):
            action = f"uploading {filename}"
            body = {
                "dashboard": {**board, "id": None},  # match by uid, not by a numeric id
                "folderUid": folder_uid,
                "overwrite": True,
                "message": f"otel-ml {__version__}: otel-ml dashboards import",
            }
            answer = api.dashboard.update_dashboard(body)
            uploaded.append(
                Uploaded(
                    filename,
                    str(answer.get("uid", board.get("uid"))),
                    str(answer.get("url", "")),
                    int(answer.get("version", 0)),
                )
            )
    except GrafanaError:
        raise
    except Exception as exc:
        raise _explain(exc, shown, action) from exc
    return uploaded
