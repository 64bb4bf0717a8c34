import csv
import dataclasses
import io
import json
import os

import numpy as np
import tensorflow as tf

import deepn_jpeg.jobs.report
from compression_helps.core import rundir
from compression_helps.engine import ranking
from compression_helps.selection import report

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
    return ranking.Predictions(
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


class SummaryTest(tf.test.TestCase):
    def reports(self):
        rows = report.summarize(hand_made_predictions())
        other = [{**r, "top1": r["top1"] / 2} for r in rows]
        return {"a": {"rows": rows}, "b": {"rows": other}}

    def test_markdown_puts_the_models_side_by_side(self):
        lines = report.summary_markdown(self.reports()).splitlines()
        self.assertLen(lines, len(EXPECTED) + 2)
        self.assertEqual(
            lines[0],
            "| candidate / selector | a top-1 % | a top-5 % | a CR | "
            "b top-1 % | b top-5 % | b CR |",
        )
        self.assertEqual(
            lines[2],
            "| original | 66.67 | 100.00 | 1.00 | 33.33 | 100.00 | 1.00 |",
        )

    def test_csv_has_a_row_per_model_and_table_row_recorded_in_the_run(self):
        root = os.path.join(self.create_tempdir().full_path, "run")
        reports = self.reports()
        with rundir.RunDir.open(root, "test", Settings()) as run:
            report.write_summary(run, reports)
        with open(os.path.join(root, report.SUMMARY_CSV), newline="") as f:
            table = list(csv.DictReader(f))
        want = [
            {"model": m, **r} for m, x in reports.items() for r in x["rows"]
        ]
        self.assertEqual(
            [(r["model"], r["name"]) for r in table],
            [(r["model"], r["name"]) for r in want],
        )
        for got, row in zip(table, want, strict=True):
            for key in METRICS:
                self.assertEqual(float(got[key]), row[key])
        with open(os.path.join(root, report.SUMMARY_MARKDOWN)) as f:
            self.assertEqual(f.read(), report.summary_markdown(reports) + "\n")
        with rundir.RunDir.open(root, "test", Settings()):
            self.assertNotIn(report.SUMMARY_CSV, os.listdir(root))


def curve_rows():
    """A README-like table: QF 100 is larger than the original (CR < 1)."""
    crs = {"original": 1.0, "qf100": 0.73, "qf90": 1.8, "qf50": 4.5}
    crs.update({"qf10": 14.9, "hrs": 8.3, "keep_top1": 9.5})
    top1 = {"original": 89.4, "qf100": 89.4, "qf90": 88.0, "qf50": 84.4}
    top1.update({"qf10": 73.6, "hrs": 92.2, "keep_top1": 89.4})
    return [{"name": n, "cr": crs[n], "top1": top1[n]} for n in crs]


class AccuracyVsCrPlotTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.figure = report.accuracy_vs_cr_figure(curve_rows(), 5, "t")
        self.figure.savefig(io.BytesIO(), format="png")  # Lays it out.
        (self.ax,) = self.figure.axes

    def line(self, label):
        lines = self.ax.get_lines()
        (line,) = [x for x in lines if x.get_label() == label]
        return line

    def test_qf_line_runs_in_order_of_cr_without_the_original(self):
        qf_line = self.line("every image at one JPEG QF\n(numbers: the QF)")
        x = list(qf_line.get_xdata())
        self.assertEqual(x, sorted(x))
        self.assertEqual(x, [0.73, 1.8, 4.5, 14.9])
        (original_x,) = self.line("original files").get_xdata()
        self.assertEqual(original_x, 1.0)
        self.assertEqual(self.line("hrs").get_linestyle(), "None")

    def test_legend_is_outside_the_data(self):
        self.assertIsNone(self.ax.get_legend())
        (legend,) = self.figure.legends
        labels = [t.get_text() for t in legend.get_texts()]
        self.assertEqual(labels[1:], ["original files", "hrs", "keep_top1"])
        axes_box = self.ax.get_window_extent()
        legend_box = legend.get_window_extent()
        self.assertGreaterEqual(legend_box.x0, axes_box.x1)


class RateAccuracyPlotTest(tf.test.TestCase):
    def test_identical_curves_are_one_line_named_after_both(self):
        def points(shift):
            return [
                {"quality": q, "bpp": q / 20 + shift, "top1": q, "top5": q}
                for q in (90, 50, 10)
            ]

        curves = {
            "original": [{"quality": None, "bpp": 5.0, "top1": 91, "top5": 99}],
            "jpeg": points(0.1),
            "paper": points(0.0),
            "monotone": points(0.0),
        }
        self.assertEqual(
            deepn_jpeg.jobs.report.same_curves(curves),
            [["jpeg"], ["paper", "monotone"]],
        )
        figure = deepn_jpeg.jobs.report.rate_accuracy_figure(
            {"curves": curves, "model": "m", "n_images": 3}
        )
        (legend,) = figure.legends
        labels = [t.get_text() for t in legend.get_texts()]
        self.assertEqual(
            labels[:2], ["standard JPEG", "DeepN paper = DeepN monotone"]
        )
        self.assertLen(figure.axes[0].get_lines(), 3)  # With the original.


def verdict_result():
    curves = {
        "original": [
            {"quality": None, "bpp": 5.0, "top1": 80, "top5": 95, "cr": 1}
        ],
        "jpeg": [
            {
                "quality": q,
                "bpp": q / 20,
                "top1": 60 + q / 5,
                "top5": 90,
                "cr": 100 / q,
            }
            for q in (90, 50, 10)
        ],
    }
    gains = [
        {
            "curve": c,
            "drop": 1.0,
            "target_top1": 79.0,
            "jpeg_bytes": 2048.0,
            "curve_bytes": 1024.0,
            "gain": 2.0,
        }
        for c in ("paper", "short", "open")
    ]

    def entry(curve, gain, low, high, call):
        return {
            "curve": curve,
            "band": [75.0, 79.0],
            "gain": gain,
            "low": low,
            "high": high,
            "defined": None if low is None else 1.0,
            "top1_range": [62.0, 78.0],
            "jpeg_top1_range": [62.0, 78.0],
            "call": call,
        }

    return {
        "model": "m",
        "n_images": 3,
        "curves": curves,
        "gains": gains,
        "bootstrap": 100,
        "verdict": [
            entry("paper", 2.0, 1.5, 2.5, "fewer bytes than JPEG"),
            entry("short", None, None, None, "band not covered"),
            entry("open", 1.1, 0.9, 1.3, "not settled"),
        ],
    }


class VerdictReportTest(tf.test.TestCase):
    def test_text_has_one_verdict_line_per_curve(self):
        text = deepn_jpeg.jobs.report.rate_accuracy_text(verdict_result())
        self.assertIn("over 100 paired bootstrap resamples", text)
        lines = text.splitlines()
        self.assertIn(
            "| paper | 75.00-79.00 | 2.00x | [1.50, 2.50] | 100% "
            "| fewer bytes than JPEG |",
            lines,
        )
        self.assertIn(
            "| short | 75.00-79.00 | n/a |  |  | band not covered (top-1 "
            "62.00-78.00, JPEG 62.00-78.00) |",
            lines,
        )
        self.assertIn(
            "| open | 75.00-79.00 | 1.10x | [0.90, 1.30] | 100% "
            "| not settled |",
            lines,
        )

    def test_plot_shades_the_band_on_the_top1_axis(self):
        path = os.path.join(self.create_tempdir().full_path, "ra.png")
        deepn_jpeg.jobs.report.plot_rate_accuracy(verdict_result(), path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        figure = deepn_jpeg.jobs.report.rate_accuracy_figure(verdict_result())
        top1_ax, top5_ax = figure.axes
        (band,) = top1_ax.patches
        self.assertEqual(band.get_label(), "verdict band (top-1 75.0-79.0 %)")
        self.assertEmpty(top5_ax.patches)
        (legend,) = figure.legends
        labels = [t.get_text() for t in legend.get_texts()]
        self.assertIn("verdict band (top-1 75.0-79.0 %)", labels)
