"""One contract suite for every storage backend (as zarr-python's ``StoreTests``): the class
:class:`BackendTests` states what a :class:`~lazyexport.storage.backend.Backend` does, and a
subclass per backend runs it against local files, an S3 server (moto, on loopback) and
obstore's memory store. Then the ownership claim over each backend, and two racing ``--resume``
claims on S3 (threads and processes): exactly one wins, every round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

import pytest

from helpers.objstore import key_prefix, s3_bucket
from lazyexport import remote
from lazyexport.storage import Backend, Busy, FileBackend, Run
from lazyexport.storage.runs import claim_key, marker_of
from lazyexport.storage.stores import ObjectBackend

ROUNDS = 12
RACERS = 6


def race(n: int, attempt: Callable[..., object]) -> list[int]:
    """Run ``attempt(i)`` in ``n`` threads released at once; the ``i`` that did not raise."""
    barrier, won, lock = threading.Barrier(n), [], threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            attempt(i)
        except (FileExistsError, Busy):
            return
        with lock:
            won.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


class BackendTests:
    """What every backend does; a subclass gives the ``backend`` fixture."""

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError

    def test_put_then_read(self, backend):
        backend.put("a/b/c.bin", b"0123456789")
        assert backend.read("a/b/c.bin") == b"0123456789"
        assert backend.exists("a/b/c.bin")

    def test_read_a_byte_range(self, backend):
        backend.put("r", b"0123456789")
        assert backend.read("r", 2, 5) == b"234"
        assert backend.read("r", 7) == b"789"
        assert backend.read("r", 0, 10) == b"0123456789"

    def test_put_replaces(self, backend):
        backend.put("k", b"old")
        backend.put("k", b"new")
        assert backend.read("k") == b"new"

    def test_a_missing_key(self, backend):
        assert not backend.exists("nothing")
        with pytest.raises(FileNotFoundError):
            backend.read("nothing")
        backend.delete("nothing")  # no error
        assert backend.delete_prefix("nothing/") == 0

    def test_list_by_prefix(self, backend):
        for key in ("x/1", "x/2", "x/sub/3", "xy", "y/1"):
            backend.put(key, b".")
        assert backend.list("x/") == ["x/1", "x/2", "x/sub/3"]
        assert backend.list("x") == ["x/1", "x/2", "x/sub/3", "xy"]
        assert backend.list("x/sub/") == ["x/sub/3"]
        assert set(backend.list()) >= {"x/1", "x/2", "x/sub/3", "xy", "y/1"}

    def test_delete(self, backend):
        backend.put("d/1", b".")
        backend.put("d/2", b".")
        backend.delete("d/1")
        assert not backend.exists("d/1") and backend.exists("d/2")

    def test_delete_prefix(self, backend):
        for key in ("p/1", "p/q/2", "pq", "other"):
            backend.put(key, b".")
        assert backend.delete_prefix("p/") == 2
        assert backend.list("p") == ["pq"]
        assert backend.exists("other")

    def test_put_new_creates(self, backend):
        backend.put_new("n/new", b"first")
        assert backend.read("n/new") == b"first"

    def test_put_new_refuses_an_existing_key(self, backend):
        backend.put("n/old", b"kept")
        with pytest.raises(FileExistsError):
            backend.put_new("n/old", b"other")
        assert backend.read("n/old") == b"kept"

    def test_replace_writes_only_over_the_expected_bytes(self, backend):
        assert not backend.replace("r", b"old", b"new")  # nothing there
        assert not backend.exists("r")
        backend.put("r", b"old")
        assert not backend.replace("r", b"other", b"new")
        assert backend.read("r") == b"old"
        assert backend.replace("r", b"old", b"new")
        assert backend.read("r") == b"new"

    # -- logs (a resume journal) ------------------------------------------------------------

    def test_a_log_reads_back_its_header_and_the_records_added(self, backend):
        backend.start_log("j", "header one")
        for record in ("0-0", "1-0", "0-1"):
            backend.add_to_log("j", record)
        header, records = backend.read_log("j")
        assert header == "header one" and sorted(records) == ["0-0", "0-1", "1-0"]

    def test_a_missing_log(self, backend):
        assert backend.read_log("none") == (None, ())
        backend.delete_log("none")  # no error

    def test_a_restarted_log_holds_exactly_the_records_given(self, backend):
        backend.start_log("j", "h")
        for record in ("0", "1", "2"):
            backend.add_to_log("j", record)
        backend.start_log("j", "h", ["0", "2"])
        assert sorted(backend.read_log("j")[1]) == ["0", "2"]
        backend.start_log("j", "another header")
        assert backend.read_log("j") == ("another header", ())

    def test_a_log_record_is_a_key_segment(self, backend):
        backend.start_log("j", "h")
        for bad in ("", "a/b", ".x", "a\nb", "a b"):
            with pytest.raises(ValueError):
                backend.add_to_log("j", bad)
        assert backend.read_log("j") == ("h", ())

    def test_delete_log(self, backend):
        backend.start_log("j", "h", ["1"])
        backend.add_to_log("j", "2")
        backend.put("jx", b"not the log's")
        backend.delete_log("j")
        assert backend.read_log("j") == (None, ())
        assert backend.list() == ["jx"]

    def test_racing_log_additions_all_read_back(self, backend):
        backend.start_log("j", "h")
        won = race(RACERS, lambda i: backend.add_to_log("j", f"{i}-0"))
        assert sorted(won) == list(range(RACERS))
        assert sorted(backend.read_log("j")[1]) == sorted(f"{i}-0" for i in range(RACERS))

    def test_racing_put_new_has_exactly_one_winner(self, backend):
        for round in range(ROUNDS):
            key = f"race/{round}"
            won = race(RACERS, lambda i, key=key: backend.put_new(key, f"{i}".encode()))
            assert len(won) == 1, f"round {round}: winners {won}"
            assert backend.read(key) == f"{won[0]}".encode()  # the winner's bytes, whole

    def test_a_claim_is_refused_while_its_owner_lives(self, backend):
        with Run("rclaim"):
            claim_key(backend, "held/owner", "rclaim")
            with pytest.raises(Busy, match="pid"):
                claim_key(backend, "held/owner", "rclaim")

    def test_racing_claims_have_exactly_one_winner(self, backend):
        with Run("rrace"):
            for round in range(ROUNDS):
                key = f"claims/{round}/owner"
                assert len(race(RACERS, lambda i, key=key: claim_key(backend, key, "rrace"))) == 1

    def test_a_dead_owner_is_taken_over_by_exactly_one_racer(self, backend, dead_pid):
        stale = json.dumps({"pid": dead_pid, "host": _host(), "hostname": "here"}).encode()
        with Run("rtake"):
            for round in range(ROUNDS):
                key = f"stale/{round}/owner"
                backend.put(key, stale)
                won = race(RACERS, lambda i, key=key: claim_key(backend, key, "rtake"))
                assert len(won) == 1, f"round {round}: winners {won}"
                assert json.loads(backend.read(key))["pid"] == os.getpid()
                assert backend.list(f"stale/{round}/") == [key]  # no marker left

    def test_killed_takers_markers_are_taken_over_by_exactly_one_racer(self, backend, dead_pid):
        with Run("rkill"):
            for round in range(ROUNDS // 2):
                key = f"killed/{round}/owner"
                stale, first = _record(dead_pid), _record(dead_pid)
                backend.put(key, stale)
                backend.put(marker_of(key, stale), first)  # a taker killed midway
                backend.put(marker_of(key, first), _record(dead_pid))  # and its taker
                won = race(RACERS, lambda i, key=key: claim_key(backend, key, "rkill"))
                assert len(won) == 1, f"round {round}: winners {won}"
                assert json.loads(backend.read(key))["pid"] == os.getpid()
                assert backend.list(f"killed/{round}/") == [key]  # no marker left

    def test_a_stale_read_of_a_killed_takers_marker_never_makes_two_winners(
        self, backend, dead_pid
    ):
        """Review of #27, finding 6: C reads a killed taker's marker and is delayed before it acts
        on that read; B takes the record over meanwhile and is delayed before its put; then C
        goes on, then B. Before the fix C deleted B's fresh marker by name and both won."""
        stale = _record(dead_pid)
        key = "gated/owner"
        backend.put(key, stale)
        backend.put(marker_of(key, stale), _record(dead_pid))  # a taker killed midway
        gated = _Gated(backend, key, marker_of(key, stale))
        won: list[str] = []

        def claimer() -> None:
            try:
                claim_key(gated, key, "rgate")
            except Busy:
                return
            won.append(threading.current_thread().name)

        with Run("rgate"):
            c = threading.Thread(target=claimer, name="C")
            c.start()
            assert gated.c_paused.wait(30)
            b = threading.Thread(target=claimer, name="B")
            b.start()
            assert gated.b_paused.wait(30)
            gated.c_go.set()
            c.join(30)
            gated.b_go.set()
            b.join(30)
        assert won == ["B"], f"winners {won}"
        assert json.loads(backend.read(key))["pid"] == os.getpid()
        assert backend.list("gated/") == [key]  # no marker left


