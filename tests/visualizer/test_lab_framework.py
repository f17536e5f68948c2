"""A lab of declared settings only gets a generated panel, persistence across a restart, strict scene-file
errors naming the range, and the reactions its settings declare, with no other code."""

from dataclasses import dataclass

import pytest

from visualizer.labs.base import Lab, SettingError
from visualizer.labs.schema import setting


# ---------------------------------------------------------------- the whole test lab
@dataclass
class ToyState:
    points: int = setting(5, "points", range=(1, 10), group="Toy", reacts="grid", tooltip="how many")
    rate: float = setting(0.1, "rate", range=(1e-3, 1.0), log=True, widget="slider", group="Toy", reacts="runs")
    kind: str = setting("a", "kind", choices=(("a", "first kind"), ("b", "second kind")), group="Toy")
    batch: int = setting(2, "batch", range=lambda s: (1, s.points), depends=("points",), group="Toy",
                         enabled_if=lambda s: s.kind == "b", reacts="runs")
    smooth: bool = setting(False, "smooth", group="View", reacts="redraw")


class ToyLab(Lab):
    key, title, state_cls = "toy", "Toy", ToyState

    def __init__(self, **kw):
        super().__init__(**kw)
        self.reacted = []
        self.make_form()

    def react_grid(self, changed):
        self.reacted.append(("grid", sorted(changed)))

    def react_runs(self, changed):
        self.reacted.append(("runs", sorted(changed)))
# ---------------------------------------------------------------- end of the test lab


@pytest.fixture
def toy(qtbot, fresh_settings):
    lab = ToyLab(start=False)
    qtbot.addWidget(lab)
    qtbot.addWidget(lab.controls())
    yield lab
    lab.shutdown()


def test_generated_panel_shows_and_writes_the_state(qtbot, toy):
    from PySide6.QtWidgets import QCheckBox, QComboBox, QGroupBox, QSlider, QSpinBox

    form = toy.controls()
    assert [g.title() for g in form.findChildren(QGroupBox)] == ["Toy", "View"]
    spin = toy.widget("points")
    assert isinstance(spin, QSpinBox) and (spin.minimum(), spin.maximum()) == (1, 10) and spin.value() == 5
    assert spin.toolTip() == "how many"
    assert isinstance(toy.widget("rate"), QSlider) and isinstance(toy.widget("smooth"), QCheckBox)
    combo = toy.widget("kind")
    assert isinstance(combo, QComboBox) and combo.currentText() == "first kind"
    # enabled_if follows the state
    assert not toy.widget("batch").isEnabled()
    combo.setCurrentIndex(1)
    assert toy.state.kind == "b" and toy.widget("batch").isEnabled()
    # a user's edit writes the state and triggers its declared reaction, once
    spin.setValue(8)
    assert toy.state.points == 8 and toy.reacted[-1] == ("grid", ["points"])
    # the dependent range follows, and a value outside it is settled into it
    toy.set_setting("batch", 7)
    assert toy.widget("batch").maximum() == 8
    spin.setValue(3)
    assert toy.state.batch == 3 and toy.widget("batch").value() == 3 and toy.widget("batch").maximum() == 3
    # one update, each declared reaction once, told every field that changed
    assert toy.reacted[-2:] == [("grid", ["batch", "points"]), ("runs", ["batch", "points"])]
    # a change from elsewhere (a scene) is shown by the control
    toy.apply_settings({"rate": 1.0, "smooth": True})
    assert toy.widget("rate").value() == toy.widget("rate").maximum() and toy.widget("smooth").isChecked()
    assert toy.reacted[-1] == ("runs", ["rate", "smooth"])  # redraw is a no-op here: only runs is recorded
    # the log slider maps its ticks onto the declared range
    toy.widget("rate").setValue(500)
    assert toy.state.rate == pytest.approx(10 ** -1.5, rel=1e-6)


