"""Property-based fuzzing of the surface HDF5 reader (issue 11).

Random files in (and around) the reference layout: coordinates of random length, order, type and values (NaN,
infinities, repeats), loss arrays of the right or wrong size and type, datasets declared far larger than the
limits, strings, compound and complex types, empty dataspaces, groups where a dataset belongs, soft links,
soft-link loops, external links, external raw storage, virtual datasets, attributes of every kind, and files
cut short. Every file must be either accepted, with finite strictly monotonic coordinates and arrays within the
stated limits, or refused with a SurfaceFileError naming the file: no other exception, no crash, no hang.

Each file is read in a child process whose address space is limited (READ_BUDGET beyond what Python, numpy and
h5py take once imported; see LimitedReader): HDF5's own allocations escape Python's tracing, so this is where a
read of a declared-huge dataset would show, as a MemoryError or an allocation failure, or as a peak.

The examples are the same every run (derandomized, nothing stored); LOSSLAB_FUZZ_EXAMPLES=N runs N random ones.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import h5py
import numpy as np
import pytest
from h5py import h5l
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from models.limits import MAX_FILE_AXIS, MAX_FILE_GRID_POINTS
from models.surface_io import ACCURACIES, ARRAYS, MAX_TEXT_BYTES, from_reference
from tests.models.test_surface_files import LimitedReader

RANDOM = int(os.environ.get("LOSSLAB_FUZZ_EXAMPLES", "0") or 0)
FUZZ = settings(max_examples=RANDOM or 400, deadline=None, database=None, derandomize=not RANDOM,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: the most a read of these small files may add to the child's address space (a declared-huge dataset read
#: would go far past it, or fail against the child's limit)
PEAK_LIMIT = 256 * 1024**2
TEXT = "abc xyz/._-<>&\"'é€"


@pytest.fixture(scope="module", autouse=True)
def _hypothesis_storage_in_a_temporary_folder():
    """Hypothesis keeps caches (constants, a character map) in ./.hypothesis: for these tests, in a temporary
    folder that goes with them; whatever the session used before is restored."""
    from hypothesis import configuration

    before = getattr(configuration, "__hypothesis_home_directory")
    with tempfile.TemporaryDirectory(prefix="losslab-hypothesis-") as home:
        configuration.set_hypothesis_home_dir(home)
        yield
        configuration.set_hypothesis_home_dir(before)


@pytest.fixture(scope="module")
def reader():
    r = LimitedReader()
    yield r
    r.close()


# ------------------------------------------------------------------------------------------- file specs
@dataclass
class Spec:
    """One generated file: ``parts`` name -> a writer ``(f, folder, name)``; ``valid`` false when some part must
    be refused; ``expected`` what a valid file reads as."""

    parts: dict = field(default_factory=dict)
    root_attrs: dict = field(default_factory=dict)
    dataset_attrs: dict = field(default_factory=dict)
    valid: bool = True
    why: list = field(default_factory=list)
    expected: dict = field(default_factory=dict)
    cut: float | None = None

    def bad(self, why: str) -> None:
        self.valid = False
        self.why.append(why)


def _data(arr):
    def make(f, folder, name):
        f[name] = arr
    return make


def _declared(shape, dtype="f8"):
    def make(f, folder, name):
        chunks = tuple(min(int(n), 1024) for n in shape) or None
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
    return make


def _other(folder):
    other = os.path.join(folder, "other.h5")
    if not os.path.exists(other):
        with h5py.File(other, "w") as g:
            g["data"] = np.linspace(1, 2, 49)
            g["axis"] = np.linspace(-1, 1, 7)
    return other


def _odd(kind: str):
    def make(f, folder, name):
        if kind == "strings":
            f[name] = np.array([b"1", b"2", b"3"])
        elif kind == "vlen strings":
            f.create_dataset(name, data=["1", "2", "3"], dtype=h5py.string_dtype())
        elif kind == "compound":
            f[name] = np.zeros(4, dtype=[("a", "f8"), ("b", "i4")])
        elif kind == "complex":
            f[name] = np.arange(4) * (1 + 1j)
        elif kind == "array type":
            f.create_dataset(name, shape=(4,), dtype=np.dtype(("f8", (2,))))
        elif kind == "empty":
            f[name] = h5py.Empty("f8")
        elif kind == "scalar":
            f[name] = 1.5
        elif kind == "group":
            f.create_group(name).attrs["x"] = 1
        elif kind == "named type":
            f[name] = np.dtype("f8")
        elif kind == "reference":
            f.create_dataset(name, data=[f.ref], dtype=h5py.ref_dtype)
        elif kind == "soft":
            if not f.id.links.exists(b"spare"):
                f["spare"] = np.linspace(-1, 1, 7)
            f[name] = h5py.SoftLink("/spare")
        elif kind == "soft loop":
            f[name] = h5py.SoftLink(f"/{name}_loop")
            f[f"{name}_loop"] = h5py.SoftLink(f"/{name}")
        elif kind == "soft dangling":
            f[name] = h5py.SoftLink("/nowhere")
        elif kind == "external link":
            f[name] = h5py.ExternalLink(_other(folder), "/data" if "coord" not in name else "/axis")
        elif kind == "external dangling":
            f[name] = h5py.ExternalLink(os.path.join(folder, "missing.h5"), "/data")
        elif kind == "external storage":
            raw = os.path.join(folder, f"{name}.raw")
            with open(raw, "wb") as out:
                out.write(np.linspace(-1, 1, 7).tobytes())
            f.create_dataset(name, shape=(7,), dtype="f8", external=[(raw, 0, 56)])
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=(7,), dtype="f8")
            layout[:] = h5py.VirtualSource(_other(folder), "data", shape=(49,))[:7]
            f.create_virtual_dataset(name, layout, fillvalue=0)
        else:
            raise AssertionError(kind)
    return make


ODD = ["strings", "vlen strings", "compound", "complex", "array type", "empty", "scalar", "group", "named type",
       "reference", "soft", "soft loop", "soft dangling", "external link", "external dangling",
       "external storage", "virtual"]
HUGE_AXIS = [(MAX_FILE_AXIS + 1,), (2_000_000_000,), (10**6, 10**6), (MAX_FILE_AXIS, 2)]
HUGE_ARRAY = [(MAX_FILE_GRID_POINTS + 1,), (100_000, 100_000), (5000, 5000), (2**40,)]
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


def _valid_axis(c: np.ndarray) -> bool:
    c = c.astype(np.float64)
    return len(c) >= 2 and bool(np.isfinite(c).all()) and bool(
        (np.diff(c) > 0).all() or (np.diff(c) < 0).all())


@st.composite
def axes(draw, spec: Spec, name: str, hostile: bool) -> int:
    """Writes (into ``spec``) one coordinate dataset; returns its length (3 where it is refused anyway)."""
    kinds = ["good", "good", "numbers", "absent", "huge", "odd"] if hostile else ["good"] * 4 + ["absent"]
    kind = draw(st.sampled_from(kinds))
    if kind == "absent" and name == "xcoordinates" and not hostile:
        kind = "good"
    if kind == "absent":
        if name == "xcoordinates":
            spec.bad("no xcoordinates")
        else:
            spec.expected[name] = np.zeros(1)
        return 1
    if kind == "huge":
        spec.parts[name] = _declared(draw(st.sampled_from(HUGE_AXIS)))
        spec.bad(f"huge {name}")
        return 3
    if kind == "odd":
        spec.parts[name] = _odd(draw(st.sampled_from(ODD)))
        spec.bad(f"odd {name}")
        return 3
    if kind == "good":
        n = draw(st.integers(2, 7))
        dtype = draw(st.sampled_from(["f8", "f4", "<i4", ">i8", "u2", "f2"]))
        if dtype[-2] in "iu":
            step = draw(st.integers(1, 3)) * (1 if dtype == "u2" else draw(st.sampled_from([1, -1])))
            c = (np.arange(n) * step + (0 if step > 0 else 20)).astype(dtype)
        else:
            lo = draw(st.floats(-10, 10))
            c = np.linspace(lo, lo + draw(st.floats(0.5, 10)), n)
            c = (c[::-1] if draw(st.booleans()) else c).astype(dtype)
    else:
        c = np.array(draw(st.lists(floats, max_size=6)), dtype=np.float64)
        if draw(st.booleans()):
            c = np.sort(c)
    spec.parts[name] = _data(c)
    if _valid_axis(c):
        spec.expected[name] = c.astype(np.float64)
    else:
        spec.bad(f"odd values in {name}")
    return len(c)


@st.composite
def arrays(draw, spec: Spec, name: str, nx: int, ny: int, hostile: bool) -> None:
    kind = draw(st.sampled_from(["match", "match", "wrong size", "huge", "odd"] if hostile else ["match"]))
    n = nx * ny
    if kind == "huge":
        spec.parts[name] = _declared(draw(st.sampled_from(HUGE_ARRAY)))
        spec.bad(f"huge {name}")
        return
    if kind == "odd":
        spec.parts[name] = _odd(draw(st.sampled_from(ODD)))
        spec.bad(f"odd {name}")
        return
    if kind == "wrong size":
        n = max(0, n + draw(st.sampled_from([-2, -1, 1, 5])))
        spec.bad(f"{name} of the wrong size")
    dtype = draw(st.sampled_from(["f8", "f4", "i4", "u1"]))
    if dtype[0] == "f":
        v = np.array(draw(st.lists(st.one_of(floats, st.just(-1.0)), min_size=n, max_size=n)), dtype=np.float64)
    else:
        v = np.array(draw(st.lists(st.integers(0, 255), min_size=n, max_size=n)), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        v = v.astype(dtype)
    shape = draw(st.sampled_from([(nx, ny), (n,), (ny, nx)])) if kind == "match" else (n,)
    spec.parts[name] = _data(v.reshape(shape))
    if kind == "match":
        spec.expected.setdefault("values", {})[name] = from_reference(v, nx, ny)


attr_values = st.one_of(st.text(TEXT, max_size=300), st.integers(-5, 5), st.just("L" * 50_000),
                        st.lists(st.floats(allow_nan=True), max_size=4).map(np.array),
                        st.binary(min_size=1, max_size=20).map(np.bytes_), st.lists(st.text(TEXT, max_size=5), max_size=3))
attrs = st.dictionaries(st.text("abc_", min_size=1, max_size=6), attr_values, max_size=4)


@st.composite
def surface_files(draw) -> Spec:
    spec = Spec()
    hostile = draw(st.booleans())  # else only what a valid file holds (odd values may still come)
    nx = draw(axes(spec, "xcoordinates", hostile))
    ny = draw(axes(spec, "ycoordinates", hostile))
    names = draw(st.lists(st.sampled_from(ARRAYS), unique=True, min_size=0 if hostile else 1, max_size=3))
    if not names:
        spec.bad("no arrays")
    for name in names:
        draw(arrays(spec, name, nx, ny, hostile))
    texts = ["absent", "text", "bytes", "long"]
    kind = draw(st.sampled_from(texts + ["huge fixed", "numbers", "soft"] if hostile else texts))
    if kind == "text":
        text = draw(st.text(TEXT, max_size=60))
        spec.parts["dir_file"] = _data(text)
        spec.expected["dir_file"] = text
    elif kind == "bytes":
        text = draw(st.text("abc/._-<>", min_size=1, max_size=60))
        spec.parts["dir_file"] = _data(np.bytes_(text.encode()))
        spec.expected["dir_file"] = text
    elif kind == "long":
        text = "d" * draw(st.sampled_from([MAX_TEXT_BYTES, MAX_TEXT_BYTES + 1, 100_000]))
        spec.parts["dir_file"] = _data(text)
        spec.expected["dir_file"] = text[:MAX_TEXT_BYTES]
    elif kind == "huge fixed":
        spec.parts["dir_file"] = _declared((), f"S{draw(st.sampled_from([MAX_TEXT_BYTES + 1, 10**8]))}")
        spec.bad("huge fixed-length dir_file")
    elif kind == "numbers":
        spec.parts["dir_file"] = _data(np.arange(3))
        spec.bad("numbers for dir_file")
    elif kind == "soft":
        spec.parts["dir_file"] = _odd("soft")
        spec.bad("soft link for dir_file")
    spec.root_attrs = draw(attrs)
    spec.dataset_attrs = draw(attrs)
    if draw(st.sampled_from([False] * 7 + [True])):
        spec.cut = draw(st.floats(0, 1))
    return spec


def write(spec: Spec, folder: str) -> str:
    path = os.path.join(folder, "fuzz.h5")
    with h5py.File(path, "w") as f:
        for k, v in spec.root_attrs.items():
            f.attrs[k] = v
        for name, make in spec.parts.items():
            make(f, folder, name)
        loss = f.id.links.exists(b"train_loss") and f.id.links.get_info(b"train_loss").type == h5l.TYPE_HARD
        if loss and isinstance(f["train_loss"], h5py.Dataset):
            for k, v in spec.dataset_attrs.items():
                f["train_loss"].attrs[k] = v
    if spec.cut is not None:
        with open(path, "r+b") as out:
            out.truncate(int(os.path.getsize(path) * spec.cut))
    return path


# ------------------------------------------------------------------------------------------- properties
def check(reader, spec: Spec, path: str) -> dict:
    out = reader.read(path)
    event(f"{out['kind']}{' (cut)' if spec.cut is not None else ''}")  # --hypothesis-show-statistics
    assert out["kind"] in ("ok", "SurfaceFileError"), out  # no other exception, no crash, no hang
    assert out["peak"] < PEAK_LIMIT, out  # nothing near a declared size was allocated
    assert out["seconds"] < 10, out
    if out["kind"] == "SurfaceFileError":
        msg = out["message"]
        assert "fuzz.h5" in msg, msg
        assert "memory" not in msg.lower() and "alloc" not in msg.lower(), msg  # refused, not run out
        assert spec.cut is not None or not spec.valid, (spec.why, msg)  # a valid whole file is read
        return out
    assert all(out["checks"].values()), out
    assert spec.cut is not None or spec.valid, (spec.why, out)  # a part that must be refused was not
    if spec.cut is None:
        e = spec.expected
        assert np.array_equal(out["x"], e["xcoordinates"]) and np.array_equal(out["y"], e["ycoordinates"])
        assert set(out["values"]) == set(e["values"])
        # accuracies: percent in a file without a unit attribute when any is above 1 (fractions in memory)
        percent = any((v[np.isfinite(v)] > 1).any() for name, v in e["values"].items() if name in ACCURACIES)
        for name, v in e["values"].items():
            want = v / 100 if percent and name in ACCURACIES else v
            assert np.array_equal(np.asarray(out["values"][name], dtype=np.float64), want, equal_nan=True), name
        assert out["dir_file"] == e.get("dir_file", "")[:300]
    return out


@FUZZ
@given(spec=surface_files())
def test_every_file_is_read_within_limits_or_refused_by_name(reader, spec):
    with tempfile.TemporaryDirectory(prefix="losslab-fuzz-") as folder:
        check(reader, spec, write(spec, folder))


@settings(FUZZ, max_examples=RANDOM or 60)
@given(x=st.lists(floats, max_size=5), y=st.lists(floats, max_size=5), cut=st.floats(0, 1))
def test_coordinates_and_cut_files(reader, x, y, cut):
    """Any coordinates at all (and any cut of the file): accepted only when finite and strictly monotonic."""
    with tempfile.TemporaryDirectory(prefix="losslab-fuzz-") as folder:
        spec = Spec()
        for name, c in (("xcoordinates", x), ("ycoordinates", y)):
            c = np.array(c, dtype=np.float64)
            spec.parts[name] = _data(c)
            if _valid_axis(c):
                spec.expected[name] = c
            else:
                spec.bad(f"odd {name}")
        v = np.ones(len(x) * len(y))
        spec.parts["train_loss"] = _data(v)
        spec.expected["values"] = {"train_loss": from_reference(v, len(x), len(y))} if spec.valid else {}
        check(reader, spec, write(spec, folder))
        spec.cut = cut
        check(reader, spec, write(spec, folder))