def _record(pid: int) -> bytes:
    return json.dumps(
        {"pid": pid, "host": _host(), "hostname": "x", "nonce": os.urandom(4).hex()}
    ).encode()


class _Gated(Backend):
    """``inner``, with the thread scheduling of the review's takeover race forced: thread C
    pauses at its first write after it read ``marker``; thread B pauses before it puts ``key``."""

    def __init__(self, inner: Backend, key: str, marker: str) -> None:
        self.inner, self.key, self.marker = inner, key, marker
        self.c_read = False
        self.c_paused, self.c_go, self.b_paused, self.b_go = (threading.Event() for _ in range(4))

    def _gate(self, key: str, put: bool = False) -> None:
        name = threading.current_thread().name
        if name == "C" and self.c_read and not self.c_go.is_set():
            self.c_paused.set()
            self.c_go.wait()
        if name == "B" and put and key == self.key and not self.b_go.is_set():
            self.b_paused.set()
            self.b_go.wait()

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        data = self.inner.read(key, start, end)
        if threading.current_thread().name == "C" and key == self.marker:
            self.c_read = True
        return data

    def put(self, key: str, data: bytes) -> None:
        self._gate(key, put=True)
        self.inner.put(key, data)

    def put_new(self, key: str, data: bytes) -> None:
        self._gate(key)
        self.inner.put_new(key, data)

    def replace(self, key: str, expected: bytes, data: bytes) -> bool:
        self._gate(key, put=True)
        return self.inner.replace(key, expected, data)

    def delete(self, key: str) -> None:
        self._gate(key)
        self.inner.delete(key)


