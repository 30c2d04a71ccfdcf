"""stickersort's side of the benchmark, run by run.py in a process of its own (so its peak RSS
is its own): `python bench/ours.py job.json result.json`."""
import tempfile
import time
from pathlib import Path

import numpy as np

from common import (Stages, accuracy, best_run, faces_per_s, read_labels, repeats, score_stickers,
                    stage_report, worker_main)


def end_to_end(job):
    """The real `stickersort scan` path, each repeat into an empty database and output folder,
    so every file is decoded, hashed, searched for faces, classified, recorded and linked. Stage
    times come through the pipeline's timer hook, which the Scanner takes."""
    started = time.perf_counter()
    from stickersort.sorter.scan import Options, Scanner

    root = Path(job["stickers"]).resolve()
    stages = Stages()
    with tempfile.TemporaryDirectory(prefix="stickersort-bench-") as tmp:
        def fresh(i, models=None, **options):
            return Scanner(Options(out=Path(tmp) / f"out{i}", db=Path(tmp) / f"db{i}.sqlite",
                                   frames=job["frames"], model=job.get("model"), **options),
                           classifier=models and models.classifier, detector=models and models.detector,
                           timer=stages)
        first = fresh(0)
        # Both models loaded and run once before the clock starts; that cost is startup_s.
        first.detector.detect(np.zeros((64, 64, 3), np.uint8))
        first.classifier.predict(np.zeros((1, 48, 48), np.uint8))
        startup = time.perf_counter() - started

        def timed(scanner):
            stages.seconds = {}
            t = time.perf_counter()
            summary = scanner.scan(root)
            return summary, (time.perf_counter() - t, stages.seconds)

        runs = []
        for i in repeats(job):
            summary, run = timed(first if i == 0 else fresh(i, models=first))
            runs.append(run)
        # The vote's winner, unsure or not: fer's side gets the same vote and no threshold.
        rows = first.store.db.query("select path, coalesce(guess, label) as label from files")
        predicted = {str(Path(r["path"]).relative_to(root)): r["label"] for r in rows}
        model_id = first.model_id
        # Once more with a single reader: only there do the stage times add up to the wall time
        # (several readers overlap), so the breakdown by stage comes from this pass.
        _, (one_s, one_stages) = timed(fresh("one", models=first, jobs=1))
        jobs = first.options.jobs
    if summary.files != len(job["files"]):
        raise SystemExit(f"scan saw {summary.files} files, the benchmark listed {len(job['files'])}")
    return {**best_run(runs, summary.files, startup), "errors": summary.errors, "model_id": model_id,
            "jobs": jobs, "files_per_s_one_reader": round(summary.files / one_s, 2),
            "stages": stage_report(one_stages, one_s, summary.files),
            **score_stickers(predicted, read_labels(job["labels"]))}


def model_figures(job):
    """The classifier alone, on FER2013 PrivateTest faces: 48x48 gray, as the model takes them."""
    from stickersort.model.inference import Classifier

    data = np.load(job["faces"])
    faces, labels = data["faces"], data["labels"]
    classifier = Classifier(job.get("model"))
    return {
        "privatetest_accuracy": accuracy(classifier.predict(faces), labels),
        "privatetest_n": int(len(faces)),
        "faces_per_s_b1": faces_per_s(classifier.predict, faces, 1, job["seconds"]),
        "faces_per_s_b64": faces_per_s(classifier.predict, faces, 64, job["seconds"]),
        "classifier_threads": classifier.threads,
    }


if __name__ == "__main__":
    worker_main(end_to_end, model_figures,
                ("stickersort", "onnxruntime", "ai-edge-litert", "opencv-python-headless", "numpy", "pillow"))
