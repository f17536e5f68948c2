"""Declared settings: each field of a lab's state dataclass says what the app needs to know about it.

Qt-free. One declaration per setting (``setting(...)``) gives its label, tooltip, range (fixed, or a function of
the other settings), step and decimals, log scale, choices with display names, group, when it is enabled, when
its control commits, and which reaction a change triggers. The generated controls form
(``visualizer/views/form.py``), lenient restore of stored settings, strict checks of scene files and the lab's
reactions all read it; nothing else declares a range.

``Settings`` wraps one state object as the source of truth: every change (a user's hand through the form, a
scene file, the saved settings) goes through ``update``, which checks it, stores it and tells the subscribers
which fields changed.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: reactions in the order they run when one update triggers several
REACTIONS = ("problem", "grid", "runs", "redraw", "none")
MAX_TEXT = 2000  # a text setting (an expression, a width list) longer than this is refused
MAX_LIST = 64


class SettingError(ValueError):
    """A setting a lab does not have, or a value it cannot take: the message names the field and what is valid."""


@dataclass(frozen=True)
class Spec:
    """What one setting declares. ``range``, ``enabled_if`` and ``check`` may depend on the whole state."""

    label: str = ""
    tooltip: str = ""
    group: str = ""
    range: tuple | Callable | None = None  # (lo, hi), or state -> (lo, hi)
    step: float | None = None
    decimals: int | None = None
    log: bool = False  # a log-scale slider (and adaptive spin steps)
    choices: tuple = ()  # ((value, display name), ...)
    enabled_if: Callable | None = None  # state -> bool
    commit: str = "change"  # "change" (every edit), "finish" (editing finished), "enter" (Return only)
    reacts: str = "none"  # which reaction a change triggers: one of REACTIONS or a lab's own
    widget: str = "auto"  # "auto", "slider", "hidden", or the name of a lab's custom widget
    check: Callable | None = None  # (value, state) -> None or the reason the value is refused
    length: tuple = (1, MAX_LIST)  # list settings: the allowed number of items
    depends: tuple = ()  # settings this one's range or check reads (restored together when it fails)


def setting(default: Any, label: str = "", **spec) -> Any:
    """A dataclass field with its declaration: ``lr: float = setting(0.1, "learning rate", range=(1e-5, 1))``."""
    meta = {"spec": Spec(label=label, **spec)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def specs(state_cls) -> dict[str, Spec]:
    """Every field's declaration, in declaration order (a field declared without ``setting`` gets a bare one)."""
    return {f.name: f.metadata.get("spec", Spec(label=f.name)) for f in dataclasses.fields(state_cls)}


def kind(state_cls, name: str) -> type:
    return type(getattr(_defaults(state_cls), name))


_DEFAULTS: dict = {}


def _defaults(state_cls):
    if state_cls not in _DEFAULTS:
        _DEFAULTS[state_cls] = state_cls()
    return _DEFAULTS[state_cls]


def range_of(spec: Spec, state) -> tuple | None:
    r = spec.range
    return r(state) if callable(r) else r


def describe(state_cls, name: str, state=None) -> str:
    """What a setting accepts, in words ("a number in [0.1, 1000]", "one of: gd, adam")."""
    spec = specs(state_cls)[name]
    state = state if state is not None else _defaults(state_cls)
    k = kind(state_cls, name)
    if spec.choices:
        return "one of: " + ", ".join(str(v) for v, _ in spec.choices)
    r = range_of(spec, state)
    if k is bool:
        return "true or false"
    if k in (int, float):
        what = "an integer" if k is int else "a number"
        return f"{what} in [{r[0]:g}, {r[1]:g}]" if r else what
    if k is list:
        lo, hi = spec.length
        what = f"a list of {lo} numbers" if lo == hi else f"a list of {lo} to {hi} numbers"
        return what + (f" in [{r[0]:g}, {r[1]:g}]" if r else "")
    return "text"