def _host() -> str:
    from lazyexport.storage import host_tag

    return host_tag()


@pytest.fixture(scope="module")
def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


class TestFileBackend(BackendTests):
    @pytest.fixture
    def backend(self, tmp_path) -> Backend:
        return FileBackend(tmp_path / "root")

    def test_put_new_never_writes_through_a_link(self, backend, tmp_path):
        target = tmp_path / "target"
        target.write_bytes(b"theirs")
        (tmp_path / "root").mkdir()
        (tmp_path / "root" / "planted").symlink_to(target)
        with pytest.raises(FileExistsError):
            backend.put_new("planted", b"ours")
        backend.put("planted", b"ours")  # replaces the link itself
        assert target.read_bytes() == b"theirs"
        assert not (tmp_path / "root" / "planted").is_symlink()

    def test_a_link_at_an_owner_record_is_taken_over_itself(self, backend, tmp_path):
        target = tmp_path / "target"
        target.write_bytes(b"theirs")
        (tmp_path / "root").mkdir()
        (tmp_path / "root" / "owner").symlink_to(target)
        with Run("rlink"):
            claim_key(backend, "owner", "rlink")
        assert target.read_bytes() == b"theirs"
        assert json.loads(backend.read("owner"))["pid"] == os.getpid()
        assert backend.list() == ["owner"]  # no marker left

    def test_a_log_is_one_append_only_file_of_lines(self, backend, tmp_path):
        assert backend.renames and backend.directories
        backend.start_log("j", "h", ["0-0"])
        backend.add_to_log("j", "1-0")
        assert (tmp_path / "root" / "j").read_text() == "h\n0-0\n1-0\n"
        assert backend.file_path("j") == tmp_path / "root" / "j"

    def test_an_interrupted_line_of_a_log_is_not_read(self, backend, tmp_path):
        backend.start_log("j", "h", ["0-0"])
        with open(tmp_path / "root" / "j", "a") as f:
            f.write("1-")  # killed in the middle of an append
        assert backend.read_log("j") == ("h", ("0-0",))
        (tmp_path / "root" / "j").write_text("no newline yet")
        assert backend.read_log("j") == (None, ())

    def test_a_log_is_never_appended_through_a_link(self, backend, tmp_path):
        target = tmp_path / "target"
        target.write_text("theirs")
        (tmp_path / "root").mkdir()
        (tmp_path / "root" / "j").symlink_to(target)
        with pytest.raises(OSError):
            backend.add_to_log("j", "0")
        backend.start_log("j", "h")  # replaces the link itself
        assert target.read_text() == "theirs"
        assert backend.read_log("j") == ("h", ())

    def test_put_new_without_hard_links(self, backend, monkeypatch):
        def no_links(*args, **kwargs):
            raise PermissionError("no hard links here")

        monkeypatch.setattr(os, "link", no_links)
        backend.put_new("n", b"first")
        with pytest.raises(FileExistsError):
            backend.put_new("n", b"second")
        assert backend.read("n") == b"first"
        assert backend.list() == ["n"]  # no temporary left


def _replace_after_a_change(backend: Backend, monkeypatch) -> None:
    """ObjectBackend.replace, with the object changed between its read and its put."""
    import obstore

    backend.put("r", b"old")
    real_get = obstore.get

    def get_then_change(*args, **kwargs):
        found = real_get(*args, **kwargs)
        backend.put("r", b"changed meanwhile")
        return found

    monkeypatch.setattr(obstore, "get", get_then_change)
    assert not backend.replace("r", b"old", b"new")
    monkeypatch.undo()
    assert backend.read("r") == b"changed meanwhile"


