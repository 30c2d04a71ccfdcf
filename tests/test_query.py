"""`stickersort query` and `stats` read what `scan` wrote, without TensorFlow or ONNX Runtime."""
import json
import subprocess
import sys

import pytest

from media_makers import blank, hopper


@pytest.fixture
def db(cli, tmp_path):
    src = tmp_path / "memes"
    src.mkdir()
    hopper().save(src / "face.png")
    blank().save(src / "plain.png")
    blank(color=(0, 90, 0)).save(src / "green.png")
    (src / "broken.gif").write_text("nope")
    cli("scan", src, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "-q")
    return tmp_path / "s.db"


def test_query_lists_filters_and_prints_json(cli, db):
    everything = json.loads(cli("query", "--db", db, "--json").stdout)
    assert len(everything) == 3  # the broken file is an error, not a sticker
    assert [r["confidence"] for r in everything] == sorted((r["confidence"] for r in everything), reverse=True)
    noface = json.loads(cli("query", "noface", "--db", db, "--json").stdout)
    assert sorted(r["path"].rsplit("/", 1)[1] for r in noface) == ["green.png", "plain.png"]
    assert len(json.loads(cli("query", "noface", "--db", db, "--json", "--limit", "1").stdout)) == 1
    face = next(r for r in everything if r["path"].endswith("face.png"))
    above = json.loads(cli("query", face["label"], "--db", db, "--json",
                           "--min-confidence", str(face["confidence"] + 0.001)).stdout)
    assert all(r["confidence"] > face["confidence"] for r in above)
    text = cli("query", "noface", "--db", db).stdout.splitlines()
    assert len(text) == 2 and all(line.startswith("noface") for line in text)


def test_stats_counts_labels_and_errors(cli, db):
    counts = json.loads(cli("stats", "--db", db, "--json").stdout)
    assert counts["noface"] == 2 and counts["error"] == 1 and sum(counts.values()) == 4


@pytest.mark.parametrize("args,message", [
    (["query", "smug"], "unknown label 'smug'"),
    (["query", "happy", "--db", "{tmp}/none.db"], "no database at"),
    (["stats", "--db", "{tmp}/none.db"], "no database at"),
])
def test_query_errors_are_one_line(cli, tmp_path, args, message):
    result = cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_query_imports_neither_tensorflow_nor_onnxruntime(db):
    code = ("import sys; from stickersort.sorter.cli import cli\n"
            f"cli.main(['query', '--db', {str(db)!r}], standalone_mode=False)\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'cv2') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
