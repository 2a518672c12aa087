"""Helpers of the multi-machine tests: the PostgreSQL server's URLs, Dagster homes configured by
deploy/'s files, and starting and stopping processes by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT_ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent
STOP_GRACE_S = 30


@dataclass(frozen=True)
class Postgres:
    """A running server: its postmaster PID and the Unix socket folder it listens on."""

    pid: int
    socket_dir: str
    user: str

    def sqlalchemy_url(self, database: str, scheme: str = "postgresql+psycopg2") -> str:
        """`scheme://user@/database?host=socket_dir`: Dagster storage (`postgresql+psycopg2`), the
        Celery broker (`sqla+postgresql+psycopg2`) or result backend (`db+postgresql+psycopg2`)."""
        return f"{scheme}://{self.user}@/{database}?host={self.socket_dir}"

    def create_database(self, name: str) -> None:
        import psycopg2

        connection = psycopg2.connect(dbname="postgres", user=self.user, host=self.socket_dir)
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parent = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def stop_pids(pids: set[int]) -> None:
    """SIGTERM every one of `pids` at once (a parent's shutdown may wait for its children), then
    SIGKILL whatever outlives the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = {pid for pid in pids if is_alive(pid)}
        if not pids:
            return


def stop_pid(pid: int) -> None:
    stop_pids({pid})


def start_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`args` in a session of its own (so its children can be found and stopped), output in `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process_tree(process: subprocess.Popen) -> set[int]:
    """Stop `process` and every process below it, each by its PID. Returns the PIDs stopped."""
    tree = {process.pid} | descendants(process.pid)
    stop_pids(tree)
    process.wait(timeout=STOP_GRACE_S)
    return tree


def wait_for(
    predicate,
    what: str,
    timeout_s: float,
    logs: list[Path] = (),
    processes: list[subprocess.Popen] = (),
    poll_s: float = 1.0,
):
    """Poll `predicate` until it returns a true value (returned); fail naming `what` and showing
    the logs' tails when the time is up or one of `processes` has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and all(process.poll() is None for process in processes):
        if value := predicate():
            return value
        time.sleep(poll_s)
    tails = "\n".join(f"--- {log}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())
    pytest.fail(f"gave up waiting for {what}\n{tails}")


def celery_worker_command(name: str) -> list[str]:
    """deploy/celery.yaml's start command for worker `name`; `-c 1`: one step at a time."""
    return [
        str(VENV_BIN / "dagster-celery"),
        *("worker", "start", "-A", "dagster_celery.app", "-y", "deploy/celery.yaml", "-n", name),
        *("--", "-c", "1"),
    ]


def dagster_home_from(deploy_file: str, home: Path) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is `deploy/<deploy_file>`, copied unchanged."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEPLOY / deploy_file, home / "dagster.yaml")
    return home


def process_env(settings, extra: dict[str, str]) -> dict[str, str]:
    """This process's environment with every field of `settings` as IMGDEDUP_* (and nothing else
    IMGDEDUP_*): what definitions.py reads in each worker, daemon and run process."""
    import dataclasses

    from imgdedup_pipeline.core.settings import ENV_PREFIX, Settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        {
            ENV_PREFIX + f.name.upper(): str(getattr(settings, f.name))
            for f in dataclasses.fields(settings)
            if getattr(settings, f.name) is not None
        }
    )
    assert Settings.from_env(env) == settings
    # The commands' own children (dagster-celery runs `celery`) are found on PATH.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
