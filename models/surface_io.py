"""Surface and direction files in the layout of the reference loss-landscape code (tomgoldstein/loss-landscape).

Surface file: datasets ``xcoordinates`` (nx), ``ycoordinates`` (ny), ``train_loss`` / ``train_acc`` (and
``test_loss`` / ``test_acc`` when present) and ``dir_file`` (the direction file's name). The reference fills
its 2D arrays in ``meshgrid(x, y).ravel()`` order: flat entry k = iy * nx + ix holds the value at
(x[ix], y[iy]); missing values are -1. Here surfaces are arrays indexed [ix, iy] with NaN for missing.
Without ``ycoordinates`` the file is the reference's 1D plot (arrays of shape (nx,)): read, y is the single
value 0 and the arrays are (nx, 1) (``Surface.one_d``); a one_d Surface is written in that 1D layout.
Accuracies are fractions (0..1) in memory and percent in the file, as the reference writes them (the root
attribute ``losslab_acc_units = "percent"`` says so); a file without that attribute is read as percent when
any of its accuracies is above 1, else as fractions (files of earlier losslab versions). An accuracy read and
written back unchanged keeps the file's exact number (``Surface.stored``).
Direction file: groups ``xdirection`` and ``ydirection`` (only ``xdirection`` for a 1D plot), one dataset per
tensor named '0', '1', ... in the model's parameter order (or its state_dict's, for the reference's
``dir_type = states``).

Files are written atomically (a temporary file, then a rename, with the permissions the umask gives a new
file); a corrupt or truncated file raises SurfaceFileError with the file's name and what is wrong, and nothing
is overwritten.

A file is a user's input, checked before anything is read (``read_surface``, ``read_directions``): each
dataset's shape, type, storage and filters are looked at first and refused (SurfaceFileError naming the file,
the dataset and the limit) when they declare more than the stated limits of ``models.limits`` allow, or when
they would reach outside the file (external, soft and virtual links, external raw storage); only then is data
read. Coordinates must be finite and strictly monotonic (ascending or descending: the reference writes a range
such as 1:-1:N descending; the file's order is kept). Text from a file (``dir_file``, string attributes) is
read at most MAX_TEXT_BYTES bytes; whoever shows it must show it as plain text (``models.limits.shown_text``,
``html_escape``).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .export import new_file_mode
from .limits import (
    MAX_FILE_AXIS,
    MAX_FILE_GRID_POINTS,
    MEMORY_CAP_BYTES,
    LimitError,
    check_memory,
    human_bytes,
)

ARRAYS = ("train_loss", "train_acc", "test_loss", "test_acc")
#: the arrays that hold accuracies (fractions in memory, percent in the file)
ACCURACIES = ("train_acc", "test_acc")
#: the root attribute that names the accuracies' unit in the file
ACC_UNITS_ATTR = "losslab_acc_units"

#: bytes read of one text from a file (dir_file, a string attribute); a fixed-length text that declares more
#: than this is not read at all
MAX_TEXT_BYTES = 4096
#: string attributes of the file's root read into ``Surface.attrs`` (the others are left unread)
MAX_ATTRS = 64
#: a chunked dataset is read a chunk at a time: one chunk (as declared) may hold at most this many bytes
MAX_CHUNK_BYTES = 64 * 1024**2
#: and a dataset may be cut into at most this many chunks (the chunk index is read before the data)
MAX_CHUNKS = 1 << 20
#: a direction file: at most this many parameter tensors per direction
MAX_DIRECTION_TENSORS = 100_000
#: the HDF5 filters a dataset may use: the library's own and h5py's LZF; any other would load a plugin
BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
                   32000: "lzf"}


class SurfaceFileError(ValueError):
    """An unreadable or malformed surface/direction file."""


@dataclass
class Surface:
    x: np.ndarray
    y: np.ndarray  # np.zeros(1) for a 1D plot
    values: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (nx, ny), NaN = not computed
    dir_file: str = ""
    attrs: dict[str, str] = field(default_factory=dict)  # the root's string attributes as read (bounded)
    #: accuracies as the file held them, in percent (set by read_surface): written back where a value is
    #: unchanged, so that a point read and saved again keeps its exact number (x / 100 * 100 may differ from x)
    stored: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def one_d(self) -> bool:
        """The reference's 1D plot: no ``ycoordinates`` in the file (a 2D surface has at least 2 on each axis)."""
        return len(self.y) == 1

    def missing(self, name: str = "train_loss") -> np.ndarray:
        return np.isnan(self.values[name])


