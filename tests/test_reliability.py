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

from compression_helps.core import imagenet
from compression_helps.engine import evaluate, in_memory, ranking
from compression_helps.models import registry
from compression_helps.multi_input import features, network
from compression_helps.selection import runner
from compression_helps.sources import datasets
from deepn_jpeg.analysis import statistics
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
    wnid = imagenet.wnids()[7]
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
        classifier = registry.load_classifier(self.model_path)
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
                folder, f"{imagenet.wnids()[i * 3]}_good{i}.JPEG", good_jpeg(i)
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

    def test_very_large_image_within_the_pixel_limit(self):
        folder = self.make_good_folder()
        # 81 MP, under the default limit (89.5 MP).
        big = np.broadcast_to(
            testing_utils.random_image(90, 90)[:, None, :, None],
            (90, 100, 90, 100, 3),
        ).reshape(9000, 9000, 3)
        write(
            folder,
            f"{imagenet.wnids()[5]}_big.JPEG",
            testing_utils.jpeg_bytes(big, quality=50),
        )
        predictions, skipped = self.evaluate_folder(folder)
        self.assertEmpty(skipped)
        self.assertLen(predictions.ids, 5)

    def test_decompression_bombs_are_skipped_undecoded(self):
        folder = self.make_good_folder()
        reference, _ = self.evaluate_folder(folder)
        wnid = imagenet.wnids()[9]
        bombs = {
            f"{wnid}_bomb.JPEG": (
                testing_utils.image_claiming("jpeg", 13000, 13000),
                "13000x13000 = 169.0 MP > 89.5 MP limit (raise --max_pixels)",
            ),
            f"{wnid}_bomb.png": (
                testing_utils.image_claiming("png", 23000, 23000),
                "23000x23000 = 529.0 MP > 89.5 MP limit (raise --max_pixels)",
            ),
        }
        for name, (data, _) in bombs.items():
            write(folder, name, data)
        predictions, skipped = self.evaluate_folder(folder)
        self.assertEqual(
            {s.id: s.reason for s in skipped},
            {
                name: f"too many pixels: {detail}"
                for name, (_, detail) in bombs.items()
            },
        )
        self.assertAllEqual(predictions.ids, reference.ids)
        self.assertAllEqual(predictions.ranks, reference.ranks)

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
            write(folder, f"{imagenet.wnids()[i]}_fuzz{i}.JPEG", bytes(data))
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
        env=testing_utils.script_environment(),
    )


def read(path):
    with open(path, "rb") as f:
        return f.read()


class EveryPipelineDropsRefusedFilesTest(tf.test.TestCase):
    """Each job's pipeline leaves out what the guard refused, undecoded."""

    def setUp(self):
        super().setUp()
        folder = self.create_tempdir().full_path
        wnids = imagenet.wnids()
        for i in range(3):
            write(folder, f"{wnids[i]}_good{i}.JPEG", good_jpeg(i))
        # Under 1 kB, and 507 MB of pixels if it were decoded.
        write(
            folder,
            f"{wnids[3]}_bomb.JPEG",
            testing_utils.image_claiming("jpeg", 13000, 13000),
        )
        self.source = datasets.load(folder)
        self.bomb = 3  # Its index: the last name in sorted order.
        self.classifier = registry.load_classifier(
            testing_utils.tiny_model_file(self.create_tempdir().full_path)
        )

    def test_in_memory_images(self):
        images = in_memory.InMemoryImages(self.classifier, self.source)
        self.assertEqual(images.num_images, 3)
        self.assertEqual([s.kind for s in images.skipped], ["too many pixels"])

    def test_band_statistics(self):
        # Not even an error to ignore: the refused file is left out.
        stats, indices = statistics.compute_with_indices(
            self.source.dataset, ignore_errors=False
        )
        self.assertEqual(stats.num_images, 3)
        self.assertNotIn(self.bomb, indices.tolist())

    def test_cached_features(self):
        model = network.build_multi_input_model(
            self.classifier, QUALITIES, head_init="random", seed=0
        )
        arrays = features.compute_features(
            model,
            self.source.dataset,
            self.classifier.resize,
            QUALITIES,
            batch_size=2,
            verbose=False,
        )
        self.assertEqual(arrays["index"].tolist(), [0, 1, 2])


