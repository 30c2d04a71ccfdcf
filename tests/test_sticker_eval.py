"""evaluate --stickers (a labelled folder through the real scan), evaluate --pipeline (FER2013
faces on generated cards through the scan's path) and the training views made the same way."""
import csv
import json
import os
import shutil

import numpy as np

from conftest import SAMPLES, tree_hash

LABELS = {"astronaut.jpg": "happy", "astronaut_zoom.gif": "happy", "hopper.png": "neutral",
          "two_faces.jpg": "ambiguous", "rocket.png": "noface", "caption.png": "noface",
          "confetti.gif": "noface", "loading.webp": "noface"}


def labelled_folder(tmp_path, labels=LABELS):
    folder = tmp_path / "labelled"
    folder.mkdir()
    for name in labels:
        shutil.copy(SAMPLES / name, folder / name)
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "source"])
        writer.writerows([name, label, "still" if "." in name and not name.endswith(".gif") else "animated"]
                         for name, label in labels.items())
    return folder


def test_a_labelled_folder_is_scored_through_the_scan_with_its_curve_and_plot(cli, tmp_path):
    folder = labelled_folder(tmp_path)
    before = tree_hash(folder)
    result = cli("evaluate", "--stickers", folder, "--json", "--plot", tmp_path / "curve.png",
                 "--against", SAMPLES.parent / "model" / "stickernet.onnx")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files"] == len(LABELS)
    assert report["noface_right"] == {"right": 4, "n": 4, "share": 1.0}
    assert report["face_found"]["n"] == 4 and report["face_found"]["right"] == 4
    assert report["emotion_accuracy"]["n"] == 3
    assert sum(sum(row.values()) for row in report["confusion"].values()) == len(LABELS)
    assert report["confusion"]["ambiguous"]["noface"] == 0
    assert set(report["by_source"]) == {"still", "animated"}
    curve = report["curve"]
    assert curve[0]["threshold"] == 0.0 and curve[0]["coverage"] == 1.0
    assert all(a["given"] >= b["given"] for a, b in zip(curve, curve[1:]))
    assert report["against"]["gap"] == 0 and report["against"]["only_this"] == [] and report["against"]["tie"]
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert tree_hash(folder) == before and not (folder / "labelled-by-emotion").exists()
    text = cli("evaluate", "--stickers", folder)
    assert "emotion 2/3" in text.stdout or "emotion" in text.stdout
    assert "threshold  given  precision  coverage" in text.stdout


