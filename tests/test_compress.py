import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image, JpegImagePlugin

from compression_helps.compress import compress, output_folder
from compression_helps.core import imagenet
from compression_helps.engine import candidates
from compression_helps.models import registry
from compression_helps.selection import runner
from compression_helps.sources import datasets
from deepn_jpeg.jpeg import codec, tables
from tests import testing_utils

QUALITIES = (90, 50, 10)
# An unlabelled tree of every kind of file a user's photo folder may hold.
NESTED = {
    "beach.jpg": "JPEG",
    "2023/dog.png": "PNG",
    "2023/trip/lake.webp": "WEBP",
    "2023/trip/lake.jpeg": "JPEG",  # Both would be lake.jpg.
    "2024/cat.JPG": "JPEG",
}


def _tree(folder):
    """Relative path -> bytes of every file under `folder`, hidden too."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def _images(tree):
    """The output images of `_tree`, without the run's own folder."""
    return {
        k: v
        for k, v in tree.items()
        if not k.startswith(output_folder.STATE_DIR + os.sep)
    }


def _digests(folder):
    return {
        k: (hashlib.sha256(v).hexdigest(), os.stat(os.path.join(folder, k)))
        for k, v in _tree(folder).items()
    }


def _manifest(out):
    path = os.path.join(out, output_folder.STATE_DIR, "manifest.csv")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_nested(folder, seed=0):
    for i, (name, kind) in enumerate(sorted(NESTED.items())):
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image = testing_utils.random_image(40, 56, seed=seed + i)
        Image.fromarray(image).save(path, kind)


