"""The shipped sample stickers, scanned by the CLI with the shipped model and detector."""
import csv
import sqlite3
from pathlib import Path

from conftest import SAMPLES, tree_hash


def test_every_sample_is_filed_by_its_faces(cli, tmp_path):
    with open(SAMPLES / "labels.csv", newline="") as f:
        expected = {row["file"]: int(row["faces"]) for row in csv.DictReader(f)}
    before = tree_hash(SAMPLES)
    result = cli("scan", SAMPLES, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "-q")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(tmp_path / "s.db")
    found = {Path(path).name: (faces, label, frames) for path, faces, label, frames in conn.execute(
        "select path, faces, label, frames_with_faces from files")}
    assert set(found) == set(expected)
    for name, want in expected.items():
        faces, label, frames = found[name]
        if want:
            # Each face-bearing frame should show all its people: faces per frame >= labelled.
            assert label != "noface" and faces >= want * frames > 0, (name, found[name])
        else:
            assert label == "noface" and faces == 0, (name, found[name])
        assert (tmp_path / "out" / label / name).is_symlink()
    assert tree_hash(SAMPLES) == before


def test_a_scan_of_the_samples_gives_the_recorded_records(cli, tmp_path):
    """Every record and face of a scan of sample_stickers/ as tests/sample_records.json has them:
    the same in the base install (no TensorFlow) as in the full one, where that file was made.
    A new model or crop changes them on purpose: then regenerate the file from a scan."""
    import json

    want = json.loads((Path(__file__).with_name("sample_records.json")).read_text())
    assert cli("scan", SAMPLES, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "-q").exit_code == 0
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.row_factory = sqlite3.Row
    files = {Path(r["path"]).name: r for r in conn.execute("select * from files")}
    assert set(files) == set(want["files"])
    for name, record in want["files"].items():
        got = files[name]
        assert (got["label"], got["guess"], got["faces"]) == (record["label"], record["guess"], record["faces"]), name
        assert abs(got["confidence"] - record["confidence"]) < 2e-3, name
        scores, wanted = json.loads(got["scores"] or "{}"), json.loads(record["scores"] or "{}")
        assert scores.keys() == wanted.keys() and all(abs(scores[k] - wanted[k]) < 2e-3 for k in scores), name
    faces = {}
    for r in conn.execute("select * from faces order by file, frame, x"):
        faces.setdefault(Path(r["file"]).name, []).append([r["frame"], r["x"], r["y"], r["w"], r["h"], r["label"]])
    assert faces == {name: [f[:5] + f[6:] for f in rows] for name, rows in want["faces"].items()}
