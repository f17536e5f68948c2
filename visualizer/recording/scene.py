"""Scene files (TOML): a lab, its settings, a seed, the output size and rate, and a timeline of camera
keyframes, setting changes and captions. Parsed with the standard library's tomllib (never eval'd) and
checked field by field: an error names the file, the line where it can be found, and the field.

    lab = "manifold2d"
    seed = 0
    size = [1920, 1080]
    fps = 30
    duration = 12.0
    steps_per_frame = 5

    [settings]            # the lab's own state fields
    model = "tanh"

    [[camera]]            # keyframes
    time = 0.0
    azimuth = -60
    elevation = 28
    distance = 9

    [[event]]             # a setting change or an action at a time
    time = 2.0
    set = { lr = 0.2 }    # or: action = "descent", start = [1.5, -2.0]
    over = 1.5            # optional: numbers move there gradually (a slider moving, a point dragged)

    [[caption]]
    start = 0.5
    end = 4.0
    text = "Gradient descent lands on the nearest solution"

Optional: ``title = "..."`` (burned in at the top left), ``overlays = { step = true, loss = true }`` (the
latest run's step and loss at the top right), ``easing`` of the camera moves, and a keyframe's ``center``
and ``distance`` (default: those the lab chose for its view).
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field

from visualizer.recording.keyframes import EASINGS, Camera

ACTIONS = ("descent", "random_starts", "reset")  # of the descent labs; each lab names its own (scene_actions)


class SceneError(ValueError):
    """A malformed scene: the message names the file, the line and the field."""


@dataclass
class Event:
    time: float
    set: dict = field(default_factory=dict)
    action: str | None = None
    start: list | None = None
    over: float = 0.0  # > 0: numeric settings move there gradually over this many seconds (a slider, a drag)


@dataclass
class Caption:
    start: float
    end: float
    text: str


@dataclass
class Scene:
    lab: str
    seed: int = 0
    size: tuple[int, int] = (1920, 1080)
    fps: int = 30
    duration: float = 10.0
    steps_per_frame: int = 1
    easing: str = "ease-in-out"
    settings: dict = field(default_factory=dict)
    camera: list[tuple[float, Camera]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    captions: list[Caption] = field(default_factory=list)
    title: str = ""
    overlays: dict = field(default_factory=dict)
    path: str = ""

    @property
    def frames(self) -> int:
        return max(1, round(self.duration * self.fps))


def _line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith(needle):
            return i
    return 0


def load_scene(path: str, labs: dict | None = None, lab_fields: dict | None = None) -> Scene:
    """Read and check a scene file. ``labs``: the known lab keys; ``lab_fields``: lab -> set of setting names."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise SceneError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SceneError(f"{path}: {exc}") from None

    def fail(fieldname: str, msg: str, needle: str | None = None) -> SceneError:
        line = _line_of(text, needle or fieldname.split(".")[0].split("[")[0])
        where = f"line {line}, " if line else ""
        return SceneError(f"{path}: {where}field '{fieldname}': {msg}")

    def number(d: dict, key: str, name: str, lo: float | None = None, hi: float | None = None, cast=float):
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise fail(name, f"expected a number, got {v!r}", key)
        if not math.isfinite(v):
            raise fail(name, f"expected a finite number, got {v}", key)
        v = cast(v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise fail(name, f"{v} is outside [{lo}, {hi}]", key)
        return v

    known = {"lab", "seed", "size", "fps", "duration", "steps_per_frame", "easing", "settings", "camera", "event",
             "caption", "title", "overlays"}
    for key in doc:
        if key not in known:
            raise fail(key, f"unknown field; known: {', '.join(sorted(known))}", key)
    lab = doc.get("lab")
    if not isinstance(lab, str):
        raise fail("lab", "missing or not a string", "lab")
    if labs is not None and lab not in labs:
        raise fail("lab", f"unknown lab '{lab}'; labs: {', '.join(labs)}", "lab")
    sc = Scene(lab=lab, path=path)
    lab_cls = None
    if labs is not None and hasattr(labs[lab], "load"):
        lab_cls = labs[lab].load()
    actions = tuple(lab_cls.scene_actions) if lab_cls is not None else ACTIONS

    in_force: dict = {}  # the settings set by the scene and its events so far (dependent ranges read them)

    def check_values(values: dict, where: str, needle: str) -> dict:
        if lab_cls is None or lab_cls.state_cls is None:
            return dict(values)
        from visualizer.labs.base import SettingError, check_settings

        try:
            out = check_settings(lab_cls.state_cls, values, where, in_force)
            in_force.update(out)
            return out
        except SettingError as exc:
            name = str(exc).split(":")[0]
            raise fail(name, f"the {lab} lab: {str(exc).split(': ', 1)[1]}", name.split(".")[-1]) from None

    if "title" in doc:
        if not isinstance(doc["title"], str):
            raise fail("title", "expected a string", "title")
        sc.title = doc["title"]
    if "overlays" in doc:
        ov = doc["overlays"]
        if not isinstance(ov, dict) or any(k not in ("step", "loss") or not isinstance(v, bool) for k, v in ov.items()):
            raise fail("overlays", "expected a table like { step = true, loss = true }", "overlays")
        sc.overlays = dict(ov)
    if "seed" in doc:
        sc.seed = number(doc, "seed", "seed", 0, 2**31, int)
    if "size" in doc:
        size = doc["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise fail("size", "expected [width, height] in pixels", "size")
        if not (16 <= size[0] <= 3840 and 16 <= size[1] <= 2160):
            raise fail("size", "width and height must be within 16..3840 and 16..2160", "size")
        sc.size = (size[0], size[1])
    if "fps" in doc:
        sc.fps = number(doc, "fps", "fps", 1, 240, int)
    if "duration" in doc:
        sc.duration = number(doc, "duration", "duration", 0.04, 3600)
    if "steps_per_frame" in doc:
        sc.steps_per_frame = number(doc, "steps_per_frame", "steps_per_frame", 0, 100000, int)
    if "easing" in doc:
        if doc["easing"] not in EASINGS:
            raise fail("easing", f"one of {', '.join(EASINGS)}", "easing")
        sc.easing = doc["easing"]
    settings = doc.get("settings", {})
    if not isinstance(settings, dict):
        raise fail("settings", "expected a table of the lab's settings", "[settings]")
    if lab_fields is not None and lab in lab_fields:
        for k in settings:
            if k not in lab_fields[lab]:
                raise fail(f"settings.{k}", f"the {lab} lab has no setting '{k}'", k)
    sc.settings = check_values(settings, "settings", "[settings]")
    for i, cam in enumerate(doc.get("camera", [])):
        name = f"camera[{i}]"
        if not isinstance(cam, dict):
            raise fail(name, "expected a table", "[[camera]]")
        t = number(cam, "time", f"{name}.time", 0, sc.duration)
        az = number(cam, "azimuth", f"{name}.azimuth") if "azimuth" in cam else -60.0
        el = number(cam, "elevation", f"{name}.elevation", -89.9, 89.9) if "elevation" in cam else 28.0
        dist = number(cam, "distance", f"{name}.distance", 1e-3, 1e6) if "distance" in cam else None
        center = cam.get("center")
        if center is not None and not (isinstance(center, list) and len(center) == 3 and all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in center)):
            raise fail(f"{name}.center", "expected [x, y, z]", "center")
        sc.camera.append((t, Camera(az, el, dist, None if center is None else tuple(float(c) for c in center))))
    if [t for t, _ in sc.camera] != sorted(t for t, _ in sc.camera):
        raise fail("camera", "keyframes must be in time order", "[[camera]]")
    for i, ev in enumerate(doc.get("event", [])):
        name = f"event[{i}]"
        t = number(ev, "time", f"{name}.time", 0, sc.duration)
        e = Event(t)
        if "set" in ev:
            if not isinstance(ev["set"], dict):
                raise fail(f"{name}.set", "expected a table like { lr = 0.2 }", "set")
            if lab_fields is not None and lab in lab_fields:
                for k in ev["set"]:
                    if k not in lab_fields[lab]:
                        raise fail(f"{name}.set.{k}", f"the {lab} lab has no setting '{k}'", "set")
            e.set = check_values(ev["set"], f"{name}.set", "set")
        if "action" in ev:
            if ev["action"] not in actions:
                raise fail(f"{name}.action", f"the {lab} lab's actions are {', '.join(actions)}", "action")
            e.action = ev["action"]
            e.start = ev.get("start")
            if e.start is not None and not (isinstance(e.start, list) and e.start and all(
                    isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in e.start)):
                raise fail(f"{name}.start", "expected a list of numbers (one start)", "start")
        if "over" in ev:
            e.over = number(ev, "over", f"{name}.over", 0, sc.duration)
            if e.over > 0 and not e.set:
                raise fail(f"{name}.over", "'over' moves the settings in 'set' gradually: give 'set' too", "over")
            for k, v in e.set.items():
                if e.over > 0 and (isinstance(v, (bool, str)) or (isinstance(v, list) and not v)):
                    raise fail(f"{name}.set.{k}", "only numbers (and lists of numbers) can move gradually", "set")
        if not e.set and not e.action:
            raise fail(name, "an event needs 'set' or 'action'", "[[event]]")
        sc.events.append(e)
    for i, cap in enumerate(doc.get("caption", [])):
        name = f"caption[{i}]"
        start = number(cap, "start", f"{name}.start", 0, sc.duration)
        end = number(cap, "end", f"{name}.end", start, sc.duration)
        if not isinstance(cap.get("text"), str):
            raise fail(f"{name}.text", "expected a string", "text")
        sc.captions.append(Caption(start, end, cap["text"]))
    return sc


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{v} cannot be written to a scene")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(a) for a in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(a)}" for k, a in v.items()) + " }"
    raise ValueError(f"{v!r} cannot be written to a scene")


