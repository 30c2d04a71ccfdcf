"""The `unsure` label on the shipped samples, shipped model and real SQLite: a face file whose vote
wins too weakly goes to OUT/unsure/ with its best guess kept, `query` and `stats` know it, and a
new threshold refiles unchanged files from their records without reading them again."""
import csv
import json
import sqlite3
from pathlib import Path

from conftest import SAMPLES

from stickersort.model.labels import EMOTIONS

# The shipped model is over 0.99 sure of some samples (the astronaut), so only 1 makes every
# face file unsure.
EVERY_FACE = "1"


def face_files():
    with open(SAMPLES / "labels.csv", newline="") as f:
        return {row["file"] for row in csv.DictReader(f) if int(row["faces"])}


def scan(cli, tmp_path, *extra):
    result = cli("scan", SAMPLES, "--out", tmp_path / "out", "--db", tmp_path / "s.db", "--json", "-q", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def records(tmp_path):
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.row_factory = sqlite3.Row
    return {Path(r["path"]).name: dict(r) for r in conn.execute("select * from files")}


def entries(tmp_path):
    """OUT's entries: file name -> the folder it is filed in."""
    return {p.name: p.parent.name for p in (tmp_path / "out").rglob("*") if p.is_symlink()}


def listed(cli, tmp_path, *args):
    return json.loads(cli("query", *args, "--db", tmp_path / "s.db", "--json").stdout)


def test_weak_winners_go_to_unsure_with_their_guess_kept(cli, tmp_path):
    summary = scan(cli, tmp_path, "--min-confidence", EVERY_FACE)
    faces = face_files()
    rows = records(tmp_path)
    assert summary["labels"] == {"unsure": len(faces), "noface": len(rows) - len(faces)}
    for name, row in rows.items():
        if name in faces:
            scores = json.loads(row["scores"])
            assert row["label"] == "unsure" and row["guess"] == max(scores, key=scores.get), row
            assert row["confidence"] == scores[row["guess"]]
        else:
            assert row["label"] == "noface" and row["guess"] is None
    assert entries(tmp_path) == {name: row["label"] for name, row in rows.items()}

    counts = json.loads(cli("stats", "--db", tmp_path / "s.db", "--json").stdout)
    assert counts == {**dict.fromkeys(counts, 0), "unsure": len(faces), "noface": len(rows) - len(faces)}
    assert {r["path"] for r in listed(cli, tmp_path, "unsure")} == {rows[f]["path"] for f in faces}

    guess = max(EMOTIONS, key=lambda e: sum(r["guess"] == e for r in rows.values()))
    assert listed(cli, tmp_path, guess) == []  # no file is filed under it...
    found = listed(cli, tmp_path, guess, "--include-unsure")  # ...but these are its best guesses
    assert {Path(r["path"]).name for r in found} == {n for n, r in rows.items() if r["guess"] == guess}
    assert all(r["label"] == "unsure" and r["guess"] == guess for r in found)
    assert [r["confidence"] for r in found] == sorted((r["confidence"] for r in found), reverse=True)
    text = cli("query", guess, "--include-unsure", "--db", tmp_path / "s.db").stdout.splitlines()
    assert len(text) == len(found)
    assert all(line.startswith("unsure ") and line.endswith(f"  (guess: {guess})") for line in text)
    for other in ([], ["unsure"], ["noface"]):  # where the flag would change nothing, it is refused
        refused = cli("query", *other, "--include-unsure", "--db", tmp_path / "s.db")
        assert refused.exit_code == 2 and len(refused.output.splitlines()) == 1 and "expression LABEL" in refused.output


def test_a_new_threshold_refiles_without_reading_again(cli, tmp_path):
    scan(cli, tmp_path, "--min-confidence", EVERY_FACE)
    faces = face_files()
    guesses = {name: row["guess"] for name, row in records(tmp_path).items()}

    sure = scan(cli, tmp_path, "--min-confidence", "0")
    assert sure["classified"] == 0 and sure["unchanged"] == len(guesses)
    assert sure["links"]["moved"] == len(faces) and sure["links"]["created"] == 0
    assert "unsure" not in sure["labels"]
    assert entries(tmp_path) == {name: guess or "noface" for name, guess in guesses.items()}
    assert not (tmp_path / "out" / "unsure").exists()  # emptied, so removed
    assert {n: r["label"] for n, r in records(tmp_path).items() if n in faces} == {f: guesses[f] for f in faces}

    # Between the two: the most common guess's best file stays sure, the others of it go unsure;
    # query lists the sure one first, then the unsure ones.
    guess = max(EMOTIONS, key=lambda e: list(guesses.values()).count(e))
    mine = {n: r["confidence"] for n, r in records(tmp_path).items() if r["guess"] == guess}
    assert len(set(mine.values())) > 1, mine
    mixed = scan(cli, tmp_path, "--min-confidence", str(max(mine.values())))
    assert mixed["classified"] == 0
    found = listed(cli, tmp_path, guess, "--include-unsure")
    labels = [r["label"] for r in found]
    assert labels == [guess] * labels.count(guess) + ["unsure"] * labels.count("unsure")
    assert labels.count(guess) >= 1 and labels.count("unsure") >= 1
    assert [r["path"] for r in listed(cli, tmp_path, guess)] == [r["path"] for r in found if r["label"] == guess]

    # The live page's matches: the same order, the unsure ones marked in the window's text too.
    from stickersort.sorter.live import Matches
    matches = Matches(tmp_path / "s.db", limit=len(found))
    assert [r["path"] for r in matches(guess)] == [r["path"] for r in found]
    lines = matches.lines(guess)[1:]
    assert [line.endswith(" (unsure)") for line in lines] == [label == "unsure" for label in labels]


def test_a_threshold_not_given_is_remembered_as_the_models_default(cli, tmp_path):
    """So a folder's next scan follows the default of the model it runs with; one given stays."""
    from stickersort.model.labels import DEFAULT_MIN_CONFIDENCE

    remembered = lambda: [r[0] for r in sqlite3.connect(tmp_path / "s.db").execute("select min_confidence from folders")]
    unsure = lambda summary: summary["labels"].get("unsure", 0)
    by_default = scan(cli, tmp_path)
    assert remembered() == [None]
    rows = records(tmp_path)
    weak = {n for n, r in rows.items() if r["guess"] and r["confidence"] < DEFAULT_MIN_CONFIDENCE}
    assert {n for n, r in rows.items() if r["label"] == "unsure"} == weak and unsure(by_default) == len(weak)

    assert unsure(scan(cli, tmp_path, "--min-confidence", EVERY_FACE)) == len(face_files())
    assert remembered() == [1.0]
    assert unsure(scan(cli, tmp_path)) == len(face_files()) and remembered() == [1.0]  # given once, kept
    assert unsure(scan(cli, tmp_path, "--min-confidence", "default")) == len(weak) and remembered() == [None]
    wrong = cli("scan", SAMPLES, "--db", tmp_path / "s.db", "--min-confidence", "defaults")
    assert wrong.exit_code == 2 and "'defaults' is not a valid number or default" in wrong.stderr, wrong.stderr


def test_a_database_from_before_unsure_still_opens_and_scans(cli, tmp_path):
    scan(cli, tmp_path, "--min-confidence", "0")
    with sqlite3.connect(tmp_path / "s.db") as conn:  # as an older stickersort made it
        conn.execute("alter table files drop column guess")
    faces = face_files()
    labels = {name: row["label"] for name, row in records(tmp_path).items()}

    everything = listed(cli, tmp_path)  # a reader adds the column
    assert len(everything) == len(labels) and all(r["guess"] is None for r in everything)
    face = sorted(faces)[0]  # before: "vote  no face found" for a face file, until a rescan
    shown = cli("show", SAMPLES / face, "--db", tmp_path / "s.db")
    assert f"vote       {labels[face]} " in shown.stdout, shown.output
    again = scan(cli, tmp_path, "--min-confidence", EVERY_FACE)
    assert again["classified"] == 0 and again["links"]["moved"] == len(faces)
    rows = records(tmp_path)
    assert {n: r["guess"] for n, r in rows.items() if n in faces} == {f: labels[f] for f in faces}
    assert all(rows[f]["label"] == "unsure" for f in faces)
    name = sorted(faces)[0]
    found = listed(cli, tmp_path, labels[name], "--include-unsure")
    assert rows[name]["path"] in [r["path"] for r in found]


def test_watch_takes_the_threshold_too(cli):
    assert "--min-confidence" in cli("watch", "--help").stdout
    assert "OUT/unsure/" in cli("scan", "--help").stdout