def coerce(state_cls, name: str, value: Any, state=None) -> Any:
    """``value`` as setting ``name`` takes it (an int where a float is expected is fine), or SettingError naming
    the field and what it accepts. ``state`` is what dependent ranges and checks read (default: the defaults)."""
    fields = specs(state_cls)
    if name not in fields:
        raise SettingError(f"{name}: no such setting; known: {', '.join(fields)}")
    spec, k = fields[name], kind(state_cls, name)
    state = state if state is not None else _defaults(state_cls)
    shown_state = state if state is not _NO_LIMITS else _defaults(state_cls)

    def bad(why: str = "") -> SettingError:
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        return SettingError(f"{name}: {why or 'got ' + shown}; expected "
                            f"{describe(state_cls, name, shown_state)}")

    if k is bool:
        if not isinstance(value, bool):
            raise bad()
    elif k in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if isinstance(value, float) and not math.isfinite(value):
            raise bad()
        if k is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise bad()
                value = int(value)
        else:
            try:
                value = float(value)
            except OverflowError:
                raise bad() from None
    elif k is str:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise bad()
    elif k is list:
        lo, hi = spec.length
        if not isinstance(value, (list, tuple)) or not lo <= len(value) <= hi:
            raise bad()
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in value):
            raise bad()
        try:
            value = [float(a) for a in value]
        except OverflowError:
            raise bad() from None
        if not all(math.isfinite(a) for a in value):
            raise bad()
    if spec.choices and value not in [v for v, _ in spec.choices]:
        raise bad(f"'{value}' is not a choice")
    limits = state is not _NO_LIMITS  # the first pass of a strict check: fixed ranges only
    r = range_of(spec, state) if limits or not callable(spec.range) else None
    if r is not None and k in (int, float) and not r[0] <= value <= r[1]:
        raise bad(f"{value:g} is out of range")
    if r is not None and k is list and not all(r[0] <= a <= r[1] for a in value):
        raise bad("an item is out of range")
    if spec.check is not None and limits:
        why = spec.check(value, state)
        if why:
            raise SettingError(f"{name}: {why}")
    return value


def check_values(state_cls, values: dict, where: str = "settings", base: dict | None = None) -> dict:
    """Strict (scene files): every value must be one the setting accepts, with dependent ranges and checks
    judged against the defaults updated with ``base`` (what is set by then: a scene's settings and earlier
    events) and all of ``values``. The error names ``where``, the field and what it accepts."""
    if not isinstance(values, dict):
        raise SettingError(f"{where}: expected a table of settings")
    trial = dataclasses.replace(_defaults(state_cls))
    for k, v in (base or {}).items():
        setattr(trial, k, v)
    out = {}
    for k, v in values.items():  # kinds first (a dependent range may read another of these values)
        try:
            out[k] = coerce(state_cls, k, v, _NO_LIMITS)
        except SettingError as exc:
            raise SettingError(f"{where}.{exc}") from None
        setattr(trial, k, out[k])
    for k, v in out.items():
        try:
            coerce(state_cls, k, v, trial)
        except SettingError as exc:
            raise SettingError(f"{where}.{exc}") from None
    return out


class _NoLimits:
    """A stand-in state for the first pass of ``check_values``: dependent ranges and checks are skipped."""


_NO_LIMITS = _NoLimits()


