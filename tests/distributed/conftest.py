"""Fixtures of the multi-machine tests (helpers in distributed_support.py)."""

from pathlib import Path

import pytest
from distributed_support import Postgres, stop_pid


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """One PostgreSQL server for the session (each test makes its own database), stopped by PID."""
    try:
        import pgserver
        from pgserver.utils import PostmasterInfo
    except ImportError as exc:
        pytest.skip(f"pgserver is not installed ({exc}): pip install -e '.[distributed]'")
    # A short folder: the socket path must fit in 107 bytes.
    pgdata = Path(tmp_path_factory.mktemp("pg"))
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="delete")
        info: PostmasterInfo = server.get_postmaster_info()
    except Exception as exc:  # noqa: BLE001 (the reason is printed with the skip)
        pytest.skip(f"PostgreSQL (pgserver) could not start here: {type(exc).__name__}: {exc}")
    yield Postgres(pid=info.pid, socket_dir=str(info.socket_dir), user="postgres")
    server.cleanup()
    stop_pid(info.pid)
