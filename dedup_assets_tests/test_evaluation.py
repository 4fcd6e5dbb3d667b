import os
import re
import subprocess
import sys

import pytest

from dedup_assets.evaluation import pairs_from_clusters, score

TRUTH = [
    {"name": "a0", "group": "a", "kind": "original"},
    {"name": "a1", "group": "a", "kind": "crop"},
    {"name": "a2", "group": "a", "kind": "text"},
    {"name": "b0", "group": "b", "kind": "original"},
    {"name": "c0", "group": "c", "kind": "original"},
]


def test_pairwise_scores_and_recall_per_transformation():
    predicted = pairs_from_clusters({"a0": "x", "a1": "x", "a2": "y", "b0": "y", "c0": "z"})
    result = score(TRUTH, predicted, representatives={"a0": True, "a2": True})
    assert result.true_pairs == 3 and result.predicted_pairs == 2
    assert result.precision == 0.5  # (a0, a1) right, (a2, b0) wrong
    assert abs(result.recall - 1 / 3) < 1e-9
    assert result.recall_by_kind == {"crop": 1.0, "text": 0.0}
    assert result.kept_original == 1.0


def test_evaluate_on_the_demo_set_beats_the_phash_baseline(demo_set, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-m", "dedup_assets.cli", "evaluate", "--images", str(demo_set / "images"),
         "--truth", str(demo_set / "truth.csv"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = {line.split()[0]: line.split()[1:] for line in completed.stdout.splitlines() if line.strip()}
    precision, baseline_precision = map(float, lines["precision"])
    f1, baseline_f1 = map(float, lines["F1"])
    assert precision >= 0.98 and f1 >= 0.95
    assert f1 > baseline_f1
    assert float(completed.stdout.split("kept image is original")[1].split()[0]) >= 0.95


@pytest.mark.parametrize("text, problem", [
    ("file,label\na.jpg,1\n", "needs columns name, group"),
    ("", "needs columns name, group"),
    ("name,group\na.jpg,1\na.jpg,2\n", "1 name(s) listed more than once: a.jpg"),
    ("name,group\na.jpg,1\nmissing.jpg,1\n", "1 of 2 name(s) not in"),
])
def test_a_truth_that_cannot_score_the_folder_is_refused(tmp_path, text, problem):
    from dedup_assets.evaluation import read_truth
    from dedup_assets.settings import SetupError

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"x")
    (tmp_path / "truth.csv").write_text(text)
    with pytest.raises(SetupError, match=re.escape(problem)):
        read_truth(tmp_path / "truth.csv", tmp_path / "images")
