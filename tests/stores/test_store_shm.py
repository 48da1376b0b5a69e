"""SharedMemoryStore: what is specific to a segment every process of the host maps.

Real processes throughout: forked, spawned (multiprocessing spawn) and unrelated ones
(subprocess) share sessions, over real TLS connections on loopback; processes are
SIGKILLed while they write and SIGSTOPped while they hold a lock; the segment file is
fuzzed; another user's file and a pre-created file are refused.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid

import pytest

import sesscache
from sesscache import SessionCache, SharedMemoryStore
from sesscache.errors import ConfigurationError, StoreError, ValueTooLarge
from sesscache.stores import store_from_url
from sesscache.stores.shm import segment_path
from tests.forking import run_in_forked_child as _in_forked_child
from tests.tls import TLS12, TLS13, StdlibStack, _stdlib_session

SMALL = 256 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def name():
    """A fresh segment name; its file is removed after the test."""
    made = f"test-{uuid.uuid4().hex[:12]}"
    yield made
    for uid in {os.geteuid(), _nobody_uid()}:
        try:
            os.unlink(os.path.join("/dev/shm", f"sesscache-{uid}-{made}"))
        except (FileNotFoundError, PermissionError):
            pass


def _nobody_uid() -> int:
    import pwd

    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


def _value_of(key: bytes) -> bytes:
    """The one right value for a key: a wrong or torn value read back is detectable."""
    digest = hashlib.sha256(key).digest()
    return digest * (1 + digest[0] % 20)


# --- the store on its own -------------------------------------------------------------


def test_url_opens_the_named_segment_with_its_size(name):
    store = store_from_url(f"shm:{name}?size=1m")
    try:
        assert isinstance(store, SharedMemoryStore)
        assert store.describe()["size"] == 2**20
        assert store.path == segment_path(name) == f"/dev/shm/sesscache-{os.geteuid()}-{name}"
        assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    finally:
        store.close()
    with pytest.raises(ConfigurationError, match="letters, digits"):
        store_from_url("shm:../etc/passwd")
    with pytest.raises(ConfigurationError, match="unknown option"):
        store_from_url(f"shm:{name}?sise=1m")
    with pytest.raises(ConfigurationError, match="64m"):
        store_from_url(f"shm:{name}?size=lots")


def test_a_value_larger_than_a_slot_is_refused_by_name(name):
    with SharedMemoryStore(name, SMALL, max_entry_size=256) as store:
        with pytest.raises(ValueTooLarge, match="max_entry_size=256"):
            store.set(b"k", b"x" * 300, 60)
        store.set(b"k", b"x" * 255, 60)
        assert store.get(b"k") == b"x" * 255


def test_a_full_segment_evicts_the_least_recently_used_and_counts(name):
    with SharedMemoryStore(name, SMALL, max_entry_size=128) as store:
        slots = store.describe()["slots"]
        for i in range(slots * 3):
            store.set(b"key-%d" % i, b"v", 60)
        info = store.describe()
        assert info["entries"] <= slots
        assert info["evictions"] >= slots * 3 - slots
        assert store.get(b"key-%d" % (slots * 3 - 1)) == b"v"  # the newest stays


def test_expired_entries_are_never_returned(name):
    with SharedMemoryStore(name, SMALL) as store:
        store.set(b"k", b"v", 0.1)
        time.sleep(0.25)
        assert store.get(b"k") is None
        assert store.describe()["expired"] == 1


def test_counters_are_the_segments_for_every_process(name):
    with SharedMemoryStore(name, SMALL) as store:
        store.set(b"k", b"v", 60)

        def work():
            other = SharedMemoryStore(name, SMALL)
            return other.get(b"k"), other.get(b"absent")

        assert _in_forked_child(work) == (b"v", None)
        info = store.describe()
        assert (info["hits"], info["misses"], info["stores"]) == (1, 1, 1)


def test_another_layout_in_use_is_refused_saying_what_to_do(name):
    with SharedMemoryStore(name, SMALL):
        with pytest.raises(StoreError, match=r"size=262144 .*stop every process"):
            SharedMemoryStore(name, 2 * SMALL)


def test_another_layout_is_rebuilt_when_nobody_uses_it(name):
    with SharedMemoryStore(name, SMALL) as store:
        store.set(b"k", b"v", 60)
    with SharedMemoryStore(name, 2 * SMALL) as store:
        assert store.describe()["size"] == 2 * SMALL
        assert store.get(b"k") is None


def test_left_out_size_and_slot_size_are_the_existing_segments(name):
    """A reader such as ``sesscache stats --store shm:NAME`` opens the segment the workers
    made with ?size=, without naming its size."""
    with SharedMemoryStore(name, 2 * SMALL, max_entry_size=512) as workers:
        workers.set(b"k", b"v", 60)
        reader = store_from_url(f"shm:{name}")
        try:
            assert (reader.size, reader.max_entry_size) == (2 * SMALL, 512)
            assert reader.get(b"k") == b"v"
            assert reader.describe()["stores"] == 1
        finally:
            reader.close()


def test_a_new_segment_without_a_size_gets_the_default(name):
    with SharedMemoryStore(name) as store:
        assert (store.size, store.max_entry_size) == (32 * 2**20, 1536)
        assert os.stat(store.path).st_size == 32 * 2**20


def test_sessions_outlive_every_process_closing_it(name):
    with SharedMemoryStore(name, SMALL) as store:
        store.set(b"k", b"v", 60)
    with SharedMemoryStore(name, SMALL) as store:
        assert store.get(b"k") == b"v"
        assert store.describe()["rebuilds"] == 1


def test_a_too_small_dev_shm_is_an_error_at_open(name):
    # More than the whole tmpfs: refused before a page is taken. (Between what is free and
    # the whole, the C checks the room first: posix_fallocate alone would fill the memory
    # page by page on a tmpfs as large as the memory, and wake the OOM killer.)
    fs = os.statvfs("/dev/shm")
    too_big = fs.f_blocks * fs.f_frsize + 2**30
    with pytest.raises(StoreError, match=r"no room for .* in /dev/shm .*smaller size"):
        SharedMemoryStore(name, too_big)
    assert os.stat(segment_path(name)).st_size == 0  # the space was given back


def _rss_shmem_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1])
    raise AssertionError("no RssShmem in /proc/self/status")


def test_close_gives_the_mapping_back(name):
    """A closed store unmaps its segment (the pages go back once the file is removed too):
    a process that opens and closes stores does not pile up mappings."""
    before = _rss_shmem_kib()
    store = SharedMemoryStore(name, 16 * 2**20)
    for i in range(store.describe()["slots"] * 2):
        store.set(b"key-%d" % i, b"v" * 300, 60)
    filled = _rss_shmem_kib()
    store.close()
    store.unlink()
    assert filled - before > 4 * 1024
    assert _rss_shmem_kib() - before < 1024
    with pytest.raises(StoreError, match="closed"):
        store.get(b"key-1")
    assert store.describe()["entries"] == 0


# --- opening safely ---------------------------------------------------------------------


def test_a_symlink_is_refused(name, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    os.symlink(target, segment_path(name))
    with pytest.raises(StoreError, match="symbolic link"):
        SharedMemoryStore(name, SMALL)
    assert target.read_bytes() == b""


def test_a_pre_created_file_readable_by_others_is_refused(name):
    fd = os.open(segment_path(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.fchmod(fd, 0o644)
    os.close(fd)
    with pytest.raises(StoreError, match="mode 0600"):
        SharedMemoryStore(name, SMALL)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_users_file_is_refused_and_ours_is_closed_to_them(name):
    """A file someone else made first under our name is refused (they could read our
    sessions); our segment cannot be opened by another user."""
    nobody = _nobody_uid()
    with SharedMemoryStore(name, SMALL) as ours:
        ours.set(b"k", b"secret", 60)

        def as_nobody():
            os.setgid(nobody)
            os.setuid(nobody)
            outcome = []
            try:
                os.open(ours.path, os.O_RDONLY)
                outcome.append("opened root's segment")
            except PermissionError:
                outcome.append("denied")
            # nobody makes the file root's store of that name would use... (as a squatter)
            fd = os.open(os.path.join("/dev/shm", f"sesscache-0-{name}-squat"),
                         os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            os.close(fd)
            return outcome

        assert _in_forked_child(as_nobody) == ["denied"]
    squat = f"{name}-squat"
    try:
        with pytest.raises(StoreError, match=f"belongs to uid {nobody}, not to this user"):
            SharedMemoryStore(squat, SMALL)
    finally:
        os.unlink(segment_path(squat))


# --- processes ---------------------------------------------------------------------------


def _read_in_spawned_process(name, size, keys):
    store = SharedMemoryStore(name, size)
    try:
        return [store.get(key) for key in keys]
    finally:
        store.close()


def test_forked_spawned_and_unrelated_processes_share_entries(name):
    with SharedMemoryStore(name, SMALL) as store:
        store.set(b"from-parent", b"1", 60)
        # forked: the parent's store object, inherited
        assert _in_forked_child(lambda: (store.get(b"from-parent"), store.set(b"from-fork", b"2", 60))) == (b"1", None)
        # spawned: a fresh interpreter opening it by name
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            got = pool.apply(_read_in_spawned_process, (name, SMALL, [b"from-parent", b"from-fork"]))
        assert got == [b"1", b"2"]
        # unrelated: another program
        code = (f"from sesscache import SharedMemoryStore\n"
                f"s = SharedMemoryStore({name!r}, {SMALL})\n"
                f"print(s.get(b'from-fork').decode()); s.set(b'from-other', b'3', 60)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "2"
        assert store.get(b"from-other") == b"3"


def test_a_forked_child_closing_leaves_the_parent_attached(name):
    """The shared flock: a child detaching must not make the segment look unused while
    the parent uses it (a third process would rebuild it under the parent)."""
    with SharedMemoryStore(name, SMALL) as store:
        store.set(b"k", b"v", 60)
        assert _in_forked_child(lambda: store.close()) is None
        with pytest.raises(StoreError, match="in use"):
            SharedMemoryStore(name, 2 * SMALL)
        assert store.get(b"k") == b"v"


def test_concurrent_pops_across_processes_have_one_winner(name):
    with SharedMemoryStore(name, SMALL) as store:
        for round_ in range(20):
            store.set(b"once", b"%d" % round_, 60)
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            procs = [ctx.Process(target=lambda: queue.put(store.pop(b"once"))) for _ in range(4)]
            for p in procs:
                p.start()
            got = [queue.get(timeout=30) for _ in procs]
            for p in procs:
                p.join(10)
            assert sorted(got, key=lambda v: v is None) == [b"%d" % round_, None, None, None]


def _writer(name, size, seed):
    """Sets, reads and pops keys at random until killed."""
    store = SharedMemoryStore(name, size, max_entry_size=768)
    rng = random.Random(seed)
    while True:
        key = b"key-%d" % rng.randrange(200)
        if rng.random() < 0.7:
            store.set(key, _value_of(key), 60)
        elif rng.random() < 0.5:
            store.pop(key)
        else:
            store.get(key)


def test_writers_killed_at_random_points_never_hang_nor_corrupt(name):
    """100 writers SIGKILLed at random moments (many while holding a stripe's lock, half-way
    through a write): every later call returns promptly, never a wrong value, and no lock
    is lost (a robust mutex's next owner repairs the stripe)."""
    size = SMALL
    store = SharedMemoryStore(name, size, max_entry_size=768, lock_timeout=0.5)
    rng = random.Random(1)
    slowest = 0.0
    try:
        for round_ in range(100):
            pids = []
            for n in range(2):
                pid = os.fork()
                if pid == 0:
                    try:
                        _writer(name, size, round_ * 2 + n)
                    finally:
                        os._exit(0)
                pids.append(pid)
            time.sleep(rng.uniform(0.005, 0.03))
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            for pid in pids:
                os.waitpid(pid, 0)
            for i in range(200):
                key = b"key-%d" % i
                started = time.monotonic()
                got = store.get(key)
                slowest = max(slowest, time.monotonic() - started)
                assert got is None or got == _value_of(key), f"a wrong value for {key!r}"
        store.set(b"after", b"ok", 60)
        assert store.get(b"after") == b"ok"
        info = store.describe()
        assert info["lock_timeouts"] == 0, info
        assert slowest < 0.4, f"a call took {slowest:.3f} s"
    finally:
        store.close()


def test_a_stopped_lock_holder_costs_a_bounded_wait(name):
    store = SharedMemoryStore(name, SMALL, lock_timeout=0.05)
    try:
        store.set(b"k", b"v", 60)
        pid = os.fork()
        if pid == 0:
            try:
                from sesscache._binding import lib

                lib.sc_shm_hold_for_test(store._shm, b"k", 1, 3600.0)
            finally:
                os._exit(0)
        time.sleep(0.2)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert store.get(b"k") is None  # a miss, counted, after the deadline
            waited = time.monotonic() - started
            assert 0.04 <= waited < 0.5, waited
            assert store.describe()["lock_timeouts"] >= 1
            with pytest.raises(StoreError, match="lock_timeout"):
                store.set(b"k", b"w", 60)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        # the holder died holding it: the next locker repairs the stripe, nothing is lost
        assert store.get(b"k") == b"v"
        assert store.describe()["repairs"] == 1
    finally:
        store.close()


def test_a_fuzzed_segment_is_repaired_or_rebuilt_never_a_crash(name):
    """Random bytes written over the file while nobody uses it: the next process to open it
    rebuilds it (a damaged header) or drops the damaged entries (checksums), never crashes,
    never returns a wrong value."""
    size = SMALL
    keys = [b"key-%d" % i for i in range(100)]
    with SharedMemoryStore(name, size) as store:
        for key in keys:
            store.set(key, _value_of(key), 600)
    rng = random.Random(7)
    path = segment_path(name)
    survived = []
    for round_ in range(40):
        header_round = round_ % 4 == 0
        with open(path, "r+b") as f:
            for _ in range(rng.choice([1, 8, 64])):
                at = rng.randrange(96) if header_round else rng.randrange(4096, size)
                f.seek(at)
                f.write(os.urandom(rng.randrange(1, 32)))

        def check():
            s = SharedMemoryStore(name, size)
            wrong = [k for k in keys if s.get(k) not in (None, _value_of(k))]
            kept = sum(s.get(k) is not None for k in keys[10:])
            for key in keys[:10]:
                s.set(key, _value_of(key), 600)
            found = sum(s.get(k) == _value_of(k) for k in keys[:10])
            s.close()
            return wrong, kept, found

        result = _in_forked_child(check)
        assert isinstance(result, tuple), result
        wrong, kept, found = result
        assert wrong == [] and found == 10
        if header_round:
            assert kept == 0, "a damaged header was not rebuilt"
            with SharedMemoryStore(name, size) as refill:
                for key in keys:
                    refill.set(key, _value_of(key), 600)
        else:
            survived.append(kept)
    assert max(survived) > 0  # damaged entries dropped, the others kept


@pytest.mark.slow
def test_a_million_sessions_through_a_small_segment_keep_memory_flat(name):
    import resource

    with SharedMemoryStore(name, 4 * 2**20) as store:
        value = b"s" * 300
        rss = []
        for i in range(1_000_000):
            store.set(b"sc1:session-%d" % i, value, 300)
            if i % 100_000 == 99_999:
                rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        info = store.describe()
    assert info["evictions"] >= 1_000_000 - info["slots"]
    assert rss[-1] - rss[1] < 8 * 1024, rss  # KiB: flat after the segment is touched


# --- real handshakes -----------------------------------------------------------------------


def _serve(name, certs, version, connections, report):
    """A TLS server in its own process with a SessionCache over shm:NAME: answers each
    connection with whether it resumed."""
    ctx = StdlibStack(certs).server_context(version)
    cache = SessionCache(SharedMemoryStore(name, SMALL))
    cache.attach(ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    report.put(listener.getsockname()[1])
    for _ in range(connections):
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)
            tls.sendall(b"1" if tls.session_reused else b"0")
    listener.close()


def _connect(ctx, port, session=None):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"?")
            reused = tls.recv(1) == b"1"
            return reused, _stdlib_session(tls._sslobj)  # CPython's leak per read counted


