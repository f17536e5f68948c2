"""The Ray engine (models.distributed) on one local cluster of two CPUs for the module: results bit-identical to
a local run, a worker killed mid-task retried, each chunk delivered once, a cluster that goes away, Ctrl+C, and
no Ray process left after the module. The tasks live here and run in Ray's workers, which import this module."""

import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from pathlib import Path

import pytest
import torch

from models import distributed as dist
from models.directions import params_of, random_direction
from models.landscape import grid_mlp_points
from models.nets import MLP, MLPSpec, loss_for, make_data

ray = pytest.importorskip("ray", reason="Ray is not installed: the distributed extra is missing "
                                        "(pip install 'losslab[distributed]'; the test command installs it)")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
#: every process of the module's clusters inherits this variable, so that a leftover can be found by it
MARKER = "LOSSLAB_RAY_TEST"
#: bound on a wait for something that must happen (a hang fails the test instead of stalling it)
WAIT_S = 60.0


def wait_for(condition, what: str, timeout: float = WAIT_S):
    """Poll ``condition`` until it is true (then return its value), failing the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def marked_processes(tag: str) -> dict[int, str]:
    """pid -> name of the live (not zombie) processes whose environment holds MARKER=tag."""
    found = {}
    needle = f"{MARKER}={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rindex(b")") + 2:][:1] == b"Z":
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if needle in env:
                with open(f"/proc/{entry}/comm") as f:
                    found[int(entry)] = f.read().strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2:][:1] == b"Z"


@pytest.fixture(scope="module")
def cluster_home(tmp_path_factory):
    """The module's Ray folder ($RAY_TMPDIR) and process marker; after the module: the cluster stopped, no process
    of it left (workers, raylets, GCS, agents), its folder removed."""
    tag = uuid.uuid4().hex
    folder = tmp_path_factory.mktemp("ray")
    (folder / "ray").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MARKER, tag)
        mp.setenv("RAY_TMPDIR", str(folder))  # Ray's sockets, logs and cluster address file: not /tmp/ray
        yield {"tag": tag, "folder": str(folder)}
        dist.disconnect()
    left = {}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        left = marked_processes(tag)
        if not left:
            break
        time.sleep(0.05)
    shutil.rmtree(folder, ignore_errors=True)
    if left:
        pytest.fail(f"Ray processes left after the module: {left}")


@pytest.fixture
def cluster(cluster_home):
    """The module's local cluster (two CPUs), started again when a test stopped it."""
    if not ray.is_initialized():
        info = dist.connect(None, num_cpus=2)
        assert (info.nodes, info.cpus, info.local) == (1, 2, True)
    return cluster_home


# --- tasks (run in Ray's workers) ---

def mlp_losses(shared: dict, payload) -> torch.Tensor:
    """The losses of the shared MLP at the chunk's points (a, b), by the engine's batched grid evaluation."""
    a, b = payload
    s = shared
    return grid_mlp_points(s["mlp"], s["x"], s["y"], loss_for(s["y"]), s["center"], s["d1"], s["d2"], a, b,
                           chunk=2)


def wait_for_flag(shared: dict, payload) -> int:
    """Write this worker's pid to the chunk's pid file, wait for the flag file, return the chunk id squared."""
    chunk_id = payload
    folder = Path(shared["folder"])
    with open(folder / f"pids-{chunk_id}", "a") as f:
        f.write(f"{os.getpid()}\n")
    if chunk_id not in shared.get("free", ()):
        while not (folder / "flag").exists():
            time.sleep(0.01)
    if chunk_id in shared.get("fail", ()):
        raise ValueError(f"chunk {chunk_id} refuses")
    return chunk_id * chunk_id


#: in a worker: how many times each Counted probe was unpickled there, by its token
UNPICKLED: dict = {}


def _unpickled(token: str) -> "Counted":
    UNPICKLED[token] = UNPICKLED.get(token, 0) + 1
    return Counted(token)


