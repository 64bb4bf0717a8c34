import io
import os

import keras
import numpy as np
import scipy.fft
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from compression_helps.core import files
from compression_helps.models import registry
from deepn_jpeg.analysis import band_sensitivity, dct_pixels
from deepn_jpeg.jpeg import tables
from tests import testing_utils

# Orthonormal DCT-II matrix, [frequency, sample].
_DCT = scipy.fft.dct(np.eye(8), norm="ortho", axis=0)


def png_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def examples(images, labels=None):
    labels = [0] * len(images) if labels is None else labels
    return tf.data.Dataset.from_tensor_slices(
        {
            "image_bytes": [png_bytes(image) for image in images],
            "label": np.array(labels, np.int32),
            "index": np.arange(len(images), dtype=np.int64),
        }
    )


def band_classifier(band, size=16, seed=0):
    """A classifier that sees only luma band `band` of each 8x8 block."""
    keras.utils.set_random_seed(seed)
    u, v = band
    basis = np.outer(_DCT[u], _DCT[v])  # [8 rows, 8 columns]
    luma = testing_utils.JFIF_YCBCR[0]  # RGB -> Y weights.
    kernel = basis[:, :, None, None] * luma[None, None, :, None]
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(
        1,
        8,
        strides=8,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant(kernel),
    )(inputs)
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 64.0)(x))
    outputs = keras.layers.Dense(1000, activation="softmax")(x)
    return registry.Classifier(
        "band",
        keras.Model(inputs, outputs),
        size,
        resize=lambda image: tf.cast(image, tf.float32),
        preprocess_input=tf.identity,
    )


def hand_made(luma, cb, cr=None, loss="kl"):
    cr = cb if cr is None else cr
    return band_sensitivity.BandSensitivity(
        1, [4, 1, 1], np.stack([4 * luma, cb, cr]), "4:2:0", loss
    )


class BandSensitivityTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("kl_420_dc", "kl", "4:2:0", (0, 0)),
        ("kl_444_ac", "kl", "4:4:4", (2, 5)),
        ("xent_420_ac", "xent", "4:2:0", (7, 1)),
    )
    def test_a_model_of_one_band_is_sensitive_to_that_band_only(
        self, loss, subsampling, band
    ):
        images = [testing_utils.noise_image(16, 16, seed=s) for s in range(3)]
        sens, indices = band_sensitivity.compute_with_indices(
            band_classifier(band),
            examples(images, [1, 2, 3]),
            loss=loss,
            chroma_subsampling=subsampling,
            batch_size=2,
        )
        self.assertAllEqual(indices, [0, 1, 2])
        self.assertEqual(sens.num_images, 3)
        chroma_blocks = 4 if subsampling == "4:4:4" else 1
        self.assertAllEqual(sens.counts, [12] + [3 * chroma_blocks] * 2)
        luma = sens.mean("y")
        self.assertGreater(luma[band], 0)
        others = sens.sums_sq.copy()
        others[0][band] = 0
        # float32 leaks ~1e-7 of a gradient into orthogonal bands.
        self.assertLess(others.max() / sens.sums_sq[0][band], 1e-12)

    def test_merging_two_halves_equals_one_pass(self):
        classifier = band_classifier((1, 1))
        images = [testing_utils.noise_image(16, 16, seed=s) for s in range(4)]
        whole, _ = band_sensitivity.compute_with_indices(
            classifier, examples(images), batch_size=4
        )
        first, _ = band_sensitivity.compute_with_indices(
            classifier, examples(images).take(2), batch_size=4
        )
        second, _ = band_sensitivity.compute_with_indices(
            classifier, examples(images).skip(2), batch_size=4
        )
        merged = first.merge(second)
        self.assertEqual(merged.num_images, 4)
        self.assertAllEqual(merged.counts, whole.counts)
        self.assertAllClose(merged.sums_sq, whole.sums_sq, rtol=1e-6)

    def test_kl_probes_estimate_the_fisher_information(self):
        # Exact: sum_c p_c (d log p_c / dC)^2 from the full Jacobian.
        classifier = band_classifier((0, 1), size=8, seed=1)
        image = testing_utils.noise_image(8, 8, seed=4)
        planes = [
            tf.cast(p, tf.float32)[None]
            for p in dct_pixels.rgb_to_coefficients(image, "4:4:4")
        ]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(planes)
            rgb = dct_pixels.coefficients_to_rgb(*planes, "4:4:4")
            log_p = tf.math.log(classifier.model(rgb)[0])
        jacobians = tape.jacobian(log_p, planes)
        p = np.exp(log_p.numpy())
        exact = [
            np.einsum("c,c...->...", p, np.square(j.numpy()))[0, 0, 0]
            for j in jacobians
        ]
        sens, _ = band_sensitivity.compute_with_indices(
            classifier,
            examples([image]),
            chroma_subsampling="4:4:4",
            probes=64,
        )
        for c in range(3):
            self.assertAllClose(sens.sums_sq[c], exact[c], rtol=0.35)
        self.assertAllClose(
            sens.sums_sq.sum(), np.sum([e.sum() for e in exact]), rtol=0.1
        )

    def test_npz_round_trip_is_exact(self):
        rng = np.random.default_rng(0)
        sens = band_sensitivity.BandSensitivity(
            5, [40, 10, 10], rng.random((3, 8, 8)), "4:4:4", "xent"
        )
        path = os.path.join(self.create_tempdir().full_path, "s.npz")
        sens.save(path)
        loaded = band_sensitivity.BandSensitivity.load(path)
        self.assertEqual(loaded.num_images, 5)
        self.assertAllEqual(loaded.counts, sens.counts)
        self.assertAllEqual(loaded.sums_sq, sens.sums_sq)
        self.assertEqual(
            (loaded.chroma_subsampling, loaded.loss), ("4:4:4", "xent")
        )

    def test_errors(self):
        kl = band_sensitivity.BandSensitivity.empty("4:2:0", "kl")
        with self.assertRaisesRegex(ValueError, "cannot merge"):
            kl.merge(band_sensitivity.BandSensitivity.empty("4:2:0", "xent"))
        with self.assertRaisesRegex(ValueError, "no luma blocks"):
            kl.mean("luma")
        with self.assertRaisesRegex(ValueError, "component"):
            kl.mean("green")
        with self.assertRaisesRegex(ValueError, "loss"):
            band_sensitivity.BandSensitivity.empty("4:2:0", "mse")
        path = os.path.join(self.create_tempdir().full_path, "x.npz")
        files.write_npz(path, {"counts": np.zeros(3)})
        with self.assertRaisesRegex(ValueError, "not band sensitivities"):
            band_sensitivity.BandSensitivity.load(path)