def to_reference(values: np.ndarray) -> np.ndarray:
    """[ix, iy] with NaN -> the reference's (nx, ny) array filled in meshgrid ravel order, -1 for missing."""
    nx, ny = values.shape
    flat = np.where(np.isnan(values), -1.0, values).T.ravel()  # k = iy * nx + ix
    return flat.reshape(nx, ny)


def from_reference(arr: np.ndarray, nx: int, ny: int) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size != nx * ny:
        raise SurfaceFileError(f"an array of {arr.size} values cannot hold a {nx} x {ny} grid")
    out = arr.ravel().reshape(ny, nx).T.copy()
    out[out == -1] = np.nan
    return out


# ----------------------------------------------------------------------------------------------- writing


def atomic_h5(path: str, fill, tmp: str | None = None, before_rename=None) -> None:
    """``fill(h5file)`` into a temporary file beside ``path`` (``tmp``, or a fresh unique name), made readable
    as the umask allows, on disk, then renamed over ``path``; on any failure the temporary file goes."""
    import h5py

    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise OSError(f"cannot write to {folder}")
    if tmp is None:
        fd, tmp = tempfile.mkstemp(suffix=".h5.tmp", dir=folder)
        os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        # mkstemp made it 0600: a file saved here gets what any new file of this user gets
        os.chmod(tmp, new_file_mode())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the rename makes it the file
        finally:
            os.close(fd)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_values(s: Surface, name: str) -> np.ndarray:
    """The array ``name`` in the file's units: accuracies in percent, the file's own number where unchanged."""
    v = np.asarray(s.values[name], dtype=np.float64)
    if name not in ACCURACIES:
        return v
    pct = v * 100
    kept = s.stored.get(name)
    if kept is not None and kept.shape == v.shape:
        with np.errstate(invalid="ignore"):
            same = kept / 100 == v  # NaN (not computed) is never the same
        pct = np.where(same, kept, pct)
    return pct


def write_surface(path: str, s: Surface, attrs: dict | None = None, tmp: str | None = None,
                  before_rename=None) -> None:
    """``s`` in the reference layout (its 1D layout for a one_d surface), accuracies in percent, with root
    ``attrs``, atomically (``atomic_h5``'s ``tmp`` and ``before_rename``)."""
    def fill(f):
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        f.attrs[ACC_UNITS_ATTR] = "percent"
        f["xcoordinates"] = np.asarray(s.x, dtype=np.float64)
        if not s.one_d:
            f["ycoordinates"] = np.asarray(s.y, dtype=np.float64)
        f["dir_file"] = s.dir_file
        for name in s.values:
            ref = to_reference(_file_values(s, name))
            f[name] = ref.ravel() if s.one_d else ref

    atomic_h5(path, fill, tmp, before_rename)


def write_directions(path: str, xdir: list[np.ndarray], ydir: list[np.ndarray] | None,
                     attrs: dict | None = None, tmp: str | None = None) -> None:
    """The directions (one array per tensor) in the reference layout, atomically; ``ydir`` None: a 1D plot's
    file, only ``xdirection``."""
    def fill(f):
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        for name, d in (("xdirection", xdir), ("ydirection", ydir)):
            if d is None:
                continue
            g = f.create_group(name)
            for i, t in enumerate(d):
                g.create_dataset(str(i), data=np.asarray(t))

    atomic_h5(path, fill, tmp)


# ----------------------------------------------------------------------------------------------- checks
def _declared_size(shape) -> int:
    return math.prod(int(n) for n in shape)  # Python integers: no overflow, whatever the file declares


def _link(path: str, group, name: str, what: str = "dataset", label: str | None = None):
    """The object ``name`` of ``group`` if it is there through a hard link (None when there is no such link);
    soft and external links are refused before anything follows them. ``label``: the name in messages."""
    import h5py
    from h5py import h5l

    label = label or name
    key = name.encode()
    if not group.id.links.exists(key):  # H5Lexists on one path component: nothing is followed
        return None
    kind = group.id.links.get_info(key).type
    if kind == h5l.TYPE_EXTERNAL:
        raise SurfaceFileError(f"{path}: '{label}' is an external link to another file: refused (the file must "
                               "hold its own data)")
    if kind == h5l.TYPE_SOFT:
        raise SurfaceFileError(f"{path}: '{label}' is a soft link: refused (each {what} must be stored under its "
                               "own name)")
    if kind != h5l.TYPE_HARD:
        raise SurfaceFileError(f"{path}: '{label}' is a user-defined link: refused")
    obj = group[name]
    want = h5py.Group if what == "group" else h5py.Dataset
    if not isinstance(obj, want):
        raise SurfaceFileError(f"{path}: '{label}' is not a {what}")
    return obj