def dump_scene(sc: Scene, comment: str = "") -> str:
    """The scene as TOML text that ``load_scene`` reads back to an equal scene."""
    out = [f"# {line}" for line in comment.splitlines()]
    out += [f"lab = {_toml_value(sc.lab)}", f"seed = {sc.seed}", f"size = [{sc.size[0]}, {sc.size[1]}]",
            f"fps = {sc.fps}", f"duration = {_toml_value(float(sc.duration))}",
            f"steps_per_frame = {sc.steps_per_frame}", f"easing = {_toml_value(sc.easing)}"]
    if sc.title:
        out.append(f"title = {_toml_value(sc.title)}")
    if sc.overlays:
        out.append(f"overlays = {_toml_value(sc.overlays)}")
    out += ["", "[settings]"] + [f"{k} = {_toml_value(v)}" for k, v in sc.settings.items()]
    for t, c in sc.camera:
        out += ["", "[[camera]]", f"time = {_toml_value(float(t))}", f"azimuth = {_toml_value(float(c.azimuth))}",
                f"elevation = {_toml_value(float(c.elevation))}"]
        if c.distance is not None:
            out.append(f"distance = {_toml_value(float(c.distance))}")
        if c.center is not None:
            out.append(f"center = {_toml_value([float(a) for a in c.center])}")
    for e in sc.events:
        out += ["", "[[event]]", f"time = {_toml_value(float(e.time))}"]
        if e.set:
            out.append(f"set = {_toml_value(e.set)}")
        if e.over:
            out.append(f"over = {_toml_value(float(e.over))}")
        if e.action:
            out.append(f"action = {_toml_value(e.action)}")
        if e.start is not None:
            out.append(f"start = {_toml_value([float(a) for a in e.start])}")
    for c in sc.captions:
        out += ["", "[[caption]]", f"start = {_toml_value(float(c.start))}", f"end = {_toml_value(float(c.end))}",
                f"text = {_toml_value(c.text)}"]
    return "\n".join(out) + "\n"


def save_scene(sc: Scene, path: str, comment: str = "") -> None:
    """Write the scene atomically (a temporary file in the same folder, then a rename)."""
    from models.export import atomic_write

    atomic_write(path, dump_scene(sc, comment).encode("utf-8"))