def _start(kind, name, certs, version, connections):
    if kind == "subprocess":
        code = ("import sys, queue\nfrom tests.stores.test_store_shm import _serve\n"
                "from tests.conftest import Certs\n"
                "class Q:\n    def put(self, port): print(port, flush=True)\n"
                f"_serve({name!r}, Certs(*sys.argv[1:4]), {version!r}, {connections}, Q())\n")
        proc = subprocess.Popen([sys.executable, "-c", code, certs.ca_pem, certs.server_pem, certs.other_server_pem], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        return proc, int(proc.stdout.readline())
    ctx = multiprocessing.get_context(kind)
    report = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(name, certs, version, connections, report))
    proc.start()
    return proc, report.get(timeout=60)


def _wait(proc):
    if isinstance(proc, subprocess.Popen):
        assert proc.wait(30) == 0
    else:
        proc.join(30)
        assert proc.exitcode == 0


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_a_session_made_in_one_process_resumes_in_forked_spawned_and_unrelated_ones(certs, name, version):
    client = StdlibStack(certs).client_context()
    first, port = _start("fork", name, certs, version, 1)
    reused, session = _connect(client, port)
    _wait(first)
    assert not reused
    for kind in ("fork", "spawn", "subprocess"):
        proc, port = _start(kind, name, certs, version, 1)
        reused, newer = _connect(client, port, session)
        _wait(proc)
        assert reused, f"a {kind} process did not resume the session"
        if version == TLS13:
            session = newer  # TLS 1.3: each resumption hands out a new session