def _check_storage(path: str, ds, name: str) -> None:
    """Refuse a dataset whose data lives outside the file or whose storage would be read in huge pieces."""
    from h5py import h5d

    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5d.VIRTUAL:
        raise SurfaceFileError(f"{path}: dataset '{name}' is a virtual dataset (its data is in other files): "
                               "refused")
    if dcpl.get_external_count():
        raise SurfaceFileError(f"{path}: dataset '{name}' keeps its data in external files "
                               f"({', '.join(repr(_text_of(e[0])[:100]) for e in (ds.external or [])[:3])}): refused")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in BUILTIN_FILTERS:
            raise SurfaceFileError(f"{path}: dataset '{name}' uses HDF5 filter {code}, not one of the built-in "
                                   f"filters ({', '.join(BUILTIN_FILTERS.values())}): refused")
    if ds.chunks is not None and ds.shape:
        chunk = _declared_size(ds.chunks) * ds.id.get_type().get_size()
        if chunk > MAX_CHUNK_BYTES:
            raise SurfaceFileError(f"{path}: dataset '{name}' is stored in chunks of {human_bytes(chunk)}: at "
                                   f"most {human_bytes(MAX_CHUNK_BYTES)} a chunk")
        count = math.prod(-(-int(n) // int(c)) for n, c in zip(ds.shape, ds.chunks))
        if count > MAX_CHUNKS:
            raise SurfaceFileError(f"{path}: dataset '{name}' is cut into {count} chunks: at most {MAX_CHUNKS}")


def _numeric(path: str, ds, name: str, max_size: int, limit_words: str) -> int:
    """The declared number of values of a numeric dataset, checked against ``max_size`` before any read."""
    if ds.shape is None:
        raise SurfaceFileError(f"{path}: dataset '{name}' holds no data (an empty dataspace)")
    dt = ds.dtype
    if dt.kind not in "biuf" or dt.fields is not None or dt.subdtype is not None:
        raise SurfaceFileError(f"{path}: dataset '{name}' holds {_type_words(dt)}, not numbers")
    size = _declared_size(ds.shape)
    if size > max_size:
        shape = f"{' x '.join(str(int(n)) for n in ds.shape)} = " if len(ds.shape) > 1 else ""
        raise SurfaceFileError(f"{path}: dataset '{name}' declares {shape}{size} values: {limit_words}")
    _check_storage(path, ds, name)
    return size


def _type_words(dt) -> str:
    import h5py

    if h5py.check_string_dtype(dt) is not None or dt.kind in "SU":
        return "text"
    if dt.fields is not None:
        return "a compound type"
    if dt.kind == "c":
        return "complex numbers"
    if dt.subdtype is not None:
        return "arrays per element"
    return f"values of type {dt}"


def _text_of(raw) -> str:
    if isinstance(raw, bytes):
        raw = raw[:MAX_TEXT_BYTES].decode("utf-8", errors="replace")
    return str(raw)[:MAX_TEXT_BYTES]


def _read_text(path: str, obj, name: str, *, refuse: bool = True) -> str | None:
    """A scalar (or one-element) text dataset or attribute (h5py's ``DatasetID`` or ``AttrID``), read at most
    MAX_TEXT_BYTES bytes: HDF5 converts it to a fixed-length string of that size, so a longer text is cut by the
    library and never handed over whole (a variable-length text is read by HDF5 from the file's heap: no more
    than the file holds; a fixed-length one longer than the limit is not read). Not text, or too long a
    fixed-length text: SurfaceFileError (or None when ``refuse`` is false)."""
    from h5py import h5a, h5s, h5t

    def no(why: str):
        if refuse:
            raise SurfaceFileError(f"{path}: '{name}' {why}")
        return None

    tid = obj.get_type()
    if tid.get_class() != h5t.STRING:
        return no("is not text")
    space = obj.get_space()
    if space.get_simple_extent_type() == h5s.NULL:
        return ""
    if _declared_size(space.shape) != 1:
        return no(f"holds {_declared_size(space.shape)} texts, not one")
    if not tid.is_variable_str() and tid.get_size() > MAX_TEXT_BYTES:
        return no(f"is a text of {tid.get_size()} bytes: at most {MAX_TEXT_BYTES}")
    buf = np.zeros(space.shape, dtype=f"S{MAX_TEXT_BYTES}")
    mtype = h5t.py_create(buf.dtype)
    if tid.get_cset() == h5t.CSET_UTF8:
        mtype.set_cset(h5t.CSET_UTF8)
    if isinstance(obj, h5a.AttrID):
        obj.read(buf, mtype=mtype)
    else:
        obj.read(h5s.ALL, h5s.ALL, buf, mtype=mtype)
    return _text_of(buf.ravel()[0])


def _read_attrs(path: str, obj) -> dict[str, str]:
    """The string attributes of ``obj`` (at most MAX_ATTRS of them, each at most MAX_TEXT_BYTES bytes)."""
    from h5py import h5a, h5o

    out: dict[str, str] = {}
    count = h5o.get_info(obj.id).num_attrs
    for i in range(min(count, MAX_ATTRS)):
        aid = h5a.open(obj.id, index=i)
        name = _text_of(aid.name)
        if len(name) > 200:
            continue
        text = _read_text(path, aid, name, refuse=False)
        if text is not None:
            out[name] = text
    return out


def _axis(path: str, f, name: str, required: bool):
    ds = _link(path, f, name)
    if ds is None:
        if required:
            raise SurfaceFileError(f"{path}: no '{name}' dataset: not a loss-surface file")
        return None, 1
    n = _numeric(path, ds, name, MAX_FILE_AXIS, f"at most {MAX_FILE_AXIS} coordinates an axis")
    if n < 2:
        raise SurfaceFileError(f"{path}: dataset '{name}' holds {n} coordinate{'s' if n != 1 else ''}: a surface "
                               f"needs at least 2 on each axis")
    return ds, n


def _coordinates(path: str, ds, name: str) -> np.ndarray:
    c = np.asarray(ds[()], dtype=np.float64).ravel()
    if not np.isfinite(c).all():
        raise SurfaceFileError(f"{path}: dataset '{name}' holds coordinates that are not finite numbers "
                               f"(NaN or infinite at {int((~np.isfinite(c)).sum())} of {len(c)})")
    if not ((c[1:] > c[:-1]).all() or (c[1:] < c[:-1]).all()):
        what = "repeats a value" if len(np.unique(c)) < len(c) else "goes up and down"
        raise SurfaceFileError(f"{path}: dataset '{name}' {what}: coordinates must be strictly ascending or "
                               "descending")
    return c


def _read_surface(path: str, f) -> Surface:
    if _link(path, f, "xcoordinates") is None and _link(path, f, "xdirection", what="group") is not None:
        raise SurfaceFileError(f"{path}: a direction file (it holds 'xdirection'), not a loss-surface file")
    xds, nx = _axis(path, f, "xcoordinates", required=True)
    yds, ny = _axis(path, f, "ycoordinates", required=False)
    arrays = {}
    side = math.isqrt(MAX_FILE_GRID_POINTS)
    grid_words = f"at most {MAX_FILE_GRID_POINTS} values (a {side} x {side} grid)"
    for name in ARRAYS:
        ds = _link(path, f, name)
        if ds is not None:
            arrays[name] = (ds, _numeric(path, ds, name, MAX_FILE_GRID_POINTS, grid_words))
    if not arrays:
        raise SurfaceFileError(f"{path}: no loss or accuracy arrays ({', '.join(ARRAYS)})")
    if nx * ny > MAX_FILE_GRID_POINTS:
        raise SurfaceFileError(f"{path}: datasets 'xcoordinates' and 'ycoordinates' make a {nx} x {ny} grid: "
                               f"{grid_words}")
    for name, (_, size) in arrays.items():
        if size != nx * ny:
            raise SurfaceFileError(f"{path}: dataset '{name}' holds {size} values, but 'xcoordinates' and "
                                   f"'ycoordinates' make a {nx} x {ny} grid of {nx * ny} points")
    # what reading needs at most: each array as stored, as float64 and rearranged (accuracies also as stored
    # in percent), and the axes
    need = sum(size * (ds.dtype.itemsize + (24 if name in ACCURACIES else 16))
               for name, (ds, size) in arrays.items()) + 16 * (nx + ny)
    try:
        check_memory(need, f"{path}: its arrays")
    except LimitError as exc:
        raise SurfaceFileError(str(exc)) from None
    dds = _link(path, f, "dir_file")
    if dds is not None:
        _check_storage(path, dds, "dir_file")
    # nothing has been read so far: now the data
    x = _coordinates(path, xds, "xcoordinates")
    y = _coordinates(path, yds, "ycoordinates") if yds is not None else np.zeros(1)
    vals = {name: from_reference(ds[()], nx, ny) for name, (ds, _) in arrays.items()}
    d = _read_text(path, dds.id, "dir_file") if dds is not None else ""
    attrs = _read_attrs(path, f)
    stored = {}
    if _in_percent(attrs, [vals[name] for name in ACCURACIES if name in vals]):
        for name in ACCURACIES:
            if name in vals:
                stored[name] = vals[name]
                vals[name] = vals[name] / 100
    return Surface(x, y, vals, d, attrs, stored)


def _in_percent(attrs: dict[str, str], accuracies: list[np.ndarray]) -> bool:
    """Whether a file's accuracies are percent: as its ACC_UNITS_ATTR says, or (no such attribute: the
    reference's files and earlier losslab versions' fractions) when any of them is above 1."""
    if ACC_UNITS_ATTR in attrs:
        return attrs[ACC_UNITS_ATTR] == "percent"
    return any(bool((a[np.isfinite(a)] > 1).any()) for a in accuracies)


def _refusal(path: str, exc: BaseException, kind: str) -> SurfaceFileError:
    if isinstance(exc, FileNotFoundError):
        return SurfaceFileError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return SurfaceFileError(f"{path}: a folder, not a {kind} file")
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    return SurfaceFileError(f"{path}: cannot read it as an HDF5 {kind} file ({text})")


def read_surface(path: str) -> Surface:
    """The surface in ``path``; every check is made before data is read (see the module's notes). Anything wrong
    with the file, whatever h5py raised, is a SurfaceFileError naming the file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return _read_surface(path, f)
    except SurfaceFileError:
        raise
    except MemoryError:
        raise SurfaceFileError(f"{path}: not enough memory to read it") from None
    except Exception as exc:  # h5py's errors on a corrupt file: OSError, KeyError, ValueError, RuntimeError, ...
        raise _refusal(path, exc, "surface") from None


def read_directions(path: str, shapes: list[tuple] | None = None
                    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """The directions of a direction file, (xdirection, ydirection), ydirection None for a 1D plot's file
    (only ``xdirection``), with the surface reader's checks; at most MEMORY_CAP_BYTES of tensors in all.
    ``shapes``: the model's tensor shapes, in order, that each direction must have."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            groups = []
            for name in ("xdirection", "ydirection"):
                g = _link(path, f, name, what="group")
                if g is None:
                    if name == "ydirection" and groups:
                        break  # a 1D plot's directions
                    if _link(path, f, "xcoordinates") is not None:
                        raise SurfaceFileError(f"{path}: a loss-surface file (it holds 'xcoordinates'), not a "
                                               "direction file")
                    raise SurfaceFileError(f"{path}: no '{name}' group: not a direction file")
                n = len(g)
                if n > MAX_DIRECTION_TENSORS:
                    raise SurfaceFileError(f"{path}: group '{name}' holds {n} tensors: at most "
                                           f"{MAX_DIRECTION_TENSORS}")
                sets = []
                for i in range(n):
                    ds = _link(path, g, str(i), label=f"{name}/{i}")
                    if ds is None:
                        raise SurfaceFileError(f"{path}: group '{name}' has no tensor '{i}'")
                    sets.append(ds)
                groups.append((name, sets))
            total = 0
            for name, sets in groups:
                for i, ds in enumerate(sets):
                    total += _numeric(path, ds, f"{name}/{i}", MEMORY_CAP_BYTES, "over the memory limit") * \
                        ds.dtype.itemsize
            if total > MEMORY_CAP_BYTES:
                raise SurfaceFileError(f"{path}: its directions would need {human_bytes(total)}, over the "
                                       f"{human_bytes(MEMORY_CAP_BYTES)} limit")
            out = [(name, [np.asarray(ds[()]) for ds in sets]) for name, sets in groups]
    except SurfaceFileError:
        raise
    except MemoryError:
        raise SurfaceFileError(f"{path}: not enough memory to read it") from None
    except Exception as exc:
        raise _refusal(path, exc, "direction") from None
    if shapes is not None:
        for name, d in out:
            check_shapes(path, name, d, shapes)
    return out[0][1], (out[1][1] if len(out) > 1 else None)


def check_shapes(path: str, name: str, direction: list, shapes: list[tuple]) -> None:
    """A direction ``name`` of the file ``path`` against the model's tensor shapes, in order
    (SurfaceFileError saying which tensor differs)."""
    want = [tuple(int(n) for n in sh) for sh in shapes]
    got = [tuple(t.shape) for t in direction]
    if len(got) != len(want):
        raise SurfaceFileError(f"{path}: '{name}' holds {len(got)} tensors, this model has {len(want)}: its "
                               "directions do not match this model's parameter shapes")
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            raise SurfaceFileError(f"{path}: '{name}/{i}' has shape {g}, this model's tensor {i} {w}: its "
                                   "directions do not match this model's parameter shapes")
