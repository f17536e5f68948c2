"""Chunks of work as Ray tasks on one machine or a cluster, for ``losslab surface --ray`` (issue 18).

The driver keeps the file: ``run_chunks`` hands each finished chunk to ``on_done`` on the driver, in
completion order, each chunk id exactly once (Ray delivers at least once), so one writer can save every chunk
as it arrives and a run cut short at any point leaves a valid, resumable file. What every task needs (model,
directions, data) goes into Ray's object store once and the tasks get a reference to it. A worker process that
dies mid-task is rerun by Ray (``max_retries``); a cluster that goes away ends the run with DistributedError
naming the chunks delivered and those not, after every chunk that had finished has gone to ``on_done``. One
exception, Ray's: when the driver's own node dies (the local Ray's raylet, or the head's GCS) Ray ends the
driver process itself (measured with 2.60: exit status 1, no exception), so nothing here can say so; what was
delivered before is in the file, and the job resumes from it.

Ray is an optional extra (``pip install 'losslab[distributed]'``): it is imported inside the functions only, so
importing this module costs nothing and the app and the tests stay lean without it (``ray_missing`` says what
to install). Tasks run Python functions of the driver's code: on a cluster every node needs losslab (and its
torch) installed, as the driver has it. No Qt here.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .limits import shown_text

#: the Ray the distributed extra pins (pyproject.toml), named in the message when Ray is missing
RAY_VERSION = "2.60.0"
#: how long ``connect`` waits for a cluster's address to answer: ray.init itself retries an unreachable address
#: forever (measured with ray 2.60), so the address is tried first
CONNECT_TIMEOUT_S = 5.0
#: while no chunk finishes, ``run_chunks`` looks this often (seconds) whether a live node can still run them
LIVENESS_S = 2.0
#: tasks run before ``ray_task_overhead_ms`` starts timing (worker start-up, torch's import)
OVERHEAD_WARMUP = 3
#: ``gpus`` choices of ``run_chunks``
GPU_CHOICES = ("auto", "none")
#: at most this many characters of chunk ids in a DistributedError's message
MAX_IDS_SHOWN = 120


#: the temporary folder of the local Ray that ``connect`` started (removed by ``disconnect``)
_OWN_TEMP: list[str] = []
#: that folder's name starts so; the file in it names the driver's pid (a folder whose driver is gone is stale)
TEMP_PREFIX, OWNER_FILE = "losslab-ray-", "driver.pid"


def _remove_stale_folders(base: str) -> None:
    """The folders of local Rays whose driver was killed (SIGKILL leaves no time to remove them): removed when
    the next local Ray starts. A folder without a readable driver pid is not ours to judge and stays."""
    try:
        names = [n for n in os.listdir(base) if n.startswith(TEMP_PREFIX)]
    except OSError:
        return
    for name in names:
        folder = os.path.join(base, name)
        try:
            with open(os.path.join(folder, OWNER_FILE)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class DistributedError(RuntimeError):
    """The distributed engine cannot run or finish: Ray missing, a cluster not reachable or gone. After a run
    that ended early, ``delivered`` and ``missing`` are the chunk ids that did and did not reach ``on_done``."""

    def __init__(self, message: str, delivered: list | None = None, missing: list | None = None) -> None:
        super().__init__(message)
        self.delivered = list(delivered or [])
        self.missing = list(missing or [])


@dataclass(frozen=True)
class Cluster:
    """What ``connect`` found: the cluster's address (its GCS, as ``ray start --address`` takes it), its live
    nodes and their CPUs and GPUs, and whether this process started it."""

    address: str
    nodes: int
    cpus: int
    gpus: int
    local: bool


def _whole(v, least: int | None = None) -> bool:
    """``v`` is an int (not a bool), at least ``least`` when given."""
    return isinstance(v, int) and not isinstance(v, bool) and (least is None or v >= least)


def ray_missing() -> str | None:
    """None when Ray imports; else the message that says what to install."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return (f"the distributed engine needs Ray, which does not import here ({exc}): "
                f"pip install 'losslab[distributed]' (or pip install ray=={RAY_VERSION})")
    return None


def _ray():
    """The ray module, or DistributedError saying what to install."""
    missing = ray_missing()
    if missing:
        raise DistributedError(missing)
    import ray

    return ray


