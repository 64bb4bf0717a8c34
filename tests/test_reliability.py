import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from compression_helps import datasets, evaluate, models, runner
from tests import testing_utils

QUALITIES = (90, 50, 10)


def pil_bytes(image, fmt, mode="RGB", **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def write(folder, name, data):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def good_jpeg(seed):
    return testing_utils.jpeg_bytes(testing_utils.random_image(40, 48, seed))


# Each bad-input kind: file name -> (bytes, expected skip kind or None when
# the image must be evaluated as an original of its own size).
def bad_inputs():
    image = testing_utils.random_image(40, 48, seed=99)
    jpeg = testing_utils.jpeg_bytes(image)
    wnid = datasets.wnids()[7]
    return {
        f"{wnid}_zero.JPEG": (b"", "empty file"),
        f"{wnid}_truncated.JPEG": (jpeg[: len(jpeg) // 2], "cannot decode"),
        f"{wnid}_corrupt.JPEG": (
            jpeg[:20] + bytes(range(256)) * 4,
            "cannot decode",
        ),
        f"{wnid}_text.JPEG": (b"this is not an image", "cannot decode"),
        f"{wnid}_png.png": (pil_bytes(image, "PNG"), None),
        f"{wnid}_gif.gif": (pil_bytes(image, "GIF"), None),
        f"{wnid}_bmp.bmp": (pil_bytes(image, "BMP"), None),
        f"{wnid}_webp.webp": (pil_bytes(image, "WEBP"), None),
        f"{wnid}_gray.JPEG": (pil_bytes(image, "JPEG", "L"), None),
        f"{wnid}_cmyk.JPEG": (pil_bytes(image, "JPEG", "CMYK"), None),
        f"{wnid}_tiny.JPEG": (pil_bytes(image[:5, :3], "JPEG"), None),
        "unlabelled.JPEG": (jpeg, "no ImageNet label"),
    }


class BadInputTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model_folder = tempfile.mkdtemp()
        cls.model_path = testing_utils.tiny_model_file(cls.model_folder)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.model_folder)
        super().tearDownClass()

    def evaluate_folder(self, folder, **kwargs):
        classifier = models.load_classifier(self.model_path)
        return evaluate.predict(
            classifier,
            datasets.load(folder),
            QUALITIES,
            batch_size=3,
            verbose=False,
            **kwargs,
        )

    def make_good_folder(self):
        folder = self.create_tempdir().full_path
        for i in range(4):
            write(
                folder, f"{datasets.wnids()[i * 3]}_good{i}.JPEG", good_jpeg(i)
            )
        return folder

    def test_every_bad_kind_is_skipped_or_evaluated_and_others_unchanged(self):
        folder = self.make_good_folder()
        reference, skipped = self.evaluate_folder(folder)
        self.assertEmpty(skipped)
        for name, (data, _) in bad_inputs().items():
            write(folder, name, data)
        predictions, skipped = self.evaluate_folder(folder)

        expected_skips = {
            n: kind for n, (_, kind) in bad_inputs().items() if kind
        }
        got_skips = {os.path.basename(s.path): s.kind for s in skipped}
        self.assertEqual(got_skips, expected_skips)
        for s in skipped:
            self.assertTrue(os.path.exists(s.path))
            self.assertNotIn("\n", s.reason)

        evaluated = {i: n for n, i in enumerate(predictions.ids.tolist())}
        for name, (data, kind) in bad_inputs().items():
            if kind is None:  # Decoded and treated as an original.
                self.assertIn(name, evaluated)
                self.assertEqual(
                    predictions.sizes[evaluated[name], 0], len(data)
                )
        # The good images' results do not depend on the bad ones.
        for n, image_id in enumerate(reference.ids):
            m = evaluated[image_id]
            self.assertAllEqual(predictions.sizes[m], reference.sizes[n])
            self.assertAllEqual(predictions.ranks[m], reference.ranks[n])
            self.assertAllClose(
                predictions.topk_probs[m], reference.topk_probs[n]
            )

    def test_very_large_image(self):
        folder = self.make_good_folder()
        big = np.broadcast_to(
            testing_utils.random_image(100, 100)[:, None, :, None],
            (100, 100, 100, 100, 3),
        ).reshape(10000, 10000, 3)
        write(
            folder,
            f"{datasets.wnids()[5]}_big.JPEG",
            testing_utils.jpeg_bytes(big, quality=50),
        )
        predictions, skipped = self.evaluate_folder(folder)
        self.assertEmpty(skipped)
        self.assertLen(predictions.ids, 5)

    def test_fuzzed_jpeg_bytes_are_evaluated_or_recorded(self):
        folder = self.create_tempdir().full_path
        rng = np.random.default_rng(0)
        base = good_jpeg(0)
        n = 40
        for i in range(n):
            data = bytearray(base)
            kind = i % 4
            if kind == 0:  # Flip random bytes.
                for pos in rng.integers(0, len(data), 10):
                    data[pos] = rng.integers(0, 256)
            elif kind == 1:  # Truncate anywhere.
                data = data[: rng.integers(0, len(data))]
            elif kind == 2:  # Random bytes behind a JPEG marker.
                data = b"\xff\xd8\xff" + rng.bytes(rng.integers(0, 2000))
            else:  # Insert random bytes.
                pos = rng.integers(0, len(data))
                data = data[:pos] + rng.bytes(50) + data[pos:]
            write(folder, f"{datasets.wnids()[i]}_fuzz{i}.JPEG", bytes(data))
        predictions, skipped = self.evaluate_folder(folder)
        self.assertEqual(predictions.num_images + len(skipped), n)
        self.assertEmpty(set(predictions.ids) & {s.id for s in skipped})


def start_script(*flags):
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.run_selectors", *flags],
        cwd=testing_utils.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def read(path):
    with open(path, "rb") as f:
        return f.read()


class RunnerTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        self.model = testing_utils.tiny_model_file(
            self.create_tempdir().full_path
        )

    def config(self, **kwargs):
        return runner.Config(
            model=models.ModelConfig(self.model),
            data=datasets.DataConfig(self.data),
            **kwargs,
        )

    def new_workdir(self):
        return os.path.join(self.create_tempdir().full_path, "run")

    def test_resume_with_other_settings_data_or_model_is_refused(self):
        write(self.data, f"{datasets.wnids()[0]}_0.JPEG", good_jpeg(0))
        workdir = self.new_workdir()
        config = self.config(qualities=(50,))
        runner.run(config, workdir, verbose=False)
        report = read(os.path.join(workdir, "report.json"))

        def refused(message, config):
            with self.assertRaisesRegex(ValueError, message) as e:
                runner.run(config, workdir, resume=True, verbose=False)
            self.assertNotIn("\n", str(e.exception))
            # Nothing of the first run was lost.
            self.assertEqual(read(os.path.join(workdir, "report.json")), report)

        refused(r"other settings \(qualities\)", self.config(qualities=(40,)))
        refused(
            r"other settings \(batch_size\)",
            self.config(qualities=(50,), batch_size=3),
        )
        # Where the work runs may change.
        runner.run(
            dataclasses.replace(config, jit_compile=True),
            workdir,
            resume=True,
            verbose=False,
        )
        write(self.data, f"{datasets.wnids()[1]}_1.JPEG", good_jpeg(1))
        refused("the data changed", config)
        os.remove(os.path.join(self.data, f"{datasets.wnids()[1]}_1.JPEG"))
        testing_utils.tiny_model_file(os.path.dirname(self.model), seed=1)
        refused("input files changed", config)

    def test_report_counts_skipped_images_by_reason(self):
        write(self.data, f"{datasets.wnids()[0]}_ok.JPEG", good_jpeg(0))
        write(self.data, f"{datasets.wnids()[1]}_empty.JPEG", b"")
        write(self.data, "nolabel.JPEG", good_jpeg(1))
        workdir = self.new_workdir()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            report = runner.run(self.config(qualities=(50,)), workdir)
        self.assertIn("1 images evaluated, 2 skipped", out.getvalue())
        self.assertEqual(report["n_images"], 1)
        self.assertEqual(report["n_errors"], 2)
        self.assertEqual(
            report["errors_by_reason"],
            {"empty file": 1, "no ImageNet label": 1},
        )
        with open(os.path.join(workdir, "report.json")) as f:
            self.assertEqual(json.load(f), report)
        with open(os.path.join(workdir, "errors.jsonl")) as f:
            records = [json.loads(line) for line in f]
        self.assertEqual(
            sorted(os.path.basename(r["path"]) for r in records),
            ["n01443537_empty.JPEG", "nolabel.JPEG"],
        )
