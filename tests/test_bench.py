"""bench/: the cheap parts only (reporting, scoring, the missing-data exit); the benchmark
itself needs fer's venv and minutes, so it is run by hand, not here."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import common  # noqa: E402

spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
bench_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_run)


def side(**overrides):
    figures = {"privatetest_accuracy": 0.7, "privatetest_n": 3589, "faces_per_s_b1": 1000.0,
               "faces_per_s_b64": 4000.0, "files_per_s": 30.0, "sticker_face_found": 0.9,
               "sticker_accuracy": 0.6, "peak_rss_mb": 200.0, "startup_s": 0.5,
               "files_per_s_with_startup": 20.0, "sticker_accuracy_face_files": 0.5,
               "sticker_noface_correct": 1.0, "peak_rss_mb_with_model_bench": 250.0,
               "sticker_face_files": 51, "sticker_noface_files": 10, "classifier_threads": 2, "files_per_s_runs": [28.0, 30.0, 25.0],
               "stages": common.stage_report({"decode": 1.0, "detect": 0.5}, 2.0, 61),
               "versions": {"fer": "25.10.3"}}
    return {**figures, **overrides}


def results():
    r = {"machine": {"when": "2025-01-01T00:00:00+00:00", "os": "Linux", "python": "3.11",
                     "cpus": 2, "cpu": "Test CPU", "memory_gb": 24.0,
                     "load_average_at_start": [0.1, 0.1, 0.1]},
         "settings": {"frames": 8, "seconds": 3.0, "repeats": 3},
         "stickersort": side(), "fer": side(files_per_s=5.0, privatetest_accuracy=0.66,
                                            sticker_accuracy=0.5, peak_rss_mb=600.0)}
    r["ratio"] = bench_run.ratios(r)
    return r


def test_ratios_are_ours_over_theirs():
    r = results()["ratio"]
    assert r["files_per_s"] == 6.0
    assert r["peak_rss_mb"] == round(200 / 600, 3)


def test_bar_met_and_reported():
    r = results()
    assert all(ok for _, ok in bench_run.verdict(r))
    assert "[x] end-to-end files/s >= 5x fer's" in bench_run.text_table(r)


def test_markdown_regenerates_from_json(tmp_path, capsys):
    source = tmp_path / "out.json"
    source.write_text(json.dumps(results()))
    target = tmp_path / "COMPARISON.md"
    assert bench_run.main(["--from", str(source), "--markdown", str(target)]) == 0
    text = target.read_text()
    assert text.startswith("# How it compares")
    assert "Test CPU, 2 CPUs" in text
    assert "| stickers: files/s end to end | 30.00 | 5.00 | 6.00x | higher |" in text
    assert "stickersort 3 scans, 30.0 files/s at best, 28.0 median, 25.0 at worst" in text


def test_comparison_page_is_what_the_bench_renders_from_its_results():
    """bench/COMPARISON.md is written by `bench/run.py --markdown`, never by hand: it must be what
    the code renders from bench/results.json, and the README's short table only rows of it."""
    repo = BENCH.parent
    expected = bench_run.markdown(json.loads((BENCH / "results.json").read_text()))
    assert (BENCH / "COMPARISON.md").read_text() == expected, \
        "regenerate: python bench/run.py --from bench/results.json --markdown"
    readme = (repo / "README.md").read_text()
    section = readme.split("## How it compares", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows and "bench/COMPARISON.md" in section
    table = [line for line in expected.splitlines() if line.startswith("| ")]
    assert rows[0] == table[0]  # the same header
    assert [row for row in rows[1:] if row not in table] == []


def test_each_tool_repeats_its_scan_for_a_number_of_scans_and_a_span_of_time():
    import time

    assert list(common.repeats({"repeats": 3, "scan_seconds": 0})) == [0, 1, 2]
    done = []
    for i in common.repeats({"repeats": 1, "scan_seconds": 0.05}):
        done.append(i)
        time.sleep(0.02)  # a scan
    assert len(done) >= 3  # 0.04 s after two scans is short of 0.05 s


def test_missing_shared_data_exits_non_zero(tmp_path, capsys):
    assert bench_run.main(["--shared", str(tmp_path / "absent"), "--json", str(tmp_path / "x.json")]) == 2
    assert "needs the shared data sets" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_score_stickers():
    labels = {"a.png": "happy", "b.gif": "sad", "c.png": "noface", "d.png": "angry"}
    got = common.score_stickers({"a.png": "happy", "b.gif": "noface", "c.png": "noface", "d.png": None},
                                labels)
    assert got["sticker_face_found"] == round(1 / 3, 4)
    assert got["sticker_accuracy"] == 0.5
    assert got["sticker_noface_correct"] == 1.0


def test_faces_per_s_counts_whole_batches():
    calls = []
    rate = common.faces_per_s(lambda x: calls.append(len(x)) or np.zeros((len(x), 7)),
                              np.zeros((100, 48, 48)), 64, seconds=0.01)
    assert rate > 0 and set(calls) == {64}


def test_both_tools_get_the_scans_file_list_relative_to_the_folder():
    from conftest import SAMPLES

    names = bench_run.sticker_files(SAMPLES)
    assert names and all(not Path(n).is_absolute() and (SAMPLES / n).is_file() for n in names)