def test_a_folder_of_faceless_labels_alone_still_gets_its_plot(cli, tmp_path):
    """A face labelled noface: given an emotion, yet no emotion file to cover. Before: the report,
    then a TypeError from the plot, exit 70 and no PNG."""
    folder = labelled_folder(tmp_path, {"hopper.png": "noface", "two_faces.jpg": "ambiguous"})
    result = cli("evaluate", "--stickers", folder, "-q", "--plot", tmp_path / "curve.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_the_unsure_threshold_is_sought_in_steps_finer_than_the_curve_shown():
    from stickersort.sorter.sticker_eval import score

    # Four right files at 0.9 and 0.57, wrong ones at 0.562 and 0.561: precision reaches 0.8 only
    # above them, between two of the curve's 0.05 steps.
    confidences = {"a": (0.9, "happy"), "b": (0.9, "happy"), "c": (0.9, "happy"), "d": (0.57, "happy"),
                   "e": (0.562, "sad"), "f": (0.561, "sad")}
    labels = {name: ("happy", "all") for name in confidences}
    records = {name: {"error": None, "faces": 1, "scores": json.dumps({label: conf, "neutral": 0.01})}
               for name, (conf, label) in confidences.items()}
    t = score(labels, records)["threshold_80"]
    assert (t["threshold"], t["given"], t["right"]) == (0.57, 4, 4)
    assert t["coverage"] == round(4 / 6, 4) and t["coverage_at_least_60"]


def test_a_folder_without_usable_labels_is_a_one_line_error(cli, tmp_path):
    folder = labelled_folder(tmp_path, {"rocket.png": "rocketish"})
    result = cli("evaluate", "--stickers", folder)
    assert result.exit_code == 2 and "unknown labels rocketish" in result.output
    (folder / "labels.csv").unlink()
    result = cli("evaluate", "--stickers", folder)
    assert result.exit_code == 2 and "labels.csv" in result.output
    assert len(result.output.strip().splitlines()) == 2  # the header line, then the error
    result = cli("evaluate")
    assert result.exit_code == 2 and "--stickers" in result.output


def test_a_labels_csv_it_cannot_score_as_given_is_refused(cli, tmp_path):
    """Before: a short row or a Latin-1 file ended in exit 70; a BOM read as missing columns; a
    path outside DIR or a file listed twice was scored silently (as wrong, or by its last row)."""
    folder = labelled_folder(tmp_path, {"rocket.png": "noface", "hopper.png": "neutral"})
    cases = {"file,label\nrocket.png\n".encode(): "labels.csv:2: expected a file name and a label",
             b"file,label\nrocket.png,noface\n,happy\n": "labels.csv:3: expected",  # before: "missing, e.g. "
             b"file,label\nrocket.png,\n": "labels.csv:2: expected",  # before: "unknown labels ;"
             "file,label\nrocket.png,noface\ncafé.png,happy\n".encode("latin-1"): "not a UTF-8 csv",
             # A long notes cell: valid UTF-8, past csv's field limit (before: "not a UTF-8 csv").
             b"file,label,notes\nrocket.png,noface," + b"x" * 140_000 + b"\n": "field larger than field limit",
             b"file,label\n": "no rows",
             b"file,label\n../labelled/rocket.png,noface\n": "not a file name",
             b"file,label\nrocket.png,noface\nrocket.png,sad\n": "more than once",
             # Before: never scanned, so scored as unreadable and wrong, without a word.
             b"file,label\nrocket.png,noface\nnotes.txt,happy\n": "notes.txt is not a file the scan reads",
             b"file,label\nrocket.png,noface\nlink.png,happy\n": "link.png is not a file the scan reads"}
    (folder / "notes.txt").write_text("")
    (folder / "link.png").symlink_to(folder / "hopper.png")
    for text, words in cases.items():
        (folder / "labels.csv").write_bytes(text)
        result = cli("evaluate", "--stickers", folder, "-q")
        assert result.exit_code == 2 and words in result.output and len(result.output.splitlines()) == 1, text
    (folder / "labels.csv").write_bytes("\ufefffile,label\nrocket.png,noface\n".encode())  # as a spreadsheet saves it
    result = cli("evaluate", "--stickers", folder, "-q", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["noface_right"]["right"] == 1
    # Labels as a person types them (before: "unknown labels  Neutral, NoFace").
    (folder / "labels.csv").write_text("file, label\nrocket.png,NoFace\nhopper.png, Neutral\n")  # header too
    result = cli("evaluate", "--stickers", folder, "-q", "--json")
    assert result.exit_code == 0 and sum(json.loads(result.stdout)["confusion"]["neutral"].values()) == 1, result.output
    (folder / "labels.csv").unlink()
    (folder / "labels.csv").mkdir()
    result = cli("evaluate", "--stickers", folder, "-q")
    assert result.exit_code == 2 and "labels.csv: a folder, not a file" in result.output  # was "no such file"
    (folder / "labels.csv").rmdir()
    os.mkfifo(folder / "labels.csv")
    result = cli("evaluate", "--stickers", folder, "-q")
    assert result.exit_code == 2 and "labels.csv: not a regular file (a FIFO or socket)" in result.output  # the same


def test_a_model_it_cannot_load_is_refused_before_any_scoring(cli, tmp_path):
    """Before: --stickers with an unloadable model reported 0 % with exit 0."""
    folder = labelled_folder(tmp_path, {"rocket.png": "noface"})
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("not a model")
    for args in (("--model", garbage), ("--against", garbage)):
        result = cli("evaluate", "--stickers", folder, "-q", *args)
        assert result.exit_code == 2 and "not an ONNX model" in result.output and len(result.output.splitlines()) == 1


def test_pipeline_figures_stand_beside_the_direct_ones(cli, fer2013):
    result = cli("evaluate", fer2013, "--split", "PublicTest", "--limit", "80", "--pipeline", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    p = report["pipeline"]
    assert p["direct"] == report["accuracy"]
    assert 0.85 <= p["face_found"] <= 1.0
    assert p["accuracy_all"] <= p["accuracy_found"]
    # Through the scan, the same faces are still mostly read as their label.
    assert p["accuracy_found"] > 0.5


def test_training_views_are_the_scans_crops_of_faces_on_cards(fer2013):
    from stickersort.model.faces import make_detector
    from stickersort.sorter.pipeline import frame_faces
    from stickersort.training.cards import make_card, scanner_views
    from stickersort.training.data import load

    faces, targets = load(fer2013)["PublicTest"]
    faces, targets = faces[:40], targets[:40]
    views, view_targets = scanner_views(faces, targets, 1, seed=3)
    assert views.shape[1:] == (48, 48) and views.dtype == np.uint8
    assert 0.85 * len(faces) <= len(views) <= len(faces)
    # Each view is what the scan would crop from that face's card, with the face's own target.
    card = make_card(faces[0], 4 * 7_000_003, sticker_look=True).rgb
    found, crops = frame_faces(make_detector(), card)
    assert found and np.array_equal(views[0], crops[int(np.argmax([f.score for f in found]))])
    assert np.array_equal(view_targets[0], targets[0])


def test_the_crop_frames_a_found_face_as_fer2013_framed_it(fer2013):
    """Pixel agreement between the crop of a face found on a plain card and the face itself: the
    calibrated frame beats the 20 % margin around the box that scan used before."""
    from stickersort.model.faces import FER_FRAMES, crop, make_detector
    from stickersort.training.cards import make_card
    from stickersort.training.data import load

    faces = load(fer2013)["PublicTest"][0][:60]
    detector = make_detector()
    agreement = {"calibrated": [], "margin 0.2": []}
    for i, face in enumerate(faces):
        card = make_card(face, i)
        found = detector.detect(card.rgb)
        if found:
            best = max(found, key=lambda f: f.score)
            for name, frame in (("calibrated", FER_FRAMES["blazeface"]), ("margin 0.2", (1.4, 0.0, 0.0))):
                view = crop(card.rgb, best, frame).ravel().astype(float)
                agreement[name].append(np.corrcoef(view, face.ravel().astype(float))[0, 1])
    assert len(agreement["calibrated"]) >= 50
    assert np.median(agreement["calibrated"]) > np.median(agreement["margin 0.2"]) + 0.1


def test_a_file_in_a_subfolder_is_not_taken_for_the_listed_file_of_its_name(cli, tmp_path):
    """Before: records were matched by name alone, so sub/hopper.png (a faceless picture) stood in
    for the listed hopper.png, scored noface."""
    folder = labelled_folder(tmp_path, {"hopper.png": "neutral", "rocket.png": "noface"})
    (folder / "sub").mkdir()
    shutil.copy(SAMPLES / "rocket.png", folder / "sub" / "hopper.png")
    result = cli("evaluate", "--stickers", folder, "-q", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["per_file"]["hopper.png"]["predicted"] == "neutral"


def test_names_with_a_backslash_and_rows_without_a_source_are_scored_as_listed(cli, tmp_path):
    """Before: a\\b.png was matched against its record's key (a\\x5cb.png), so scored unreadable;
    rows with an empty source were grouped as "all", which replaced the whole set's line."""
    folder = labelled_folder(tmp_path, {"hopper.png": "neutral", "rocket.png": "noface"})
    (folder / "hopper.png").rename(folder / "a\\b.png")
    (folder / "labels.csv").write_text("file,label,source\n\"a\\b.png\",neutral,\nrocket.png,noface,drawn\n")
    report = json.loads(cli("evaluate", "--stickers", folder, "-q", "--json").stdout)
    assert report["per_file"]["a\\b.png"]["predicted"] == "neutral"
    assert report["emotion_accuracy"]["n"] == 1 and set(report["by_source"]) == {"(none)", "drawn"}
    text = cli("evaluate", "--stickers", folder, "-q").stdout
    assert "  all: emotion 1/1 (100.0 %), noface right 1/1 (100.0 %)" in text
    assert "  source (none): emotion 1/1" in text and "  source drawn: emotion none" in text


def test_sigterm_ends_a_sticker_evaluation_in_one_line_and_leaves_no_scratch(tmp_path):
    """Before: SIGTERM ended it where it stood, without a word, its temporary database and OUT
    left behind in the temp folder."""
    import os
    import signal
    import subprocess
    import sys
    import time
    folder = labelled_folder(tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "stickersort.sorter", "evaluate", "--stickers", str(folder), "-q"],
                            env={**os.environ, "TMPDIR": str(scratch)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(scratch.glob("stickersort-eval-*/eval.db")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    [line] = proc.stderr.read().strip().splitlines()
    assert line == "stickersort: interrupted; nothing was kept"
    assert list(scratch.iterdir()) == []