class TablesTest(tf.test.TestCase, parameterized.TestCase):
    def test_four_times_the_sensitivity_halves_the_step(self):
        luma = np.full((8, 8), 1.0)
        luma[0, 3] = 4.0
        luma_steps, _ = band_sensitivity.steps(hand_made(luma, np.ones((8, 8))))
        self.assertAllClose(luma_steps[0, 0], 2 * luma_steps[0, 3], rtol=1e-12)

    def test_luma_has_the_geometric_mean_of_annex_k(self):
        rng = np.random.default_rng(0)
        sens = hand_made(rng.uniform(1, 100, (8, 8)), rng.random((8, 8)))
        luma, _ = band_sensitivity.steps(sens)
        want = np.exp(np.log(tables.STANDARD_LUMA_QTABLE).mean())
        self.assertAllClose(np.exp(np.log(luma).mean()), want)

    def test_chroma_follows_the_mean_of_cb_and_cr(self):
        luma = np.full((8, 8), 8.0)
        # Cb and Cr average to 2: a quarter of luma, twice the step.
        luma_steps, chroma_steps = band_sensitivity.steps(
            hand_made(luma, np.full((8, 8), 1.0), np.full((8, 8), 3.0))
        )
        self.assertAllClose(chroma_steps, 2 * luma_steps, rtol=1e-12)

    def test_a_band_the_model_ignores_gets_the_largest_step(self):
        luma = np.ones((8, 8))
        luma[7, 7] = 0.0  # Raised to 1/255^2 of the largest: 255x the step.
        luma_steps, _ = band_sensitivity.steps(hand_made(luma, np.ones((8, 8))))
        self.assertAllClose(luma_steps[7, 7], 255 * luma_steps[0, 0])
        luma_table, chroma_table = band_sensitivity.qtables(
            hand_made(luma, np.full((8, 8), 1e-3))
        )
        self.assertEqual(luma_table.dtype, np.int32)
        self.assertEqual(luma_table[7, 7], 255)
        self.assertAllEqual(chroma_table, np.full((8, 8), 255))

    def test_a_step_below_one_half_becomes_one(self):
        luma = np.ones((8, 8))
        luma[0, 0] = 3e4  # Step about 45 / sqrt(3e4) = 0.3: rounds to 0.
        luma_steps, _ = band_sensitivity.steps(hand_made(luma, np.ones((8, 8))))
        self.assertLess(luma_steps[0, 0], 0.5)
        luma_table, _ = band_sensitivity.qtables(
            hand_made(luma, np.ones((8, 8)))
        )
        self.assertEqual(luma_table[0, 0], 1)
        tables.validate_qtable(luma_table)

    def test_no_sensitivity_is_refused(self):
        zero = np.zeros((8, 8))
        with self.assertRaisesRegex(ValueError, "no band"):
            band_sensitivity.qtables(hand_made(zero, zero))
