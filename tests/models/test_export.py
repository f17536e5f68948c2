import numpy as np

from models import export


def test_mesh_files_decode(tmp_path):
    x = np.linspace(-1, 1, 5)
    z = np.add.outer(x, x) ** 2
    z[2, 2] = np.nan  # a gap: the four cells around it are left out
    verts, faces = export.grid_mesh(x, x, z)
    assert len(verts) == 25 and len(faces) == 2 * (16 - 4)
    export.write_obj(str(tmp_path / "s.obj"), verts, faces)
    lines = (tmp_path / "s.obj").read_text().splitlines()
    v = [line for line in lines if line.startswith("v ")]
    f = [line for line in lines if line.startswith("f ")]
    assert len(v) == 25 and len(f) == len(faces)
    assert min(int(t) for line in f for t in line.split()[1:]) == 1
    export.write_ply(str(tmp_path / "s.ply"), verts, faces)
    raw = (tmp_path / "s.ply").read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    assert b"element vertex 25" in head and f"element face {len(faces)}".encode() in head
    vv = np.frombuffer(body[: 25 * 12], dtype="<f4").reshape(25, 3)
    assert np.allclose(vv, verts, atol=1e-6)
    ff = np.frombuffer(body[25 * 12:], dtype=[("n", "u1"), ("i", "<i4", (3,))])
    assert np.all(ff["n"] == 3) and np.array_equal(ff["i"], faces)


def test_arrays_round_trip(tmp_path):
    x = np.linspace(-1, 1, 4)
    vals = np.arange(16.0).reshape(4, 4)
    export.write_npz(str(tmp_path / "s.npz"), x=x, y=x, loss=vals)
    back = np.load(tmp_path / "s.npz")
    assert np.array_equal(back["loss"], vals)
    export.write_csv(str(tmp_path / "s.csv"), export.surface_columns(x, x, vals))
    table = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert table.shape == (16, 3) and table[5, 2] == vals[1, 1]
    assert np.allclose(table[5, :2], [x[1], x[1]], rtol=1e-9)
