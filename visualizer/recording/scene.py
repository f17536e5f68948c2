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

    [[caption]]
    start = 0.5
    end = 4.0
    text = "Gradient descent lands on the nearest solution"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from visualizer.recording.keyframes import EASINGS, Camera

ACTIONS = ("descent", "random_starts", "reset")


class SceneError(ValueError):
    """A malformed scene: the message names the file, the line and the field."""


@dataclass
class Event:
    time: float
    set: dict = field(default_factory=dict)
    action: str | None = None
    start: list | None = None


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
        v = cast(v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise fail(name, f"{v} is outside [{lo}, {hi}]", key)
        return v

    known = {"lab", "seed", "size", "fps", "duration", "steps_per_frame", "easing", "settings", "camera", "event",
             "caption"}
    for key in doc:
        if key not in known:
            raise fail(key, f"unknown field; known: {', '.join(sorted(known))}", key)
    lab = doc.get("lab")
    if not isinstance(lab, str):
        raise fail("lab", "missing or not a string", "lab")
    if labs is not None and lab not in labs:
        raise fail("lab", f"unknown lab '{lab}'; labs: {', '.join(labs)}", "lab")
    sc = Scene(lab=lab, path=path)
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
    sc.settings = dict(settings)
    for i, cam in enumerate(doc.get("camera", [])):
        name = f"camera[{i}]"
        if not isinstance(cam, dict):
            raise fail(name, "expected a table", "[[camera]]")
        t = number(cam, "time", f"{name}.time", 0, sc.duration)
        az = number(cam, "azimuth", f"{name}.azimuth") if "azimuth" in cam else -60.0
        el = number(cam, "elevation", f"{name}.elevation", -89.9, 89.9) if "elevation" in cam else 28.0
        dist = number(cam, "distance", f"{name}.distance", 1e-3, 1e6) if "distance" in cam else 10.0
        center = cam.get("center", [0.0, 0.0, 0.0])
        if not (isinstance(center, list) and len(center) == 3):
            raise fail(f"{name}.center", "expected [x, y, z]", "center")
        sc.camera.append((t, Camera(az, el, dist, tuple(float(c) for c in center))))
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
            e.set = dict(ev["set"])
        if "action" in ev:
            if ev["action"] not in ACTIONS:
                raise fail(f"{name}.action", f"one of {', '.join(ACTIONS)}", "action")
            e.action = ev["action"]
            e.start = ev.get("start")
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