class TestMemoryBackend(BackendTests):
    @pytest.fixture
    def backend(self) -> Backend:
        from obstore.store import MemoryStore

        return ObjectBackend(MemoryStore())

    def test_replace_never_overwrites_a_change_made_after_its_read(self, backend, monkeypatch):
        _replace_after_a_change(backend, monkeypatch)

    def test_a_log_is_a_header_object_and_one_empty_object_per_record(self, backend):
        assert not backend.renames and not backend.directories
        assert backend.file_path("j") is None
        backend.start_log("j", "h", ["0-0"])
        backend.add_to_log("j", "1-0")
        assert backend.list() == ["j.header", "j/0-0", "j/1-0"]
        assert backend.read("j.header") == b"h" and backend.read("j/1-0") == b""


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("contract") as server:
        yield server


class TestS3Backend(BackendTests):
    @pytest.fixture
    def backend(self, s3, request) -> Backend:
        url = remote.UrlPath(f"s3://contract/{key_prefix(request.node.name)}")
        return ObjectBackend.at(url)

    def test_replace_never_overwrites_a_change_made_after_its_read(self, backend, monkeypatch):
        _replace_after_a_change(backend, monkeypatch)


# -- two --resume runs racing for one held prefix on S3 -----------------------------------------

TOKEN = "r00112233445566778"


def test_two_racing_resume_claims_on_s3_threads(s3, request):
    """remote.claim, as a --resume export calls it, from racing threads: one wins each round."""
    with Run(TOKEN):
        for round in range(ROUNDS):
            held = remote.as_path(f"s3://contract/{key_prefix(request.node.name)}/{round}.tmp")

            def attempt(i: int, held=held) -> None:
                remote.claim(held, TOKEN)

            assert len(race(2, attempt)) == 1
            assert len(race(RACERS, attempt)) == 0  # still owned by the winner


CLAIMER = """
import sys, time
from pathlib import Path
from lazyexport import remote
from lazyexport.storage import Busy, Run
held, token = remote.as_path(sys.argv[1]), sys.argv[2]
go, stop = Path(sys.argv[3]), Path(sys.argv[4])
with Run(token):
    while not go.exists():
        time.sleep(0.005)
    try:
        remote.claim(held, token)
        print("won", flush=True)
    except Busy:
        print("busy", flush=True)
    while not stop.exists():  # the winner lives on while the others look
        time.sleep(0.01)
"""


def test_two_racing_resume_processes_on_s3_exactly_one_wins(s3, request, tmp_path):
    """Two processes start a --resume export of one output at once: exactly one claims it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for round in range(4):
        held = f"s3://contract/{key_prefix(request.node.name)}/{round}.tmp"
        go, stop = tmp_path / f"go{round}", tmp_path / f"stop{round}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CLAIMER, held, TOKEN, str(go), str(stop)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        time.sleep(1.5)  # both imported and waiting
        go.touch()
        answers = [cast(IO[str], p.stdout).readline().strip() for p in procs]  # pipes
        stop.touch()
        for p in procs:
            p.wait(timeout=60)
        assert sorted(answers) == ["busy", "won"], f"round {round}: {answers}"


def test_contract_classes_cover_every_backend():
    assert {c.__name__ for c in BackendTests.__subclasses__()} == {
        "TestFileBackend",
        "TestMemoryBackend",
        "TestS3Backend",
    }


def test_racing_local_claims_of_several_owner_files_have_one_winner(tmp_path):
    """storage.claim, as a local --resume export calls it (an owner file in each directory)."""
    from lazyexport import storage

    with Run(TOKEN):
        for round in range(ROUNDS):
            owners = [tmp_path / str(round) / d / f".o.lazyexport-{TOKEN}.owner" for d in "ab"]
            assert len(race(RACERS, lambda i, owners=owners: storage.claim(owners, TOKEN))) == 1
            assert all(o.exists() for o in owners)  # the loser removed none of the winner's


# -- the location operations formats call instead of branching on is_url ------------------------


def test_location_operations_do_the_same_for_files_and_urls(s3, request, tmp_path):
    from lazyexport.storage import paths, reading

    url = remote.as_path(f"s3://contract/{key_prefix(request.node.name)}")
    for root in (tmp_path, url):
        file = root / "f.bin"
        assert not paths.exists(file) and not paths.file_exists(file)
        if root == url:
            remote.put_bytes(file, b"x")
            assert reading.open_file(file).read() == b"x"  # range requests
        else:
            file.write_bytes(b"x")
            assert reading.open_file(file) == file
        assert paths.exists(file) and paths.file_exists(file)
        paths.remove_file(file)
        paths.remove_file(file)  # nothing there: no error
        assert not paths.exists(file)
    assert paths.identity_text(url) == str(url)
    assert paths.identity_text(Path("rel")) == str(Path("rel").absolute())