def _probe(address: str) -> str:
    """``address`` ('auto' or HOST:PORT) as the HOST:PORT of a cluster that answers, else DistributedError."""
    # ray's own resolution of 'auto' (RAY_ADDRESS, then the cluster `ray start` left on this machine) and of
    # HOST:PORT; a private function, hence the pinned version
    from ray._private.services import canonicalize_bootstrap_address

    try:
        host_port = canonicalize_bootstrap_address(address)
    except ConnectionError:
        raise DistributedError("no running Ray cluster found on this machine (address auto): start one with "
                               "`ray start --head`, or give the head node's HOST:PORT") from None
    except ValueError:
        raise DistributedError(f"'{shown_text(address)}' is not a Ray address: give the head node's HOST:PORT "
                               "(`ray start --head` prints it) or auto") from None
    if host_port is None:  # 'local'
        raise DistributedError("give the head node's HOST:PORT or auto; without an address a local Ray starts")
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DistributedError(f"cannot reach the Ray cluster at {shown_text(address)} ({host_port}: {why}): is "
                               "`ray start --head` running there and its port open to this machine?") from None
    return host_port


def connect(address: str | None, num_cpus: int | None = None) -> Cluster:
    """Start a local Ray (``address`` None: ``num_cpus`` CPUs, all of this machine's by default) or join the
    cluster at ``address`` ('auto': the one started on this machine; else its head's HOST:PORT). No dashboard,
    no usage statistics, only Ray's errors logged, workers' output kept in Ray's log files (not mixed into the
    driver's progress bar). A local Ray keeps its sockets and logs in a folder of its own under the temporary
    directory, removed by ``disconnect`` (or in $RAY_TMPDIR where that is set, which is then left as it is).
    DistributedError when Ray is missing, already connected, or the address does not answer."""
    ray = _ray()
    if ray.is_initialized():
        raise DistributedError("already connected to a Ray cluster: disconnect() first")
    if address is not None and num_cpus is not None:
        raise DistributedError("num_cpus is for a local Ray: a cluster's nodes declare their CPUs with "
                               "`ray start --num-cpus N`")
    if num_cpus is not None and not _whole(num_cpus, 1):
        raise DistributedError(f"num_cpus must be a whole number of at least 1, not {num_cpus!r}")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # read by ray.init; the workers inherit it
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        # 'local' even where RAY_ADDRESS is set: no address means this machine's own Ray
        own = None
        if not os.environ.get("RAY_TMPDIR"):  # (short: Ray's socket paths must fit in 107 characters)
            base = "/tmp" if os.path.isdir("/tmp") else None
            _remove_stale_folders(base or tempfile.gettempdir())
            own = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base)
            with open(os.path.join(own, OWNER_FILE), "w") as f:
                f.write(str(os.getpid()))
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=own, **quiet)
        except BaseException:
            if own is not None:
                shutil.rmtree(own, ignore_errors=True)
            raise
        _OWN_TEMP[:] = [own] if own else []
    else:
        from ray.exceptions import RayError

        host_port = _probe(address)
        try:
            ray.init(address=host_port, **quiet)
        except (RayError, ConnectionError, RuntimeError, ValueError) as exc:  # a version or token mismatch
            raise DistributedError(f"cannot join the Ray cluster at {host_port}: {_one_line(exc)}") from exc
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return Cluster(address=ray.get_runtime_context().gcs_address, nodes=len(nodes),
                   cpus=int(sum(n["Resources"].get("CPU", 0) for n in nodes)),
                   gpus=int(sum(n["Resources"].get("GPU", 0) for n in nodes)), local=address is None)


def disconnect() -> None:
    """Leave the cluster (a local Ray stops, its processes end); nothing when not connected."""
    ray = sys.modules.get("ray")  # never imported: never connected
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    for folder in _OWN_TEMP:  # the local Ray's sockets and logs
        shutil.rmtree(folder, ignore_errors=True)
    _OWN_TEMP.clear()


def task_device() -> str:
    """Inside a task of ``run_chunks``: 'cuda' when Ray gave the task a GPU (it is the only one the task sees),
    else 'cpu'."""
    import ray

    return "cuda" if ray.get_gpu_ids() else "cpu"


#: in a worker process: the shared object of the run it last worked for, by its object id (``_worker_shared``)
_WORKER_SHARED: dict = {}


def _worker_shared(ref):
    """A run's ``shared`` in a worker, read from the object store once per worker process, not once per chunk
    (measured here: a 50 MB tensor took 80 ms a chunk to unpickle); the previous run's is let go."""
    key = ref.hex()
    if key not in _WORKER_SHARED:
        import ray

        _WORKER_SHARED.clear()
        _WORKER_SHARED[key] = ray.get(ref)
    return _WORKER_SHARED[key]


def _run_chunk(task: Callable, shared_box: list, payload, torch_threads: int):
    """One chunk in a worker: torch on ``torch_threads`` threads (the CPUs the task holds), then the task.
    ``shared_box`` is [the shared object's reference]: in a list, so that Ray does not unpickle it per task."""
    import torch

    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    return task(_worker_shared(shared_box[0]), payload)


def _empty_chunk(shared, payload) -> None:
    """The chunk of ``ray_task_overhead_ms``: no work, so its round trip is Ray's cost alone."""


