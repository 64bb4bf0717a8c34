import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from deepn_jpeg.analysis import dct_pixels
from tests import testing_utils


def upsample(plane, fancy):
    """2x along both axes, libjpeg's way, in numpy (edges replicated)."""
    for axis in (0, 1):
        plane = np.moveaxis(plane, axis, 0)
        padded = np.concatenate([plane[:1], plane, plane[-1:]])
        even = 0.75 * plane + 0.25 * padded[:-2] if fancy else plane
        odd = 0.75 * plane + 0.25 * padded[2:] if fancy else plane
        plane = np.stack([even, odd], 1).reshape(-1, *plane.shape[1:])
        plane = np.moveaxis(plane, 0, axis)
    return plane


def reference_420(image, fancy):
    """RGB after 4:2:0 chroma averaging and upsampling, in numpy."""
    height, width = image.shape[:2]
    to_ycbcr = testing_utils.JFIF_YCBCR
    ycbcr = image.astype(np.float64) @ to_ycbcr.T  # Cb, Cr centred on 0.
    padded = np.pad(
        ycbcr, [(0, -height % 16), (0, -width % 16), (0, 0)], mode="edge"
    )
    h, w = padded.shape[0] // 2, padded.shape[1] // 2
    chroma = padded[..., 1:].reshape(h, 2, w, 2, 2).mean(axis=(1, 3))
    chroma = chroma[: (height + 1) // 2, : (width + 1) // 2]
    ycbcr[..., 1:] = upsample(chroma, fancy)[:height, :width]
    return ycbcr @ np.linalg.inv(to_ycbcr).T


class CoefficientsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("blocks", 32, 48), ("odd", 21, 37), ("one_pixel", 1, 1)
    )
    def test_444_round_trip_is_exact(self, height, width):
        image = testing_utils.noise_image(height, width)
        y, cb, cr = dct_pixels.rgb_to_coefficients(image, "4:4:4")
        self.assertEqual(y.shape, (-(-height // 8), -(-width // 8), 8, 8))
        self.assertEqual(cb.shape, y.shape)
        rgb = dct_pixels.coefficients_to_rgb(
            y[None], cb[None], cr[None], "4:4:4", size=(height, width)
        )
        self.assertEqual(rgb.dtype, tf.float64)
        self.assertAllClose(rgb[0], image, atol=1e-6, rtol=0)

    @parameterized.named_parameters(
        ("fancy", "fancy", 32, 48),
        ("nearest", "nearest", 32, 48),
        ("fancy_odd", "fancy", 21, 37),
        ("nearest_odd", "nearest", 19, 9),
    )
    def test_420_equals_the_downsampled_chroma_image(
        self, upsampling, height, width
    ):
        image = testing_utils.noise_image(height, width, seed=1)
        y, cb, cr = dct_pixels.rgb_to_coefficients(image, "4:2:0")
        # libjpeg's block grids: ceil(H/8) for Y, ceil(H/16) for chroma.
        self.assertEqual(y.shape[:2], (-(-height // 8), -(-width // 8)))
        self.assertEqual(cb.shape[:2], (-(-height // 16), -(-width // 16)))
        rgb = dct_pixels.coefficients_to_rgb(
            y[None], cb[None], cr[None], "4:2:0", upsampling, (height, width)
        )
        want = reference_420(image, upsampling == "fancy")
        self.assertAllClose(rgb[0], want, atol=1e-6, rtol=0)

    def test_smooth_chroma_is_kept_by_fancy_upsampling(self):
        # A horizontal ramp: the triangle filter interpolates it exactly
        # away from the edges; replicating makes 2-pixel steps.
        ramp = np.tile(np.linspace(40, 200, 64), (32, 1))
        image = np.stack([ramp, ramp[:, ::-1], ramp], -1).astype(np.uint8)
        planes = dct_pixels.rgb_to_coefficients(image, "4:2:0")
        batch = [p[None] for p in planes]
        errors = {}
        for upsampling in dct_pixels.UPSAMPLINGS:
            rgb = dct_pixels.coefficients_to_rgb(*batch, "4:2:0", upsampling)
            errors[upsampling] = np.abs(rgb[0, :, 2:-2] - image[:, 2:-2]).max()
        self.assertLess(errors["fancy"], 2.0)
        self.assertLess(errors["fancy"], errors["nearest"])

    def test_eager_equals_dataset_map(self):
        image = testing_utils.noise_image(24, 40, seed=2)
        eager = dct_pixels.rgb_to_coefficients(image, "4:2:0")
        mapped = next(
            iter(
                tf.data.Dataset.from_tensors(image).map(
                    lambda x: dct_pixels.rgb_to_coefficients(x, "4:2:0")
                )
            )
        )
        for a, b in zip(eager, mapped, strict=True):
            self.assertAllEqual(a, b)

    @parameterized.named_parameters(
        ("444", "4:4:4", "fancy", False),
        ("420_fancy", "4:2:0", "fancy", False),
        ("420_nearest", "4:2:0", "nearest", False),
        ("420_clip", "4:2:0", "fancy", True),
    )
    def test_gradient_matches_finite_differences(
        self, subsampling, upsampling, clip
    ):
        rng = np.random.default_rng(3)
        chroma_columns = 2 if subsampling == "4:4:4" else 1
        # Large coefficients: with `clip`, many samples are clipped, and the
        # straight-through gradient must still be the linear decoder's.
        scale = 400.0 if clip else 20.0
        y = rng.normal(0, scale, (1, 1, 2, 8, 8))
        cb = rng.normal(0, scale, (1, 1, chroma_columns, 8, 8))
        cr = rng.normal(0, scale, cb.shape)
        weights = tf.constant(rng.normal(size=(1, 7, 13, 3)))

        @tf.function  # Traced once for the many evaluations.
        def decode(y, cb, cr, clip=clip):
            rgb = dct_pixels.coefficients_to_rgb(
                y, cb, cr, subsampling, upsampling, (7, 13), clip
            )
            return tf.reduce_sum(weights * rgb)

        inputs = [tf.constant(a) for a in (y, cb, cr)]
        if clip:
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                value = decode(*inputs)
            got = tape.gradient(value, inputs)
            linear = tf.test.compute_gradient(
                lambda *a: decode(*a, clip=False), inputs
            )[1]
            for g, want in zip(got, linear, strict=True):
                self.assertAllClose(np.reshape(g, -1), want[0], atol=1e-9)
            return
        theoretical, numerical = tf.test.compute_gradient(decode, inputs)
        for t, n in zip(theoretical, numerical, strict=True):
            self.assertAllClose(t, n, atol=1e-6, rtol=1e-6)
            self.assertGreater(np.abs(t).max(), 0.1)

    def test_matches_libjpeg_decoder_on_real_files(self):
        if not testing_utils.has_samples():
            self.skipTest(testing_utils.SKIP_NO_SAMPLES)
        import jpeglib

        found = {"4:4:4": [], "4:2:0": []}
        for path in testing_utils.sample_paths(40):
            with jpeglib.version("mozjpeg403"):
                jpeg = jpeglib.read_dct(path)
            factors = np.asarray(jpeg.samp_factor).tolist()
            kind = {
                ((1, 1), (1, 1), (1, 1)): "4:4:4",
                ((2, 2), (1, 1), (1, 1)): "4:2:0",
            }.get(tuple(map(tuple, factors)))
            if kind and len(found[kind]) < 2:
                found[kind].append((path, jpeg))
        self.assertLen(found["4:2:0"], 2)  # The sample has both kinds.
        for subsampling, pairs in found.items():
            for path, jpeg in pairs:
                # jpeglib: quantized [rows, columns, 8, 8], [u, v] order.
                planes = [
                    (plane * jpeg.qt[slot]).astype(np.float64)[None]
                    for plane, slot in zip(
                        (jpeg.Y, jpeg.Cb, jpeg.Cr),
                        jpeg.quant_tbl_no,
                        strict=True,
                    )
                ]
                size = (jpeg.height, jpeg.width)
                rgb = dct_pixels.coefficients_to_rgb(
                    *planes, subsampling, "fancy", size, clip=True
                )[0]
                with open(path, "rb") as f:
                    want = tf.io.decode_jpeg(
                        f.read(), dct_method="INTEGER_ACCURATE"
                    )
                diff = np.abs(np.round(rgb) - tf.cast(want, tf.float64))
                # Measured: max 2-3 levels, mean 0.38-0.45 (libjpeg rounds
                # the IDCT, upsampling and colour conversion; we do not).
                self.assertLessEqual(diff.max(), 4, path)
                self.assertLess(diff.mean(), 0.6, path)
                # Our forward transform has libjpeg's block grids.
                decoded = dct_pixels.rgb_to_coefficients(want, subsampling)
                for ours, theirs in zip(decoded, planes, strict=True):
                    self.assertEqual(ours.shape, theirs.shape[1:])
