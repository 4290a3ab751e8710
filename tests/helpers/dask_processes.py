"""A dask cluster started as users start one: a ``dask scheduler`` process and ``dask worker``
processes from the command line, on 127.0.0.1, each worker with its own ``--local-directory``
and its own ``TMPDIR`` (no temp directory shared with the client), one thread and a memory limit.

Invariants: every process is started in a process group of its own and :meth:`ProcessCluster.close`
kills each group (SIGKILL) and waits for it, also when a test failed or the cluster was only
half started, so no process outlives the cluster (a fixture closes it in its teardown; an
``atexit`` hook closes what a test process that stopped early left open). The scheduler and the
workers import this checkout, and the test helpers (functions a test runs on them by name, such
as :mod:`helpers.scheduler_load`'s samplers). ``hidden`` directories
are masked on the workers by an empty tmpfs in a mount namespace of their own (``unshare``), so
the workers do not see what the client keeps there, as on hosts that share nothing but the
scheduler and the object store.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers.cli import ROOT, cli_env

BIN = Path(sys.executable).parent
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env() -> dict[str, str]:
    """The environment of the cluster's processes: the CLI's, with tests/ (the helpers) on the
    import path too."""
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(ROOT / "tests")])
    return env


def can_hide() -> bool:
    """Whether a mount namespace can be made here (``unshare --user --mount``)."""
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "true"]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0


class ProcessCluster:
    """A scheduler and ``workers`` worker processes under ``root`` (see the module's docstring);
    ``env``: what the workers' environment adds (credentials, an endpoint)."""

    def __init__(
        self,
        root: Path,
        workers: int = 3,
        memory_limit: str = "1GiB",
        env: dict[str, str] | None = None,
        hidden: tuple[Path, ...] = (),
    ) -> None:
        self.root, self.count, self.memory_limit = root, workers, memory_limit
        self.env, self.hidden = dict(env or {}), tuple(hidden)
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.address = ""
        root.mkdir(parents=True, exist_ok=True)
        self.log = open(root / "dask.log", "ab")
        atexit.register(self.close)

    def __enter__(self) -> ProcessCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(
            args, env=env, stdout=self.log, stderr=self.log, start_new_session=True
        )

    def start(self) -> None:
        self.start_scheduler()
        for n in range(self.count):
            self.start_worker(n)
        self.wait_for_workers(self.count)

    def start_scheduler(self) -> None:
        """A new scheduler (on a new port: its address changes)."""
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        command = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
        self.scheduler = self._spawn([*command, "--no-dashboard"], cluster_env())
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.scheduler.poll() is None, "the dask scheduler exited"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"no scheduler on port {port}"
                time.sleep(0.2)

    def start_worker(self, n: int) -> None:
        home = self.root / f"worker-{n}"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        env = cluster_env()
        env.update(self.env)
        env["TMPDIR"] = str(home / "tmp")
        command = [
            str(BIN / "dask"),
            "worker",
            self.address,
            "--nthreads",
            "1",
            "--memory-limit",
            self.memory_limit,
            "--local-directory",
            str(home / "local"),
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            "--name",
            f"worker-{n}",
        ]
        if self.hidden:
            mounts = " && ".join(f"mount -t tmpfs none '{d}'" for d in self.hidden)
            shell = f'{mounts} && exec "$@"'
            prefix = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell, "sh"]
            command = [*prefix, *command]
        self.workers.append(self._spawn(command, env))

    def client(self, timeout: float = 30):
        from distributed import Client

        return Client(self.address, timeout=timeout, set_as_default=False)

    def wait_for_workers(self, n: int, timeout: float = START_TIMEOUT) -> None:
        with self.client() as client:
            client.wait_for_workers(n, timeout=timeout)

    def worker_pids(self) -> dict[str, int]:
        """Each worker process's id, by address (the process that runs the tasks, under its
        nanny)."""
        with self.client() as client:
            return client.run(os.getpid)

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        kill(self.scheduler)

    def close(self) -> None:
        for proc in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            kill(proc)
        self.workers, self.scheduler = [], None
        if not self.log.closed:
            self.log.close()


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group (the worker's nanny and its worker process with it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
