"""A `dagster dev` (or `scripts/ui.sh`) process on a loopback port, and a tiny GraphQL client for it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 600
TERMINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

ASSETS_AND_CHECKS = """
{ assetNodes { assetKey { path } assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } } } }
"""
LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
  }
}
"""
RUN_STATUS = "query RunStatus($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DagsterDev:
    """A `dagster dev` process group on a loopback port, and a tiny GraphQL client for it."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path, out_dir: Path):
        self.process, self.port, self.log_path, self.out_dir = process, port, log_path, out_dir
        self.url = f"http://127.0.0.1:{port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            json.dumps({"query": query, "variables": variables or {}}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def wait_until_loaded(self) -> dict:
        """Wait until the webserver answers and the code location is loaded; returns its repository."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                data = self.graphql(
                    "{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name } } } } }"
                )
                nodes = data["repositoriesOrError"].get("nodes") or []
                if nodes:
                    return nodes[0]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise AssertionError(
            f"dagster dev did not load the code location within {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Interrupt the whole process group (webserver, daemon, code server, run workers); kill
        what is left after a grace period (`dagster dev` can hang while shutting down)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)


def start_dg_dev(project_root: Path, home: Path, out_dir: Path, log_path: Path, **settings: str) -> DagsterDev:
    """`dg dev -w workspace.yaml` on a free loopback port, with its own DAGSTER_HOME (the repo's
    dagster.yaml copied in) and no IMGDEDUP_*/DAGSTER_* variables but `settings`; returned once
    the code location has loaded (stopped if it never does)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(project_root / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGDEDUP_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), DAGSTER_DISABLE_TELEMETRY="1", GX_ANALYTICS_ENABLED="false", **settings)
    port = free_port()
    command = [str(Path(sys.executable).parent / "dg"), "dev", "-w", "workspace.yaml", "--host", "127.0.0.1"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=project_root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DagsterDev(process, port, log_path, out_dir)
    try:
        server.repository = server.wait_until_loaded()
    except BaseException:
        server.stop()
        raise
    return server
