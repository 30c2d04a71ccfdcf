"""The done-when checks of the scan issue, on the shared stickers-dev folder."""
import csv
import json

from conftest import tree_hash


def test_stickers_dev_every_file_recorded_and_linked(cli, stickers_dev, tmp_path):
    labels = {r["file"]: r["label"] for r in csv.DictReader(open(stickers_dev / "labels.csv"))}
    before = tree_hash(stickers_dev)
    args = ("scan", stickers_dev, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "--json", "-q")
    first = json.loads(cli(*args).stdout)
    assert first["files"] == len(labels) and first["errors"] == 0
    assert first["links"]["created"] == len(labels)
    found = {p.name: p.parent.name for p in (tmp_path / "out").rglob("*") if p.is_symlink()}
    assert set(found) == set(labels)
    # Faces must be credible (found over half a clip's time), which costs a flickering face file
    # or two and keeps drawn, CGI and animal faces out: the stickers issue's bar is 20 of 21.
    noface = [f for f, label in labels.items() if label == "noface"]
    assert sum(found[f] == "noface" for f in noface) >= 0.95 * len(noface)
    faces = [f for f, label in labels.items() if label != "noface"]
    assert sum(found[f] != "noface" for f in faces) >= 0.93 * len(faces)
    second = json.loads(cli(*args).stdout)
    assert second["classified"] == 0 and second["unchanged"] == len(labels)
    assert second["links"]["created"] == second["links"]["moved"] == second["links"]["removed"] == 0
    assert tree_hash(stickers_dev) == before
