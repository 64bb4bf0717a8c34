import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.engine import candidates
from compression_helps.models import registry
from tests import testing_utils

QUALITIES = (90, 50, 10)


def resize(image):
    return registry.center_crop_and_resize(image, 16)


def in_dataset(fn, *args):
    """Runs fn inside Dataset.map (graph mode) on one element."""
    ds = tf.data.Dataset.from_tensors(args).map(fn)
    return next(iter(ds))


class CandidatesTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.image = testing_utils.random_image(40, 56)
        self.jpeg = testing_utils.jpeg_bytes(self.image, quality=97)

    def test_candidate_zero_is_the_original_file(self):
        example = {"id": "x", "image_bytes": self.jpeg, "label": 3}
        out = candidates.make_candidates(example, resize, QUALITIES)
        self.assertEqual(int(out["sizes"][0]), len(self.jpeg))
        original = tf.io.decode_jpeg(self.jpeg, dct_method="INTEGER_ACCURATE")
        self.assertAllEqual(
            out["pixels"][0], candidates.model_pixels(original, resize)
        )
        self.assertEqual(int(out["num_pixels"]), 40 * 56)

    def test_candidates_are_jpegs_at_full_resolution(self):
        for codec in candidates.as_codecs(QUALITIES):
            jpeg = codec.encode(self.image)
            self.assertAllEqual(tf.io.extract_jpeg_shape(jpeg), [40, 56, 3])

    def test_encoded_candidates_sizes_are_the_codecs_files(self):
        codecs = candidates.as_codecs(QUALITIES)
        out = candidates.encoded_candidates(self.image, resize, codecs)
        for i, codec in enumerate(codecs):
            jpeg = codec.encode(self.image)
            self.assertEqual(int(out["sizes"][i]), len(jpeg.numpy()))
            decoded = tf.io.decode_jpeg(jpeg, dct_method="INTEGER_ACCURATE")
            self.assertAllEqual(
                out["pixels"][i], candidates.model_pixels(decoded, resize)
            )

    def test_codec_names(self):
        encode = candidates.jpeg_codec(50).encode
        self.assertEqual(candidates.jpeg_codec(50).name, "qf50")
        self.assertEqual(
            candidates.Codec("paper", 50, encode).name, "paper_q50"
        )
        with self.assertRaisesRegex(ValueError, "repeated candidates"):
            candidates.as_codecs([50, candidates.Codec("jpeg", 50, encode)])

    def test_eager_equals_dataset_map(self):
        example = {
            "id": tf.constant("x"),
            "image_bytes": tf.constant(self.jpeg),
            "label": tf.constant(3),
        }

        def make(e):
            return candidates.make_candidates(e, resize, QUALITIES)

        eager = make(example)
        graph = in_dataset(make, example)
        for key in eager:
            self.assertAllEqual(eager[key], graph[key])
        self.assertEqual(eager["pixels"].shape, [4, 16, 16, 3])
        self.assertEqual(eager["pixels"].dtype, tf.uint8)
        self.assertNotIn("image_bytes", eager)
        self.assertAllEqual(eager["sizes"][0], len(self.jpeg))

    def test_several_resizes_give_each_its_own_pixels(self):
        example = {"id": "x", "image_bytes": self.jpeg, "label": 3}

        def larger(image):
            return registry.center_crop_and_resize(image, 24, method="bicubic")

        both = candidates.make_candidates(example, (resize, larger), QUALITIES)
        for i, one in enumerate((resize, larger)):
            alone = candidates.make_candidates(example, one, QUALITIES)
            self.assertAllEqual(both["pixels"][i], alone["pixels"])
            self.assertAllEqual(both["sizes"], alone["sizes"])
        self.assertEqual(both["pixels"][1].shape, [4, 24, 24, 3])

    def test_stored_files_give_what_make_candidates_gives(self):
        example = {
            "index": tf.constant(7, tf.int64),
            "id": tf.constant("x"),
            "image_bytes": tf.constant(self.jpeg),
            "label": tf.constant(3),
        }

        def from_files(e):
            files = candidates.candidate_files(e, QUALITIES)
            return candidates.stored_candidates(files, resize)

        want = candidates.make_candidates(example, resize, QUALITIES)
        for got in (from_files(example), in_dataset(from_files, example)):
            self.assertEqual(set(got), set(want))
            for key in want:
                self.assertAllEqual(got[key], want[key])
        files = candidates.candidate_files(example, QUALITIES)["files"]
        self.assertEqual(files[0].numpy(), self.jpeg)

    def test_decode_image_eager_equals_dataset_map_for_png(self):
        png = tf.io.encode_png(self.image)
        self.assertAllEqual(candidates.decode_image(png), self.image)
        self.assertAllEqual(
            in_dataset(candidates.decode_image, png), self.image
        )

    def test_non_jpeg_original_keeps_its_own_size(self):
        png = tf.io.encode_png(self.image).numpy()
        example = {"id": "p", "image_bytes": png, "label": 0}
        out = candidates.make_candidates(example, resize, QUALITIES)
        self.assertEqual(int(out["sizes"][0]), len(png))

    @parameterized.named_parameters(
        ("empty", []),
        ("zero", [0]),
        ("too_high", [101]),
        ("repeated", [50, 50]),
    )
    def test_bad_qualities_are_rejected(self, qualities):
        with self.assertRaises(ValueError):
            candidates.validate_qualities(qualities)

    def test_batches_keep_order(self):
        images = [testing_utils.random_image(seed=s) for s in range(5)]
        ds = tf.data.Dataset.from_tensor_slices(
            {
                "id": [str(i) for i in range(5)],
                "image_bytes": [testing_utils.jpeg_bytes(x) for x in images],
                "label": list(range(5)),
            }
        )
        batches = list(candidates.candidate_batches(ds, resize, QUALITIES, 2))
        ids = [i.decode() for b in batches for i in b["id"].numpy()]
        self.assertEqual(ids, ["0", "1", "2", "3", "4"])
        self.assertEqual(batches[0]["pixels"].shape, [2, 4, 16, 16, 3])

    def test_bad_images_are_dropped_not_fatal(self):
        good = testing_utils.jpeg_bytes(testing_utils.random_image())
        ds = tf.data.Dataset.from_tensor_slices(
            {
                "index": [0, 1, 2],
                "id": ["a", "b", "c"],
                "image_bytes": [good, b"broken", good],
                "label": [0, 0, 0],
            }
        )
        batches = candidates.candidate_batches(ds, resize, QUALITIES, 8)
        indices = [i for b in batches for i in b["index"].numpy().tolist()]
        self.assertEqual(indices, [0, 2])

    def test_examples_the_guard_refused_are_dropped_before_decoding(self):
        good = testing_utils.jpeg_bytes(testing_utils.random_image())
        ds = tf.data.Dataset.from_tensor_slices(
            {
                "index": [0, 1, 2],
                "id": ["a", "b", "c"],
                # Decodable bytes: only its error can drop example 2.
                "image_bytes": [good, good, good],
                "label": [0, -1, 0],
                "error": ["", "", "too many pixels: ..."],
            }
        )
        batches = list(candidates.candidate_batches(ds, resize, QUALITIES, 8))
        # Unlabelled examples are the caller's to drop.
        self.assertEqual(batches[0]["index"].numpy().tolist(), [0, 1])
        self.assertNotIn("error", batches[0])


class RealImageSizesTest(tf.test.TestCase):
    def test_sizes_fall_with_quality_on_every_sample_image(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        paths = testing_utils.sample_paths()
        codecs = candidates.as_codecs(candidates.QUALITIES)

        def sizes(path):
            image = candidates.decode_image(tf.io.read_file(path))
            files = [codec.encode(image) for codec in codecs]
            return tf.strings.length(tf.stack(files))

        ds = tf.data.Dataset.from_tensor_slices(paths).map(
            sizes, num_parallel_calls=tf.data.AUTOTUNE
        )
        jpeg_sizes = np.stack(list(ds.as_numpy_iterator()))  # [N, 10]
        falls = np.all(np.diff(jpeg_sizes, axis=1) < 0, axis=1)
        exceptions = [
            (os.path.basename(p), s.tolist())
            for p, s, ok in zip(paths, jpeg_sizes, falls, strict=True)
            if not ok
        ]
        self.assertEmpty(exceptions, f"sizes not falling with QF: {exceptions}")