class CompressTest(tf.test.TestCase, parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model_dir = tempfile.mkdtemp()
        # Three possible answers: top-1 margins far above float noise.
        cls.model = testing_utils.tiny_model_file(cls.model_dir, num_classes=3)
        cls.classifier = registry.load_classifier(cls.model, None)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.model_dir, ignore_errors=True)
        super().tearDownClass()

    def config(self, data, **changes):
        config = compress.Config(
            model=registry.ModelConfig(self.model, None),
            data=datasets.DataConfig(data),
            qualities=QUALITIES,
            batch_size=4,
            shard_size=3,
        )
        return dataclasses.replace(config, **changes)

    def top1(self, image_bytes):
        """The model's answer on a file, computed here without the job."""
        image = candidates.decode_image(tf.constant(image_bytes))
        pixels = candidates.model_pixels(image, self.classifier.resize)
        inputs = self.classifier.preprocess_input(
            tf.cast(pixels[None], tf.float32)
        )
        return int(np.argmax(self.classifier.model(inputs, training=False)))

    def test_unlabelled_nested_mixed_folder_end_to_end(self):
        data = self.create_tempdir("photos").full_path
        _write_nested(data)
        before = _digests(data)
        out = os.path.join(self.create_tempdir().full_path, "small")
        summary = compress.run(
            self.config(data, verify=True), out, False, False
        )

        self.assertEqual(_digests(data), before)  # Inputs never change.
        written = _images(_tree(out))
        rows = _manifest(out)
        self.assertEqual(summary["images"], len(NESTED))
        self.assertEqual(summary["skipped"], 0)
        self.assertEqual(sorted(r["source"] for r in rows), sorted(NESTED))
        self.assertEqual(sorted(r["path"] for r in rows), sorted(written))
        # The tree is mirrored; a clash of names keeps the whole name.
        self.assertIn("2023/trip/lake.webp.jpg", written)
        self.assertIn("2023/trip/lake.jpeg.jpg", written)
        self.assertIn("2024/cat.jpg", written)
        originals = _tree(data)
        for row in rows:
            with self.subTest(row["source"]):
                got = written[row["path"]]
                original = originals[row["source"]]
                self.assertLen(got, int(row["chosen_bytes"]))
                self.assertLen(original, int(row["original_bytes"]))
                if row["chosen"] == "original":
                    self.assertEqual(got, original)
                else:  # The classified candidate, byte for byte.
                    pixels = candidates.decode_image(tf.constant(original))
                    quality = int(row["chosen"].removeprefix("qf"))
                    want = tf.io.encode_jpeg(
                        pixels, quality=quality, optimize_size=True
                    )
                    self.assertEqual(got, want.numpy())
                # Every written file classifies like its original.
                self.assertEqual(self.top1(got), self.top1(original))
                self.assertEqual(int(row["verified_top1"]), self.top1(got))
        sizes = sum(len(v) for v in written.values())
        total = sum(len(v) for v in originals.values())
        self.assertAllClose(summary["cr"], total / sizes)
        self.assertEqual(summary["bytes_saved"], total - sizes)
        self.assertEqual(summary["verified"]["top1_agreement"], 100.0)
        self.assertEqual(sum(summary["chosen"].values()), len(NESTED))

    def test_qf_100_to_10_chooses_what_run_selectors_keep_top1_does(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, [0, 1, 2])
        config = self.config(data, qualities=candidates.QUALITIES)
        summary = compress.run(
            config, self.create_tempdir().full_path, False, False
        )
        (report,) = runner.run(
            runner.Config(
                model=config.model,
                data=config.data,
                batch_size=4,
                shard_size=3,
            ),
            self.create_tempdir().full_path,
            verbose=False,
        ).values()
        keep_top1 = next(r for r in report["rows"] if r["name"] == "keep_top1")
        self.assertEqual(summary["cr"], keep_top1["cr"])
        self.assertEqual(summary["top1_agreement"], 100.0)

    def test_resume_after_an_interruption_writes_the_same_files(self):
        data = self.create_tempdir().full_path
        _write_nested(data)
        full = self.create_tempdir().full_path
        compress.run(self.config(data), full, False, False)
        out = self.create_tempdir().full_path
        real_write = output_folder.OutputFolder.write_file
        calls = []

        def write_then_die(folder, name, image_bytes):
            calls.append(name)
            if len(calls) == 3:  # Mid-shard: one file of a shard written.
                raise KeyboardInterrupt
            real_write(folder, name, image_bytes)

        with mock.patch.object(
            output_folder.OutputFolder, "write_file", write_then_die
        ):
            with self.assertRaises(KeyboardInterrupt):
                compress.run(self.config(data), out, False, False)
        compress.run(self.config(data), out, True, False)
        self.assertEqual(_images(_tree(out)), _images(_tree(full)))
        self.assertEqual(_manifest(out), _manifest(full))

    def test_rerun_writes_identical_files_and_removes_only_its_own(self):
        data = self.create_tempdir().full_path
        _write_nested(data)
        out = self.create_tempdir().full_path
        config = self.config(data, qualities=(50, 10))
        compress.run(config, out, False, False)
        first = _images(_tree(out))
        with open(os.path.join(out, "notes.txt"), "w") as f:
            f.write("mine")
        compress.run(config, out, False, False)
        self.assertEqual(_images(_tree(out)), {**first, "notes.txt": b"mine"})
        # Fewer images: the earlier run's other files go, the user's stay.
        os.remove(os.path.join(data, "beach.jpg"))
        compress.run(config, out, False, False)
        self.assertNotIn("beach.jpg", _tree(out))
        self.assertEqual(_tree(out)["notes.txt"], b"mine")

    def test_a_users_file_where_an_output_goes_is_never_overwritten(self):
        out = self.create_tempdir().full_path
        os.makedirs(os.path.join(out, output_folder.STATE_DIR))
        with open(os.path.join(out, "new.jpg"), "wb") as f:
            f.write(b"mine")
        folder = output_folder.OutputFolder(out)
        folder.claim(["a/b.jpg"])
        with self.assertRaisesRegex(ValueError, "new.jpg: exists and was not"):
            folder.claim(["c.jpg", "new.jpg"])
        self.assertEqual(output_folder.OutputFolder(out).known, {"a/b.jpg"})
        folder.write_file("a/b.jpg", b"ours")
        folder.remove_all()
        self.assertEqual(_tree(out), {"new.jpg": b"mine"})

    def test_bad_inputs_are_skipped_with_one_line_reasons(self):
        data = self.create_tempdir().full_path
        _write_nested(data)
        bad = {
            "empty.jpg": b"",
            "broken.png": b"\x89PNG not really",
            "bomb.jpg": testing_utils.image_claiming("jpeg", 20000, 20000),
        }
        for name, content in bad.items():
            with open(os.path.join(data, name), "wb") as f:
                f.write(content)
        before = _digests(data)
        out = self.create_tempdir().full_path
        summary = compress.run(self.config(data), out, False, False)
        self.assertEqual(_digests(data), before)
        self.assertEqual(summary["images"], len(NESTED))
        self.assertEqual(summary["skipped"], len(bad))
        path = os.path.join(out, output_folder.STATE_DIR, "errors.jsonl")
        with open(path) as f:
            errors = {e["id"]: e["reason"] for e in map(json.loads, f)}
        self.assertEqual(sorted(errors), sorted(bad))
        for reason in errors.values():
            self.assertLen(reason.splitlines(), 1)
        self.assertStartsWith(errors["empty.jpg"], "empty file")
        self.assertStartsWith(errors["bomb.jpg"], "too many pixels")
        self.assertNotIn("empty.jpg", _tree(out))

    @parameterized.named_parameters(
        ("out_inside_input", "photos/small", "inside the input folder"),
        ("out_is_input", "photos", "inside the input folder"),
        ("input_inside_out", "", "is inside --out"),
    )
    def test_output_around_the_input_is_refused(self, out, message):
        root = self.create_tempdir().full_path
        data = os.path.join(root, "photos")
        os.makedirs(data)
        _write_nested(data)
        before = _tree(root)
        with self.assertRaisesRegex(ValueError, message) as raised:
            compress.run(
                self.config(data), os.path.join(root, out), False, False
            )
        self.assertLen(str(raised.exception).splitlines(), 1)
        self.assertEqual(_tree(root), before)

    def test_tfrecord_holds_the_same_bytes_and_the_labels(self):
        data = self.create_tempdir().full_path
        testing_utils.write_image_folder(data, [3, 1, 4])
        image = testing_utils.random_image(40, 56)
        Image.fromarray(image).save(os.path.join(data, "unlabelled.png"))
        folder = self.create_tempdir().full_path
        compress.run(self.config(data), folder, False, False)
        out = self.create_tempdir().full_path
        summary = compress.run(
            self.config(data, format="tfrecord", verify=True), out, False, False
        )
        names = sorted(n for n in os.listdir(out) if n.endswith(".tfrecord"))
        self.assertEqual(
            names, [f"images-0000{k}-of-00002.tfrecord" for k in (0, 1)]
        )
        files = _images(_tree(folder))
        records = tf.data.TFRecordDataset([os.path.join(out, n) for n in names])
        labels = {}
        for record in records:
            example = tf.train.Example.FromString(record.numpy())
            feature = example.features.feature
            name = feature["image/filename"].bytes_list.value[0].decode()
            encoded = feature["image/encoded"].bytes_list.value[0]
            self.assertEqual(encoded, files[name])
            label = feature["image/class/label"].int64_list.value
            labels[name] = label[0] if label else None
        wnids = imagenet.wnids()
        self.assertEqual(
            labels,
            {
                f"{wnids[3]}_0.jpg": 3,
                f"{wnids[1]}_1.jpg": 1,
                f"{wnids[4]}_2.jpg": 4,
                "unlabelled.jpg": None,
            },
        )
        self.assertEqual(summary["verified"]["top1_agreement"], 100.0)

    def test_ladder_names_and_subsampling(self):
        config = self.config("unused", subsamplings=("4:2:0", "4:4:4"))
        codecs = compress.ladder_of(config)
        self.assertEqual(
            [c.name for c in codecs],
            ["qf90", "qf50", "qf10"] + [f"jpeg-444_q{q}" for q in QUALITIES],
        )
        image = testing_utils.random_image(32, 32)
        for rung, sampling in ((codecs[0], 2), (codecs[3], 0)):
            jpeg = rung.encode(tf.constant(image)).numpy()
            with Image.open(io.BytesIO(jpeg)) as opened:
                self.assertEqual(JpegImagePlugin.get_sampling(opened), sampling)
        self.assertEqual(compress.QUALITIES[0], 100)
        self.assertEqual(compress.QUALITIES[-1], 5)

    def test_ladder_with_mozjpeg_and_a_table_set(self):
        path = os.path.join(
            self.create_tempdir().full_path, "qtables_mine.json"
        )
        luma, chroma = tables.standard_qtables(30)
        tables.save_json(path, luma, chroma)
        config = self.config(
            "unused",
            qualities=(50,),
            encoders=("libjpeg", "mozjpeg"),
            tables=(path,),
        )
        codecs = compress.ladder_of(config)
        names = ["qf50", "jpeg@mozjpeg_q50", "mine_q50", "mine@mozjpeg_q50"]
        self.assertEqual([c.name for c in codecs], names)
        image = tf.constant(testing_utils.random_image(64, 64))
        sizes = [len(c.encode(image).numpy()) for c in codecs]
        self.assertLess(sizes[1], sizes[0])  # Trellis: fewer bytes.
        # The table set at quality 50 is its tables as they are.
        written = codec.read_qtables(codecs[2].encode(image).numpy())
        self.assertAllEqual(written[0], luma)
        self.assertAllEqual(written[1], chroma)

    @parameterized.named_parameters(
        ("selector", {"selector": "keep_top3"}, "selector must be one of"),
        ("threshold", {"selector": "confident_2"}, r"in \[0.0, 1.0\]"),
        ("format", {"format": "zip"}, "format must be one of"),
        ("encoder", {"encoders": ("cjpeg",)}, "encoders must be one of"),
        ("subsampling", {"subsamplings": ()}, "subsamplings: give"),
        ("quality", {"qualities": (101,)}, r"\[1, 100\]"),
    )
    def test_bad_settings_are_refused_in_one_line(self, changes, message):
        with self.assertRaisesRegex(ValueError, message) as raised:
            compress.check_config(self.config("unused", **changes))
        self.assertLen(str(raised.exception).splitlines(), 1)

    def test_selectors_choose_from_the_answers(self):
        topk = np.array([[[1, 2, 3, 4, 5], [1, 3, 2, 4, 5], [2, 1, 3, 4, 5]]])
        probs = np.array([[[0.8] + [0.05] * 4, [0.6] + [0.1] * 4, [0.9] * 5]])
        sizes = np.array([[100, 50, 10]])
        p = mock.Mock(topk=topk, topk_probs=probs, sizes=sizes)
        self.assertEqual(compress.select(p, "keep_top1").tolist(), [1])
        self.assertEqual(compress.select(p, "keep_top5").tolist(), [2])
        self.assertEqual(compress.select(p, "keep_both").tolist(), [1])
        self.assertEqual(compress.select(p, "confident_0.7").tolist(), [0])

    def test_script_writes_the_files_and_prints_the_summary(self):
        data = self.create_tempdir().full_path
        _write_nested(data)
        out = os.path.join(self.create_tempdir().full_path, "small")
        result = testing_utils.run_module(
            "experiments.compress",
            f"--model={self.model}",
            f"--data={data}",
            f"--out={out}",
            "--qualities=50,10",
            "--verify",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"{len(NESTED)} images written to {out}", result.stdout)
        self.assertIn("(100.00%)", result.stdout)
        self.assertLen(_images(_tree(out)), len(NESTED))