class Counted:
    """Counts its unpickling in the process that unpickles it."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __reduce__(self):
        return _unpickled, (self.token,)


def unpickle_count(shared, payload) -> tuple[int, int]:
    """This worker's pid and how many times it unpickled the run's probe."""
    return os.getpid(), UNPICKLED[shared["probe"].token]


def device_of(shared, payload) -> str:
    return dist.task_device()


def pids_of(folder: Path, chunk_id: int) -> list[int]:
    path = folder / f"pids-{chunk_id}"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


class Recorder:
    """on_done and progress of a run: every call, in order."""

    def __init__(self) -> None:
        self.done: list = []
        self.progress: list = []

    def on_done(self, chunk_id, result) -> None:
        self.done.append((chunk_id, result))

    def on_progress(self, done: int, total: int) -> None:
        self.progress.append((done, total))


def tiny_problem():
    torch.manual_seed(0)
    x, y = make_data("spirals", n=40, seed=1)
    mlp = MLP(MLPSpec(hidden=(6, 5)), seed=2)
    shared = {"mlp": mlp, "x": x, "y": y, "center": params_of(mlp), "d1": random_direction(mlp, 3),
              "d2": random_direction(mlp, 4)}
    g = torch.Generator().manual_seed(5)
    chunks = {k: ((torch.rand(3, generator=g) - 0.5), (torch.rand(3, generator=g) - 0.5)) for k in range(6)}
    return shared, chunks


def direct_loss(shared: dict, a: float, b: float) -> float:
    """The loss at one point the plain way: the weights set, the module called."""
    mlp = MLP(MLPSpec(hidden=(6, 5)), seed=0)
    with torch.no_grad():
        for p, c, u, v in zip(mlp.parameters(), shared["center"], shared["d1"], shared["d2"]):
            p.copy_(c + a * u + b * v)
        return float(loss_for(shared["y"])(mlp(shared["x"]), shared["y"]))


def test_two_workers_give_the_local_results_bit_identical(cluster):
    shared, chunks = tiny_problem()
    rec = Recorder()
    dist.run_chunks(chunks, mlp_losses, shared, rec.on_done, progress=rec.on_progress)
    assert sorted(cid for cid, _ in rec.done) == sorted(chunks)
    assert rec.progress == [(k, len(chunks)) for k in range(1, len(chunks) + 1)]
    for chunk_id, result in rec.done:
        local = mlp_losses(shared, chunks[chunk_id])
        assert result.dtype == local.dtype and torch.equal(result, local), chunk_id
        a, b = chunks[chunk_id]
        for k in range(3):
            assert math.isclose(float(result[k]), direct_loss(shared, float(a[k]), float(b[k])), rel_tol=1e-5)


def test_each_worker_unpickles_the_shared_objects_once(cluster):
    rec = Recorder()
    dist.run_chunks({k: k for k in range(8)}, unpickle_count, {"probe": Counted(uuid.uuid4().hex)}, rec.on_done)
    assert len(rec.done) == 8
    assert all(count == 1 for _, (pid, count) in rec.done)  # not once a chunk


def test_a_worker_killed_mid_task_is_retried(cluster, tmp_path):
    chunks = {k: k for k in range(4)}
    killed = {}

    def kill_one():
        try:  # both CPUs' tasks are waiting on the flag: kill the first, once it is gone let every task go
            running = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(
                [k for k in chunks if pids_of(tmp_path, k)]), "two tasks running")
            killed["chunk"] = running[0]
            killed["pid"] = pids_of(tmp_path, running[0])[0]
            os.kill(killed["pid"], signal.SIGKILL)
            wait_for(lambda: gone(killed["pid"]), "the killed worker to end")
        except BaseException as exc:  # reported by the test below
            killed["error"] = exc
        finally:
            (tmp_path / "flag").touch()

    killer = threading.Thread(target=kill_one)
    killer.start()
    rec = Recorder()
    try:
        dist.run_chunks(chunks, wait_for_flag, {"folder": str(tmp_path)}, rec.on_done, max_retries=3)
    finally:
        killer.join()
    assert "error" not in killed, killed
    assert sorted(rec.done) == [(k, k * k) for k in chunks]  # each chunk once, with its result
    again = pids_of(tmp_path, killed["chunk"])
    assert len(again) == 2 and again[0] == killed["pid"] and again[1] != killed["pid"]  # run again elsewhere
    assert all(len(pids_of(tmp_path, k)) == 1 for k in chunks if k != killed["chunk"])


def test_a_chunk_delivered_twice_reaches_on_done_once_and_the_error_names_the_chunks():
    rec = Recorder()
    deliveries = dist._Deliveries([4, 5], rec.on_done, rec.on_progress)
    assert deliveries.deliver(4, "first")
    assert not deliveries.deliver(4, "again")
    assert rec.done == [(4, "first")] and rec.progress == [(1, 2)]
    assert deliveries.missing() == [5]

    def broken(chunk_id, result):
        raise OSError("disk full")

    many = dist._Deliveries(range(10), rec.on_done, None)
    for k in (0, 1, 2, 5, 7, 8):
        many.deliver(k, k)
    err = many.error("the cluster went away")
    assert str(err) == ("the cluster went away; 6 of 10 chunks delivered (0-2, 5, 7-8), 4 not (3-4, 6, 9)")
    assert (err.delivered, err.missing) == ([0, 1, 2, 5, 7, 8], [3, 4, 6, 9])

    failing = dist._Deliveries([1], broken, None)
    with pytest.raises(OSError):
        failing.deliver(1, "x")
    assert failing.missing() == [1]  # a chunk whose on_done failed is not counted as delivered


def test_a_task_error_is_raised_as_it_is_after_the_finished_chunks(cluster, tmp_path):
    (tmp_path / "flag").touch()
    rec = Recorder()
    with pytest.raises(ValueError, match="^chunk 2 refuses$"):
        dist.run_chunks({k: k for k in range(3)}, wait_for_flag, {"folder": str(tmp_path), "fail": (2,)},
                        rec.on_done)
    assert all(result == cid * cid for cid, result in rec.done) and 2 not in dict(rec.done)


def test_ctrl_c_cancels_the_tasks_not_delivered(cluster, tmp_path):
    chunks = {k: k for k in range(4)}  # all wait for a flag never set
    sent = {}

    def ctrl_c():
        try:
            sent["running"] = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(
                [k for k in chunks if pids_of(tmp_path, k)]), "two tasks running")
        except BaseException as exc:  # reported by the test below
            sent["error"] = exc
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl+C in a terminal: KeyboardInterrupt in the main thread

    interrupter = threading.Thread(target=ctrl_c)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            dist.run_chunks(chunks, wait_for_flag, {"folder": str(tmp_path)}, print)
    finally:
        interrupter.join()
    assert "error" not in sent, sent
    waiting = [pid for k in chunks for pid in pids_of(tmp_path, k)]
    assert len(waiting) >= 2
    wait_for(lambda: all(gone(pid) for pid in waiting), "the cancelled tasks' workers to end")


def test_the_cluster_going_away_leaves_the_finished_chunks_delivered(cluster, tmp_path):
    """A cluster of two nodes on this machine, joined by its address: the driver's (no CPUs) and one that runs
    the tasks, whose processes are killed once a chunk is delivered. (The driver's own node cannot be the one
    that goes: Ray ends a driver whose local raylet or GCS dies, so nothing of it could answer.)"""
    from ray.cluster_utils import Cluster

    dist.disconnect()  # the module's cluster; the next test starts it again
    nodes = Cluster()
    try:
        nodes.add_node(num_cpus=0, include_dashboard=False, _system_config={  # a dead node found in seconds
            "health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3})
        worker = nodes.add_node(num_cpus=3)  # every chunk runs at once, whatever order Ray starts them in
        info = dist.connect(nodes.address)
        assert (info.address, info.nodes, info.cpus, info.local) == (nodes.address, 2, 3, False)
        chunks = {k: k for k in range(3)}
        shared = {"folder": str(tmp_path), "free": (0,)}  # one chunk finishes, two never do
        rec = Recorder()
        killed = {}

        def kill_node():
            try:
                wait_for(lambda: len(rec.done) == 1 and all(pids_of(tmp_path, k) for k in chunks),
                         "the free chunk delivered, the others running")
            except BaseException as exc:  # reported by the test below
                killed["error"] = exc
            finally:  # the run ends either way
                nodes.remove_node(worker, allow_graceful=False)

        killer = threading.Thread(target=kill_node)
        killer.start()
        try:
            with pytest.raises(dist.DistributedError) as err:
                dist.run_chunks(chunks, wait_for_flag, shared, rec.on_done)
        finally:
            killer.join()
        assert "error" not in killed, killed
        assert rec.done == [(0, 0)]
        assert (err.value.delivered, err.value.missing) == ([0], [1, 2])
        message = str(err.value)
        assert "\n" not in message and "1 of 3 chunks delivered (0), 2 not (1-2)" in message
    finally:
        dist.disconnect()
        nodes.shutdown()


def test_connect_says_when_an_address_does_not_answer(cluster_home):
    dist.disconnect()  # ray.init would retry an unreachable address forever: connect tries it first
    with pytest.raises(dist.DistributedError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        dist.connect("127.0.0.1:1")
    with pytest.raises(dist.DistributedError, match="is not a Ray address"):
        dist.connect("no address")
    with pytest.raises(dist.DistributedError, match="num_cpus is for a local Ray"):
        dist.connect("127.0.0.1:1", num_cpus=2)
    with pytest.raises(dist.DistributedError, match="not connected to a Ray cluster"):
        dist.run_chunks({0: 1}, pow, 2, print)


def test_task_overhead_is_measured_on_the_connected_cluster(cluster):
    with pytest.raises(dist.DistributedError, match="already connected"):
        dist.connect(None)
    ms = dist.ray_task_overhead_ms(n=3)
    assert math.isfinite(ms) and ms > 0
    assert ray.is_initialized()  # the module's cluster, not one of its own that it stopped
    with pytest.raises(ValueError, match="n must be a whole number"):
        dist.ray_task_overhead_ms(n=0)


def test_tasks_without_a_gpu_are_told_cpu(cluster):
    rec = Recorder()
    dist.run_chunks({0: None, 1: None}, device_of, None, rec.on_done, gpus="none")
    assert sorted(rec.done) == [(0, "cpu"), (1, "cpu")]


def test_run_options_are_checked_before_anything_runs(cluster):
    for kw, words in (({"torch_threads": 0}, "torch_threads must be"), ({"gpus": "all"}, "gpus must be one of"),
                      ({"max_retries": -1}, "max_retries must be")):
        with pytest.raises(ValueError, match=words):
            dist.run_chunks({0: 1}, pow, 2, print, **kw)
    with pytest.raises(ValueError, match="chunk ids must be whole numbers"):
        dist.run_chunks({"a": 1}, pow, 2, print)
    with pytest.raises(dist.DistributedError, match="no node of the Ray cluster has the 3 CPUs"):
        dist.run_chunks({0: 1}, pow, 2, print, torch_threads=3)


def test_ray_missing_names_what_to_install(monkeypatch):
    assert dist.ray_missing() is None
    with open(ROOT / "pyproject.toml", "rb") as f:
        pinned = tomllib.load(f)["project"]["optional-dependencies"]["distributed"]
    assert f"ray=={dist.RAY_VERSION}" in pinned
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does without the extra
    message = dist.ray_missing()
    assert message.startswith("the distributed engine needs Ray, which does not import here")
    assert f"pip install 'losslab[distributed]' (or pip install ray=={dist.RAY_VERSION})" in message
    with pytest.raises(dist.DistributedError) as err:
        dist.run_chunks({0: 1}, pow, 2, print)
    assert str(err.value) == message


def test_importing_the_module_loads_neither_ray_nor_torch():
    code = ("import sys, models.distributed\n"
            "bad = [m for m in ('ray', 'torch', 'PySide6') if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