class SpecialFilesScriptTest(tf.test.TestCase):
    def test_special_files_and_odd_names_do_not_stop_the_run(self):
        data = self.create_tempdir().full_path
        wnids = imagenet.wnids()
        for i in range(2):
            write(data, f"{wnids[i]}_good{i}.JPEG", good_jpeg(i))
        write(
            data,
            f"{wnids[2]}_bomb.JPEG",
            testing_utils.image_claiming("jpeg", 13000, 13000),
        )
        os.mkfifo(os.path.join(data, f"{wnids[3]}_fifo.JPEG"))
        os.symlink("/dev/zero", os.path.join(data, f"{wnids[4]}_zero.JPEG"))
        odd = os.fsencode(data) + f"/{wnids[5]}_caf".encode() + b"\xe9.JPEG"
        with open(odd, "wb") as f:
            f.write(good_jpeg(5))
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        # A reader that blocks on the FIFO or reads /dev/zero for ever fails
        # the test at the timeout instead of hanging it.
        result = testing_utils.run_module(
            "experiments.run_selectors",
            f"--model={model}",
            "--weights=none",
            f"--data={data}",
            f"--workdir={workdir}",
            "--qualities=50",
            timeout=240,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        with open(os.path.join(workdir, "errors.jsonl")) as f:
            reasons = {r["id"]: r["reason"] for r in map(json.loads, f) if r}
        self.assertEqual(
            reasons,
            {
                f"{wnids[2]}_bomb.JPEG": (
                    "too many pixels: 13000x13000 = 169.0 MP > 89.5 MP "
                    "limit (raise --max_pixels)"
                ),
                f"{wnids[3]}_fifo.JPEG": "not a regular file: a FIFO",
                f"{wnids[4]}_zero.JPEG": (
                    "not a regular file: a character device (through a "
                    "symbolic link)"
                ),
            },
        )
        ids = ranking.Predictions.load(
            os.path.join(workdir, "tiny", ranking.PREDICTIONS_FILE)
        ).ids
        self.assertEqual(
            sorted(ids),
            [
                f"{wnids[0]}_good0.JPEG",
                f"{wnids[1]}_good1.JPEG",
                f"{wnids[5]}_caf\\xe9.JPEG",
            ],
        )


class RunnerTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.data = self.create_tempdir().full_path
        self.model = testing_utils.tiny_model_file(
            self.create_tempdir().full_path
        )

    def config(self, **kwargs):
        return runner.Config(
            model=registry.ModelConfig(self.model),
            data=datasets.DataConfig(self.data),
            **kwargs,
        )

    def new_workdir(self):
        return os.path.join(self.create_tempdir().full_path, "run")

    def test_resume_with_other_settings_data_or_model_is_refused(self):
        write(self.data, f"{imagenet.wnids()[0]}_0.JPEG", good_jpeg(0))
        workdir = self.new_workdir()
        config = self.config(qualities=(50,))
        runner.run(config, workdir, verbose=False)
        report_path = os.path.join(workdir, "tiny", "report.json")
        report = read(report_path)

        def refused(message, config):
            with self.assertRaisesRegex(ValueError, message) as e:
                runner.run(config, workdir, resume=True, verbose=False)
            self.assertNotIn("\n", str(e.exception))
            # Nothing of the first run was lost.
            self.assertEqual(read(report_path), report)

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
        write(self.data, f"{imagenet.wnids()[1]}_1.JPEG", good_jpeg(1))
        refused("the data changed", config)
        os.remove(os.path.join(self.data, f"{imagenet.wnids()[1]}_1.JPEG"))
        testing_utils.tiny_model_file(os.path.dirname(self.model), seed=1)
        refused("input files changed", config)

    def test_resume_with_a_trailing_slash_is_the_same_data(self):
        write(self.data, f"{imagenet.wnids()[0]}_0.JPEG", good_jpeg(0))
        workdir = self.new_workdir()
        config = self.config(qualities=(50,))
        first = runner.run(config, workdir, verbose=False)
        slashed = dataclasses.replace(
            config, data=datasets.DataConfig(self.data + "/")
        )
        again = runner.run(slashed, workdir, resume=True, verbose=False)
        self.assertEqual(again, first)

    def test_report_counts_skipped_images_by_reason(self):
        write(self.data, f"{imagenet.wnids()[0]}_ok.JPEG", good_jpeg(0))
        write(self.data, f"{imagenet.wnids()[1]}_empty.JPEG", b"")
        write(self.data, "nolabel.JPEG", good_jpeg(1))
        workdir = self.new_workdir()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            (report,) = runner.run(
                self.config(qualities=(50,)), workdir
            ).values()
        self.assertIn("1 images evaluated, 2 skipped", out.getvalue())
        self.assertEqual(report["n_images"], 1)
        self.assertEqual(report["n_errors"], 2)
        self.assertEqual(
            report["errors_by_reason"],
            {"empty file": 1, "no ImageNet label": 1},
        )
        with open(os.path.join(workdir, "tiny", "report.json")) as f:
            self.assertEqual(json.load(f), report)
        with open(os.path.join(workdir, "errors.jsonl")) as f:
            records = [json.loads(line) for line in f]
        self.assertEqual(
            sorted(os.path.basename(r["path"]) for r in records),
            ["n01443537_empty.JPEG", "nolabel.JPEG"],
        )
