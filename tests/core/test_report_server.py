"""The loopback report server serves report files of output folders and nothing else."""

import threading
import urllib.error
import urllib.request

import pytest

from imgdedup_pipeline.core.report_server import report_url, serve_reports


@pytest.fixture()
def server():
    running = serve_reports("127.0.0.1", 0)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{running.server_address[1]}"
    running.shutdown()
    running.server_close()


def status_of(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_serves_the_report_of_an_output_folder(server, tmp_path):
    out = tmp_path / "out dir #1"
    (out / "state").mkdir(parents=True)
    (out / "report.html").write_text("<html>groups</html>")
    assert status_of(report_url(server, out / "report.html")) == (200, b"<html>groups</html>")


@pytest.mark.parametrize("case", ["no_state_folder", "other_file", "symlink", "traversal"])
def test_refuses_everything_else(server, tmp_path, case):
    out = tmp_path / "out"
    (out / "state").mkdir(parents=True)
    (out / "report.html").write_text("report")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    if case == "no_state_folder":
        plain = tmp_path / "plain"
        plain.mkdir()
        (plain / "report.html").write_text("not ours")
        url = report_url(server, plain / "report.html")
    elif case == "other_file":
        url = report_url(server, secret)
    elif case == "symlink":
        (out / "report.html").unlink()
        (out / "report.html").symlink_to(secret)
        url = report_url(server, out / "report.html")
    else:
        url = f"{server}{out}/state/../report.html"
    assert status_of(url)[0] == 404
