import csv
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from compression_helps import evaluate, report, rundir

# Three images, three candidates (original, QF 50, QF 10), consistent ranks,
# top-5 lists and probabilities; the selections below are worked out by
# hand from them.
SIZES = [[1000, 400, 100], [2000, 500, 300], [800, 800, 200]]
LABELS = [5, 8, 3]
TOPK = [
    [[5, 1, 2, 3, 4], [5, 1, 2, 3, 4], [1, 5, 2, 3, 4]],
    [[7, 8, 9, 10, 11], [7, 9, 10, 11, 12], [7, 9, 8, 10, 11]],
    [[3, 4, 20, 21, 22], [3, 4, 20, 21, 22], [4, 3, 20, 21, 22]],
]
RANKS = [[1, 1, 2], [2, 7, 3], [1, 1, 2]]  # Label not in the top 5: 7.
TOP1_PROBS = [[0.95, 0.6, 0.9], [0.8, 0.5, 0.75], [0.55, 0.52, 0.99]]
NUM_PIXELS = [100, 200, 100]

# name: chosen candidate per image.
#   hrs: smallest rank, then smallest file (image 1: rank 2 of the original).
#   keep_top1: image 2 has two qualifying 800-byte files: the lower index.
#   keep_top5: QF 10 keeps every top-5 set (reordered) -> always QF 10.
#   confident_0.7: image 0's QF 50 is only 0.6 sure; image 2 has none.
CHOSEN = {
    "original": [0, 0, 0],
    "qf50": [1, 1, 1],
    "qf10": [2, 2, 2],
    "hrs": [1, 0, 0],
    "keep_top1": [1, 2, 0],
    "keep_top5": [2, 2, 2],
    "keep_both": [1, 2, 0],
    "confident_0.5": [1, 2, 0],
    "confident_0.7": [0, 2, 0],
    "confident_0.9": [0, 0, 0],
}
# name: (top1 %, top5 %, CR = 3800 / chosen bytes, mean bytes, bpp =
# 8 * chosen bytes / 400 pixels).
EXPECTED = {
    "original": (200 / 3, 100, 1.0, 3800 / 3, 76.0),
    "qf50": (200 / 3, 200 / 3, 3800 / 1700, 1700 / 3, 34.0),
    "qf10": (0.0, 100, 3800 / 600, 200.0, 12.0),
    "hrs": (200 / 3, 100, 3800 / 3200, 3200 / 3, 64.0),
    "keep_top1": (200 / 3, 100, 3800 / 1500, 500.0, 30.0),
    "keep_top5": (0.0, 100, 3800 / 600, 200.0, 12.0),
    "keep_both": (200 / 3, 100, 3800 / 1500, 500.0, 30.0),
    "confident_0.5": (200 / 3, 100, 3800 / 1500, 500.0, 30.0),
    "confident_0.7": (200 / 3, 100, 3800 / 2100, 700.0, 42.0),
    "confident_0.9": (200 / 3, 100, 1.0, 3800 / 3, 76.0),
}
METRICS = ("top1", "top5", "cr", "mean_bytes", "bpp")


def hand_made_predictions():
    probs = np.full([3, 3, 5], 0.01, np.float32)
    probs[:, :, 0] = TOP1_PROBS
    return evaluate.Predictions(
        ranks=np.array(RANKS, np.int32),
        sizes=np.array(SIZES, np.int64),
        topk=np.array(TOPK, np.int32),
        topk_probs=probs,
        labels=np.array(LABELS, np.int32),
        curves=np.array(["original", "jpeg", "jpeg"]),
        qualities=np.array([0, 50, 10], np.int32),
        ids=np.array(["a.JPEG", "b.JPEG", "c.JPEG"]),
        names=np.array(["original", "qf50", "qf10"]),
        num_pixels=np.array(NUM_PIXELS, np.int64),
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str = "tiny"


class SummarizeTest(tf.test.TestCase):
    def test_hand_made_ranks_rows_are_the_hand_computed_table(self):
        predictions = hand_made_predictions()
        # The example is consistent: rank 1 iff the top-1 class is the label.
        top1 = predictions.topk[:, :, 0] == predictions.labels[:, None]
        self.assertAllEqual(predictions.ranks == 1, top1)

        chosen = report.selections(predictions)
        self.assertEqual(list(chosen), list(CHOSEN))
        for name, expected in CHOSEN.items():
            self.assertAllEqual(chosen[name], expected, msg=name)

        rows = report.summarize(predictions)
        self.assertEqual([r["name"] for r in rows], list(EXPECTED))
        for row in rows:
            for key, want in zip(METRICS, EXPECTED[row["name"]], strict=True):
                self.assertAlmostEqual(row[key], want, 9, (row["name"], key))

    def test_hrs_top1_and_top5_are_the_best_of_the_table(self):
        rows = report.summarize(hand_made_predictions())
        hrs = next(r for r in rows if r["name"] == "hrs")
        for row in rows:
            self.assertLessEqual(row["top1"], hrs["top1"])
            self.assertLessEqual(row["top5"], hrs["top5"])

    def test_markdown_has_one_line_per_row(self):
        rows = report.summarize(hand_made_predictions())
        lines = report.to_markdown(rows).splitlines()
        self.assertLen(lines, len(rows) + 2)
        # 3800 bytes / 3 = 1.2 KiB; 8 * 3800 / 400 = 76 bits per pixel.
        self.assertEqual(
            lines[2], "| original | 66.67 | 100.00 | 1.00 | 1.2 | 76.000 |"
        )


class WriteReportTest(tf.test.TestCase):
    def test_writes_json_csv_and_plot_recorded_in_the_run(self):
        root = os.path.join(self.create_tempdir().full_path, "run")
        predictions = hand_made_predictions()
        errors = {"empty file": 2, "cannot decode": 1}
        with rundir.RunDir.open(root, "test", Settings()) as run:
            result = report.write_report(predictions, run, "tiny", errors)
        with open(os.path.join(root, "report.json")) as f:
            self.assertEqual(json.load(f), result)
        self.assertEqual(result["model"], "tiny")
        self.assertEqual(result["n_images"], 3)
        self.assertEqual(result["n_errors"], 3)
        self.assertEqual(result["errors_by_reason"], errors)
        self.assertEqual([r["name"] for r in result["rows"]], list(EXPECTED))
        with open(os.path.join(root, "report.csv"), newline="") as f:
            table = list(csv.DictReader(f))
        self.assertEqual([r["name"] for r in table], list(EXPECTED))
        for got, want in zip(table, result["rows"], strict=True):
            for key in METRICS:
                self.assertEqual(float(got[key]), want[key])
        with open(os.path.join(root, "accuracy_vs_cr.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        # A fresh run in the folder removes them: they are the run's files.
        with rundir.RunDir.open(root, "test", Settings()):
            self.assertEqual(
                sorted(os.listdir(root)), [".lock", ".run.json", "config.json"]
            )
