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
