"""Fuzzing scene files (issue 11, section 5) with hypothesis: random TOML structures within and beyond the
limits, and random edits of a good scene's text.

The property, for any file: ``load_scene`` returns a Scene (within every stated limit) or raises SceneError
(naming the file, in a message of bounded length); no other exception; nothing is written (the scene's
folder and the settings folder are as before). A scene that loads also survives ``dump_scene``: the text it
writes loads back to the same scene.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.limits import MAX_FPS, MAX_SCENE_BYTES, MAX_SCENE_DEPTH, MAX_SCENE_EVENTS, MAX_SCENE_TEXT
from visualizer.labs import LABS
from visualizer.recording.scene import (
    MAX_SIZE,
    MIN_SIZE,
    Scene,
    SceneError,
    _nesting_line,
    _too_deep,
    dump_scene,
    load_scene,
    start_dimension,
)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GOOD = {
    "lab": "manifold2d", "seed": 3, "size": [320, 240], "fps": 25, "duration": 4.0, "steps_per_frame": 2,
    "title": "A title", "overlays": {"step": True, "loss": True},
    "settings": {"model": "linear", "lr": 0.05},
    "camera": [{"time": 0.0, "azimuth": 350}, {"time": 4.0, "azimuth": 10, "distance": 12.0}],
    "event": [{"time": 1.0, "set": {"lr": 0.2}}, {"time": 1.5, "action": "descent", "start": [1.5, -2.0]},
              {"time": 2.0, "set": {"xs": [1.8], "ys": [0.3]}, "over": 1.0}],
    "caption": [{"start": 0.5, "end": 3.0, "text": "Gradient descent lands on the projection"}],
}
NAMES = sorted({*GOOD, *GOOD["settings"], "xs", "ys", "model", "expression", "optimizer", "steps", "extent",
                "start", "alpha", "scaling", "time", "azimuth", "elevation", "distance", "center", "set", "action",
                "over", "end", "text", "easing", "step", "loss"})


# --- writing TOML (inline tables and arrays: any structure, one line per top-level key) ------------------------
class Raw(str):
    """TOML text written as is (a date, a bare token, a number of 5000 digits)."""


def toml(v) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v).replace("\x7f", "\\u007f")  # (\uXXXX escapes are TOML's too)
    if isinstance(v, list):
        return "[" + ", ".join(toml(a) for a in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml(a)}" for k, a in v.items()) + " }"
    raise TypeError(v)


def document(doc: dict) -> str:
    return "".join(f"{json.dumps(str(k))} = {toml(v)}\n" for k, v in doc.items())


# --- random values, within and beyond the limits ------------------------------------------------------------
ODD_TEXT = ["tab\there", "del\x7f", "nul\x00", "quote\"\\", "line\nbreak", "\u2028", "é", "", " "]
keys = st.one_of(st.sampled_from(NAMES), st.text(min_size=1, max_size=8))
leaves = st.one_of(
    st.booleans(), st.integers(-10, 10), st.integers(), st.floats(), st.text(max_size=12),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 1e308, 0.04, 3600.0, MAX_FPS, MAX_FPS + 1, MIN_SIZE - 1, *MAX_SIZE]),
    st.sampled_from(["descent", "random_starts", "reset", "walk", "linear", "tanh", "custom", "gd", "adam",
                     "manifold2d", "manifold3d", "netmanifold", "surface", "w1*x + w2", "1/0", "ease-in"]),
    st.sampled_from(ODD_TEXT),
    st.integers(MAX_SCENE_TEXT - 1, MAX_SCENE_TEXT + 1).map(lambda n: "é" * n),
    st.sampled_from([Raw("1979-05-27"), Raw("07:32:00"), Raw("1979-05-27T07:32:00Z"), Raw("0x7f"), Raw("1" * 5000)]),
)
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


def nested(depth: int, kind: str):
    if depth > 50:  # as text (this file's writer recurses)
        return Raw("[" * depth + "1" + "]" * depth if kind == "array" else "{ k = " * depth + "1" + " }" * depth)
    v = 1
    for _ in range(depth):
        v = [v] if kind == "array" else {"k": v}
    return v


deep_values = st.tuples(st.one_of(st.integers(1, MAX_SCENE_DEPTH + 3), st.sampled_from([300, 3000])),
                        st.sampled_from(["array", "table"])).map(lambda t: nested(*t))
starts = st.lists(st.one_of(st.floats(-3, 3), st.integers(-3, 3), st.just(1e7)), max_size=5)

# a mutation: (where, key, value); where is the document, [settings], or one table of a timeline array
DELETE = object()
wheres = st.sampled_from(["doc", "settings", "camera", "event", "caption"])
mutations = st.tuples(wheres, keys, st.one_of(values, deep_values, starts, st.just(DELETE)))


def mutate(doc: dict, where: str, key: str, value, index: int) -> None:
    if where == "doc":
        target = doc
    elif where == "settings":
        target = doc.get("settings")
    else:
        items = doc.get(where)
        target = items[index % len(items)] if isinstance(items, list) and items else None
    if not isinstance(target, dict):
        return
    if value is DELETE:
        target.pop(key, None)
    else:
        target[key] = value


@st.composite
def scenes(draw) -> str:
    doc = copy.deepcopy(GOOD)
    doc["lab"] = draw(st.sampled_from(["manifold2d", "manifold2d", "manifold3d", "netmanifold", "surface", "nope"]))
    if doc["lab"] == "manifold3d":
        doc["event"][1]["start"] = [1.5, -1.0, 0.8]
    elif doc["lab"] in ("netmanifold", "surface"):
        doc.pop("event")
        doc["settings"] = {}
    texts = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=10))
    doc["title"], doc["caption"][0]["text"] = draw(texts), draw(texts)
    for where, key, value in draw(st.one_of(st.just([]), st.lists(mutations, max_size=4))):
        mutate(doc, where, key, value, draw(st.integers(0, 3)))
    # beyond the limits: many events, a long title, a large file
    extra = draw(st.sampled_from(["", "", "", "", "events", "title", "bytes"]))
    if extra == "events":
        doc["event"] = [{"time": 1.0, "action": "reset"}] * draw(st.integers(MAX_SCENE_EVENTS - 1,
                                                                            MAX_SCENE_EVENTS + 1))
    elif extra == "title":
        doc["title"] = "T" * draw(st.integers(MAX_SCENE_TEXT, MAX_SCENE_TEXT + 1))
    text = document(doc)
    if extra == "bytes":
        text += "#" * (MAX_SCENE_BYTES - len(text.encode()) + draw(st.integers(-1, 1))) + "\n"
    return text


good_text = document(GOOD)
edits = st.lists(st.tuples(st.integers(0, len(good_text)), st.integers(0, 3),
                           st.text(alphabet="[]{}=\"'#\n.,-+0123456789aeinrstx \\", max_size=4)), min_size=1, max_size=4)


def edited(ops) -> str:
    text = good_text
    for pos, cut, insert in ops:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut:]
    return text


# --- the property -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("scenefuzz")


def listing(root) -> list:
    out = []
    for dirpath, dirs, files in os.walk(root):
        out += [(os.path.join(dirpath, f), os.path.getsize(os.path.join(dirpath, f))) for f in files]
        out += [os.path.join(dirpath, d) for d in dirs]
    return sorted(map(str, out))


def check(folder, text: str | bytes) -> str:
    path = folder / "scene.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    cfg = os.environ.get("LOSSLAB_CONFIG_DIR")
    before = listing(folder), listing(cfg) if cfg else None
    try:
        sc = load_scene(str(path), LABS)
    except SceneError as exc:
        msg = str(exc)
        assert str(path) in msg and len(msg) < 1500, msg[:300]
        outcome = "refused"
    else:
        assert isinstance(sc, Scene)
        assert len(sc.events) <= MAX_SCENE_EVENTS and len(sc.title) <= MAX_SCENE_TEXT
        assert all(len(c.text) <= MAX_SCENE_TEXT for c in sc.captions)
        assert 1 <= sc.fps <= MAX_FPS and MIN_SIZE <= sc.size[0] <= MAX_SIZE[0] and MIN_SIZE <= sc.size[1] <= MAX_SIZE[1]
        dim = start_dimension(LABS[sc.lab].load())
        assert all(e.start is None or len(e.start) == dim for e in sc.events)
        # what the scene player saves loads back to the same scene
        again = folder / "again.toml"
        again.write_text(dump_scene(sc))
        try:
            back = load_scene(str(again), LABS)
        finally:
            again.unlink()
        back.path = sc.path
        assert back == sc
        outcome = "loaded"
    assert (listing(folder), listing(cfg) if cfg else None) == before, "load_scene wrote something"
    # the nesting count read before parsing never counts more than the parsed document has (it refuses, unparsed,
    # only what is too deep)
    try:
        doc = tomllib.loads(text.decode("utf-8", "replace") if isinstance(text, bytes) else text)
    except (ValueError, RecursionError):  # (load_scene refused these unparsed)
        return outcome
    for limit in (1, 2, 3, MAX_SCENE_DEPTH):
        if _nesting_line(text if isinstance(text, str) else text.decode("utf-8", "replace"), limit):
            assert _too_deep(doc, limit) is not None, limit
    return outcome


@FUZZ
@given(scenes())
def test_fuzz_scene_structures(folder, text):
    from hypothesis import event

    event(check(folder, text))


@FUZZ
@given(edits)
def test_fuzz_edited_scene_text(folder, ops):
    from hypothesis import event

    event(check(folder, edited(ops)))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(folder, data):
    check(folder, data)


def test_the_generators_reach_both_outcomes(folder):
    assert check(folder, good_text) == "loaded"
    assert check(folder, document({**GOOD, "event": [{"time": 1.0, "action": "descent", "start": [1.0]}]})) == "refused"