def _remote(ray, torch_threads: int, use_gpu: bool, max_retries: int):
    """``_run_chunk`` as a Ray task holding ``torch_threads`` CPUs (and one GPU), rerun up to ``max_retries``
    times when its worker process dies; an exception raised by the task itself is not retried."""
    return ray.remote(_run_chunk).options(num_cpus=torch_threads, num_gpus=1 if use_gpu else 0,
                                          max_retries=max_retries, retry_exceptions=False)


def _id_ranges(ids) -> str:
    """Chunk ids as sorted runs ('0-3, 7, 9-12'), cut to MAX_IDS_SHOWN characters; 'none' for no ids."""
    ids = sorted(ids)
    if not ids:
        return "none"
    runs, start = [], ids[0]
    for prev, cur in zip(ids, ids[1:]):
        if cur != prev + 1:
            runs.append((start, prev))
            start = cur
    runs.append((start, ids[-1]))
    return shown_text(", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs), MAX_IDS_SHOWN)


class _Deliveries:
    """The chunks handed to ``on_done``: each id once (a second delivery of an id is ignored: Ray delivers at
    least once), ``progress(done, total)`` after each."""

    def __init__(self, ids, on_done: Callable, progress: Callable | None) -> None:
        self.ids = set(ids)
        self.on_done = on_done
        self.progress = progress
        self.done: set = set()

    def deliver(self, chunk_id, result) -> bool:
        """Hand ``result`` to on_done unless ``chunk_id`` was delivered already; True when it was handed."""
        if chunk_id in self.done:
            return False
        self.on_done(chunk_id, result)
        self.done.add(chunk_id)  # only once on_done has it: a chunk whose on_done raised is not delivered
        if self.progress is not None:
            self.progress(len(self.done), len(self.ids))
        return True

    def missing(self) -> list:
        return sorted(self.ids - self.done)

    def error(self, why: str) -> DistributedError:
        done, missing = sorted(self.done), self.missing()
        return DistributedError(f"{why}; {len(done)} of {len(self.ids)} chunks delivered ({_id_ranges(done)}), "
                                f"{len(missing)} not ({_id_ranges(missing)})", done, missing)


def _one_line(exc: BaseException) -> str:
    """An exception as one short line (Ray's messages run to many lines): its type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {shown_text(text[0], 300)}" if text else type(exc).__name__


def _cancel(ray, pending: dict) -> None:
    """Cancel the tasks not delivered (their workers are stopped); a cluster already gone has nothing to cancel."""
    from ray.exceptions import RayError

    for ref in pending:
        try:
            ray.cancel(ref, force=True)
        except (RayError, ConnectionError, ValueError):
            pass
    pending.clear()


def _salvage(ray, pending: dict, deliveries: _Deliveries) -> None:
    """After a failure: deliver every task that had finished (the file keeps them), then cancel the rest."""
    from ray.exceptions import RayError

    try:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0) if pending else ([], [])
    except (RayError, ConnectionError):
        ready = []
    for ref in ready:
        chunk_id = pending.pop(ref)
        try:
            result = ray.get(ref, timeout=0)
        except (RayError, ConnectionError):
            continue
        deliveries.deliver(chunk_id, result)
    _cancel(ray, pending)


def _check_run_options(chunks, torch_threads, gpus, max_retries) -> None:
    odd = [k for k in chunks if not _whole(k)]
    if odd:
        raise ValueError(f"chunk ids must be whole numbers, not {shown_text(repr(odd[0]))}")
    if not _whole(torch_threads, 1):
        raise ValueError(f"torch_threads must be a whole number of at least 1, not {torch_threads!r}")
    if gpus not in GPU_CHOICES:
        raise ValueError(f"gpus must be one of {', '.join(GPU_CHOICES)}, not {gpus!r}")
    if not _whole(max_retries, 0):
        raise ValueError(f"max_retries must be a whole number of at least 0, not {max_retries!r}")


def _live_nodes(ray) -> list[dict]:
    """The resources (CPU, GPU, ...) of each live node of the cluster."""
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _fits(nodes: list[dict], torch_threads: int, use_gpu: bool) -> bool:
    """Whether one of ``nodes`` can run a task of ``torch_threads`` CPUs (and a GPU)."""
    return any(r.get("CPU", 0) >= torch_threads and (r.get("GPU", 0) >= 1 or not use_gpu) for r in nodes)


def _placement(ray, torch_threads: int, gpus: str) -> bool:
    """Whether tasks take a GPU (gpus 'auto' and a live node has one); DistributedError when no live node has
    the CPUs a task asks for, which Ray would leave waiting forever."""
    nodes = _live_nodes(ray)
    use_gpu = gpus == "auto" and any(r.get("GPU", 0) >= 1 for r in nodes)
    if not _fits(nodes, torch_threads, use_gpu):
        most = max((int(r.get("CPU", 0)) for r in nodes), default=0)
        raise DistributedError(f"no node of the Ray cluster has the {torch_threads} CPUs a task of {torch_threads} "
                               f"torch threads holds (the largest has {most}): use fewer torch threads")
    return use_gpu


def run_chunks(chunks: Mapping[int, object], task: Callable, shared, on_done: Callable, *,
               torch_threads: int = 1, gpus: str = "auto", max_retries: int = 3,
               progress: Callable | None = None) -> None:
    """Run ``task(shared, payload)`` for every ``chunk_id: payload`` of ``chunks`` as Ray tasks on the connected
    cluster and call ``on_done(chunk_id, result)`` here, on the driver, as each finishes (completion order), each
    chunk id exactly once; ``progress(done, total)`` after each.

    ``shared`` (model, directions, data: objects of our own code, picklable) and ``task`` go into the object
    store once; the tasks get references, and each worker process unpickles ``shared`` once for all the chunks
    it runs, so ``task`` must not change it. A task holds one GPU where the cluster has GPUs and ``gpus`` is
    'auto' ('none': CPUs only), and ``torch_threads`` CPUs, torch running that many threads. A worker process
    that dies mid-task is rerun up to ``max_retries`` times. When the cluster goes away (a worker dies beyond
    its retries, a node dies, no live node is left that can run the chunks left) the chunks that had finished go
    to on_done, the rest are cancelled, and DistributedError says which chunks were delivered and which were
    not. An exception raised by ``task`` itself ends the run the same way and is raised as it is.
    KeyboardInterrupt (and an exception from on_done or progress) cancels the tasks not delivered and is raised.
    """
    _check_run_options(chunks, torch_threads, gpus, max_retries)
    ray = _ray()
    if not ray.is_initialized():
        raise DistributedError("not connected to a Ray cluster: connect() first")
    from ray.exceptions import RayError, RayTaskError

    deliveries = _Deliveries(chunks, on_done, progress)
    if not chunks:
        return
    pending: dict = {}
    try:
        try:
            use_gpu = _placement(ray, torch_threads, gpus)
            remote = _remote(ray, torch_threads, use_gpu, max_retries)
            task_ref, shared_ref = ray.put(task), ray.put(shared)
            for chunk_id, payload in chunks.items():
                pending[remote.remote(task_ref, [shared_ref], payload, torch_threads)] = chunk_id
        except (RayError, ConnectionError) as exc:
            _cancel(ray, pending)
            raise deliveries.error(f"the Ray cluster did not take the tasks ({_one_line(exc)})") from exc
        while pending:
            chunk_id = None
            try:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=LIVENESS_S)
                if not ready:  # Ray waits forever for a node to run the tasks: say so when none is left
                    if not _fits(_live_nodes(ray), torch_threads, use_gpu):
                        _salvage(ray, pending, deliveries)
                        raise deliveries.error("no live node of the Ray cluster can run the chunks left (the "
                                               "nodes that could have left the cluster)")
                    continue
                chunk_id = pending.pop(ready[0])
                result = ray.get(ready[0])
            except RayTaskError as exc:  # the task raised: its own error, as a local run would raise it
                _salvage(ray, pending, deliveries)
                cause = exc.cause if isinstance(exc.cause, Exception) else exc
                raise cause from exc
            except (RayError, ConnectionError) as exc:
                _salvage(ray, pending, deliveries)
                where = f" at chunk {chunk_id}" if chunk_id is not None else ""
                raise deliveries.error(f"the Ray cluster failed{where} ({_one_line(exc)})") from exc
            deliveries.deliver(chunk_id, result)
    except BaseException:
        _cancel(ray, pending)
        raise


def ray_task_overhead_ms(n: int = 20) -> float:
    """The median round trip in milliseconds of an empty chunk (submitted, run in a worker as ``run_chunks``
    runs a chunk, its result back), over ``n`` chunks one after another, after OVERHEAD_WARMUP untimed ones
    (a worker's start and torch's import are not the per-chunk cost). Uses the connected cluster, else starts
    a local Ray for the measurement and stops it after."""
    if not _whole(n, 1):
        raise ValueError(f"n must be a whole number of at least 1, not {n!r}")
    ray = _ray()
    own = not ray.is_initialized()
    if own:
        connect(None)
    try:
        remote = _remote(ray, 1, False, 0)
        task_ref, shared_ref = ray.put(_empty_chunk), ray.put(None)
        times = []
        for _ in range(OVERHEAD_WARMUP + n):
            start = time.perf_counter()
            ray.get(remote.remote(task_ref, [shared_ref], None, 1))
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times[OVERHEAD_WARMUP:])
    finally:
        if own:
            disconnect()
