"""A loopback HTTP server for the HTML reports, so that the Dagster UI's `report_url` opens in a
browser (browsers refuse `file://` links from an `http://` page).

It serves only the report files of output folders (`report.html`, `uniqueness_histogram.png`)
named by their absolute path, and only where the folder has the pipeline's `state/` beside them:
nothing else on the machine is reachable through it.
"""

from __future__ import annotations

import http.server
import logging
import os
import urllib.parse
from pathlib import Path

logger = logging.getLogger(__name__)

SERVED_FILES = {"report.html": "text/html; charset=utf-8", "uniqueness_histogram.png": "image/png"}


def report_url(base_url: str, report: Path) -> str:
    """The URL under which a server at `base_url` serves `report` (an absolute path)."""
    # Absolute, but the report's own link is not followed: the server checks the folder it is in.
    return base_url.rstrip("/") + urllib.parse.quote(os.path.abspath(report))


def servable_file(url_path: str) -> Path | None:
    """The file a request path names, or None when it is not a report file of an output folder."""
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url_path).path))
    if not path.is_absolute() or ".." in path.parts or path.name not in SERVED_FILES:
        return None
    if not path.is_file() or not (path.parent / "state").is_dir():
        return None
    # The top-level report is a link into the folder's published export set (core/export_set.py);
    # a link leading anywhere else is refused.
    if path.is_symlink() and not path.resolve().is_relative_to((path.parent / "exports").resolve()):
        return None
    return path


class ReportRequestHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        target = servable_file(self.path)
        if target is None:
            self.send_error(404, "not a report file of an imgdedup output folder")
            return
        body = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", SERVED_FILES[target.name])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        logger.info("%s %s", self.address_string(), format % args)


def serve_reports(host: str = "127.0.0.1", port: int = 3001) -> http.server.ThreadingHTTPServer:
    """A server bound to `host:port` (not started: call `serve_forever`)."""
    return http.server.ThreadingHTTPServer((host, port), ReportRequestHandler)
