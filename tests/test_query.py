"""`stickersort query` and `stats` read what `scan` wrote, without TensorFlow or ONNX Runtime."""
import json
import os
import sqlite3
import subprocess
import sys

import click
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
    scored = [r["confidence"] for r in everything if r["label"] != "noface"]
    assert scored == sorted(scored, reverse=True) and None not in scored
    noface = json.loads(cli("query", "noface", "--db", db, "--json").stdout)
    assert sorted(r["path"].rsplit("/", 1)[1] for r in noface) == ["green.png", "plain.png"]
    assert len(json.loads(cli("query", "noface", "--db", db, "--json", "--limit", "1").stdout)) == 1
    every = json.loads(cli("query", "noface", "--db", db, "--json").stdout)  # past SQLite's 2**63: no limit
    assert json.loads(cli("query", "noface", "--db", db, "--json", "--limit", str(2**64)).stdout) == every
    face = next(r for r in everything if r["path"].endswith("face.png"))
    above = json.loads(cli("query", face["label"], "--db", db, "--json",
                           "--min-confidence", str(face["confidence"] + 0.001)).stdout)
    assert all(r["confidence"] > face["confidence"] for r in above)
    text = cli("query", "noface", "--db", db).stdout.splitlines()
    assert len(text) == 2 and all(line.startswith("noface") for line in text)


def test_noface_files_show_no_confidence(cli, db):
    rows = json.loads(cli("query", "noface", "--db", db, "--json").stdout)
    assert [(r["confidence"], r["margin"]) for r in rows] == [(None, None)] * 2
    for line in cli("query", "noface", "--db", db).stdout.splitlines():
        assert line.split()[:2] == ["noface", "-"], line


def test_a_record_without_confidence_is_listed(cli, db):
    """A model that gave NaN stored a null confidence: query lists the file rather than failing."""
    with sqlite3.connect(db) as conn:
        conn.execute("update files set confidence = null where label not in ('noface') and error is null")
    result = cli("query", "--db", db)
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3


def test_stats_lists_every_label_with_zeros(cli, db):
    counts = json.loads(cli("stats", "--db", db, "--json").stdout)
    assert list(counts) == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "unsure",
                            "noface", "error"]
    assert counts["noface"] == 2 and counts["error"] == 1 and sum(counts.values()) == 4
    assert list(counts.values()).count(0) == 7  # every label but noface, error and the face's
    text = cli("stats", "--db", db).stdout.splitlines()
    assert [line.split() for line in text] == [[label, str(n)] for label, n in counts.items()]


def test_query_error_lists_unreadable_files_with_why(cli, db):
    rows = json.loads(cli("query", "error", "--db", db, "--json").stdout)
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["broken.gif"]
    assert rows[0]["label"] is None and rows[0]["error"]
    text = cli("query", "error", "--db", db).stdout.splitlines()
    assert text == [f"error           {rows[0]['path']}: {rows[0]['error']}"]


def test_an_empty_query_says_so_on_stderr(cli, db):
    filed = {r["label"] for r in json.loads(cli("query", "--db", db, "--json").stdout)}
    absent = next(label for label in ("disgust", "fear", "angry") if label not in filed)
    result = cli("query", absent, "--db", db)
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr.strip() == f"no {absent} stickers in {db}"
    result = cli("query", absent, "--db", db, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == [] and f"no {absent} stickers" in result.stderr
    result = cli("query", "--db", db, "--min-confidence", "1")
    assert result.stdout == "" and "no stickers scored 1.0 or more" in result.stderr


def test_query_and_stats_help_every_option_and_list_the_labels(cli):
    from stickersort.sorter.cli import query, stats
    for command in (query, stats):
        assert all(p.help for p in command.params if isinstance(p, click.Option)), command.name
    text = " ".join(cli("query", "--help").stdout.split())
    assert "angry, disgust, fear, happy, sad, surprise, neutral, unsure, noface, error" in text


@pytest.mark.parametrize("args,message", [
    (["query", "smug"], "unknown label 'smug'"),
    (["query", "happy", "--db", "{tmp}/none.db"], "no database at"),
    (["stats", "--db", "{tmp}/none.db"], "no database at"),
    (["query", "--db", "{tmp}"], "is a directory"),  # before: "disk I/O error"
])
def test_query_errors_are_one_line(cli, tmp_path, args, message):
    result = cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["query"], ["query", "happy", "--json"], ["stats"]])
def test_query_and_stats_import_nothing_heavy(db, args):
    """Their time is mostly start-up: sqlite-utils (numpy, dateutil with it) alone was half."""
    code = ("import sys; from stickersort.sorter.cli import cli\n"
            f"cli.main({[*args, '--db', str(db)]!r}, standalone_mode=False)\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'cv2', 'numpy', 'sqlite_utils', 'pandas') "
            "if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


@pytest.mark.parametrize("command", [["query"], ["stats"], ["dupes"], ["prune", "--dry-run"], ["label", "a.png", "sad"],
                                     ["scan", "src", "--out", "out", "--dry-run"]])
def test_a_pipe_named_as_the_database_is_refused_not_waited_on(tmp_path, command):
    """Before: the readers waited for ever on the pipe's open (the writers said "disk I/O error");
    a scan's dry run took it for no database yet, and planned a whole scan."""
    os.mkfifo(tmp_path / "f.db")
    (tmp_path / "src").mkdir()
    blank().save(tmp_path / "src" / "a.png")
    result = subprocess.run([sys.executable, "-m", "stickersort.sorter", *command, "--db", str(tmp_path / "f.db")],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"Error: --db {tmp_path / 'f.db'} is not a regular file (a pipe or device); give the database file"]