def restore(state_cls, stored: Any) -> tuple[Any, list[str]]:
    """Lenient (saved settings): a state with every stored value the setting accepts; each other one keeps
    its default and is named in the returned list ("lr: 1e9 is out of range ...")."""
    s = state_cls()
    problems: list[str] = []
    if not isinstance(stored, dict):
        return s, ([] if stored is None else ["the stored settings are not a table"])
    fields = specs(state_cls)
    taken = set()  # the stored values accepted so far
    for name in fields:  # kinds and fixed ranges
        if name in stored:
            try:
                setattr(s, name, coerce(state_cls, name, stored[name], _NO_LIMITS))
                taken.add(name)
            except SettingError as exc:
                problems.append(str(exc))
    defaults = state_cls()
    for _ in range(4):  # dependent ranges and checks, against the restored neighbours
        bad = []
        for name in fields:
            try:
                coerce(state_cls, name, getattr(s, name), s)
            except SettingError as exc:
                bad.append((name, str(exc)))
        if not bad:
            break
        for name, text in bad:
            spec, v = fields[name], getattr(s, name)
            if name in taken:  # a stored value that does not fit its neighbours: back to its default
                problems.append(text)
                taken.discard(name)
                setattr(s, name, getattr(defaults, name))
            elif callable(spec.range) and isinstance(v, (int, float)) and not isinstance(v, bool):
                lo, hi = spec.range(s)  # a default that does not fit the restored neighbours: into the range
                setattr(s, name, type(v)(min(max(v, lo), hi)))
            else:  # nothing else fits: the neighbours it reads go back to their defaults too
                problems.append(text)
                for n in spec.depends:
                    taken.discard(n)
                    setattr(s, n, getattr(defaults, n))
    return s, problems


def as_dict(state) -> dict:
    return dataclasses.asdict(state)


class Settings:
    """One lab's state object, changed only through ``update``; subscribers hear which fields changed.

    Subscribers are held weakly (a bound method's object is not kept alive by this, and no reference cycle
    runs through a Qt object)."""

    def __init__(self, state) -> None:
        self.state = state
        self.cls = type(state)
        self.specs = specs(self.cls)
        self._subs: list = []
        self.settled: dict = {}

    def subscribe(self, callback: Callable) -> None:
        """``callback(changed: dict name -> old value, source: str)`` after every update that changed something."""
        ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else (lambda cb=callback: cb)
        self._subs.append(ref)

    def get(self, name: str) -> Any:
        return getattr(self.state, name)

    def check(self, values: dict) -> dict:
        """``values`` as the settings take them, judged together with the current state (SettingError)."""
        trial = dataclasses.replace(self.state)
        out = {}
        for k, v in values.items():
            out[k] = coerce(self.cls, k, v, _NO_LIMITS)
            setattr(trial, k, out[k])
        for k, v in out.items():
            coerce(self.cls, k, v, trial)
        return out

    def update(self, values: dict, source: str = "user") -> dict:
        """Check ``values`` (all or none are taken: SettingError), store them, then settle the settings whose
        dependent range no longer holds their value (clamped into it), and notify. Returns what changed
        (name -> old value)."""
        values = self.check(values)
        changed = {}
        for k, v in values.items():
            old = getattr(self.state, k)
            if old != v:
                changed[k] = old
                setattr(self.state, k, v)
        #: the settings moved into a dependent range by the last update (name -> value before), for messages
        self.settled = self._settle(exclude=values)
        changed.update(self.settled)
        if changed:
            for ref in list(self._subs):
                cb = ref()
                if cb is None:
                    self._subs.remove(ref)
                else:
                    cb(changed, source)
        return changed

    def _settle(self, exclude: dict) -> dict:
        """Settings whose dependent range moved (a batch size past the new number of points): into the range."""
        moved = {}
        for name, spec in self.specs.items():
            if name in exclude or not callable(spec.range):
                continue
            v = getattr(self.state, name)
            lo, hi = spec.range(self.state)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not lo <= v <= hi:
                moved[name] = v
                setattr(self.state, name, type(v)(min(max(v, lo), hi)))
        return moved

    def enabled(self, name: str) -> bool:
        f = self.specs[name].enabled_if
        return True if f is None else bool(f(self.state))

    def reactions(self, changed) -> list[str]:
        """The reactions the changed fields trigger, each once, in ``REACTIONS`` order (a lab's own after)."""
        wanted = {self.specs[n].reacts for n in changed}
        known = [r for r in REACTIONS if r in wanted]
        return known + sorted(wanted - set(REACTIONS))