def test_settings_survive_a_restart_and_saving_is_debounced(qtbot, fresh_settings, monkeypatch):
    from visualizer import settings as store

    writes = []
    real = store.save_json
    monkeypatch.setattr(store, "save_json", lambda key, value: writes.append(dict(value)) or real(key, value))
    lab = ToyLab(start=False)
    qtbot.addWidget(lab)
    for v in range(2, 9):  # many ticks of a spin box: one write, later
        lab.widget("points").setValue(v)
    assert writes == [] and store.load_json("labs/toy") == {}
    qtbot.waitUntil(lambda: len(writes) == 1, timeout=5000)
    assert writes[0]["points"] == 8 and store.load_json("labs/toy")["points"] == 8
    lab.set_setting("kind", "b")
    lab.shutdown()  # saves what is pending at once
    again = ToyLab(start=False)
    qtbot.addWidget(again)
    assert (again.state.points, again.state.kind) == (8, "b") and again.widget("points").value() == 8
    assert again.restore_problems == []
    again.shutdown()


def test_bad_stored_values_fall_back_to_their_defaults_and_are_named(qtbot, fresh_settings):
    from visualizer import settings as store

    store.save_json("labs/toy", {"points": 1e9, "rate": "fast", "kind": "z", "batch": 4, "smooth": True,
                                 "gone": 1})
    lab = ToyLab(start=False)
    qtbot.addWidget(lab)
    s = lab.state
    assert (s.points, s.rate, s.kind, s.batch, s.smooth) == (5, 0.1, "a", 4, True)
    text = " ".join(lab.restore_problems)
    assert "points" in text and "[1, 10]" in text and "rate" in text and "kind" in text
    store.save_json("labs/toy", {"points": 3, "batch": 9})  # batch past its dependent range: only batch goes
    lab2 = ToyLab(start=False)
    qtbot.addWidget(lab2)
    assert (lab2.state.points, lab2.state.batch) == (3, 2) and "batch" in " ".join(lab2.restore_problems)
    store.save_json("labs/toy", {"points": 1})  # a default that does not fit a stored neighbour: into its range
    lab3 = ToyLab(start=False)
    qtbot.addWidget(lab3)
    assert (lab3.state.points, lab3.state.batch) == (1, 1) and lab3.restore_problems == []
    lab3.shutdown()
    lab.shutdown()
    lab2.shutdown()


def test_scene_files_are_checked_strictly_with_the_range(tmp_path):
    from visualizer.labs import LabInfo
    from visualizer.recording.scene import SceneError, load_scene

    labs = {"toy": LabInfo("toy", "Toy", "", __name__, "ToyLab")}
    ok = tmp_path / "ok.toml"
    ok.write_text('lab = "toy"\nduration = 1\n[settings]\npoints = 4\nbatch = 4\nkind = "b"\n')
    assert load_scene(str(ok), labs).settings == {"points": 4, "batch": 4, "kind": "b"}
    for body, words in (("points = 40", ["points", "40", "[1, 10]"]),
                        ("kind = 'c'", ["kind", "one of: a, b"]),
                        ("points = 3\nbatch = 4", ["batch", "[1, 3]"]),
                        ("rate = 'x'", ["rate", "[0.001, 1]"]),
                        ("speed = 2", ["speed", "no such setting"])):
        bad = tmp_path / "bad.toml"
        bad.write_text(f'lab = "toy"\nduration = 1\n[settings]\n{body}\n')
        with pytest.raises(SceneError) as err:
            load_scene(str(bad), labs)
        assert str(bad) in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_strict_apply_takes_all_or_nothing(qtbot, toy):
    with pytest.raises(SettingError, match=r"points.*\[1, 10\]"):
        toy.apply_settings({"smooth": True, "points": 11})
    assert toy.state.smooth is False and toy.reacted == []


def test_scene_events_are_judged_with_the_settings_in_force_by_then(tmp_path):
    from visualizer.labs import LabInfo
    from visualizer.recording.scene import SceneError, load_scene

    labs = {"toy": LabInfo("toy", "Toy", "", __name__, "ToyLab")}
    path = tmp_path / "s.toml"
    # batch = 8 fits only once points = 9 is in force (set by the first event)
    body = ('lab = "toy"\nduration = 2\n[settings]\npoints = 3\n[[event]]\ntime = 0.5\nset = { points = 9 }\n'
            '[[event]]\ntime = 1\nset = { batch = 8 }\n')
    path.write_text(body)
    assert [e.set for e in load_scene(str(path), labs).events] == [{"points": 9}, {"batch": 8}]
    path.write_text(body.replace("points = 9", "points = 4"))
    with pytest.raises(SceneError, match=r"event\[1\]\.set\.batch.*\[1, 4\]"):
        load_scene(str(path), labs)
