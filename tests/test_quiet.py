import os
import struct
import subprocess
import sys
import textwrap

import tensorflow as tf
from absl.testing import parameterized
from PIL import Image, ImageCms

from compression_helps.core import imagenet, quiet
from tests import testing_utils

ONEDNN = (
    "I0000 00:00:1796142663.433864   13597 port.cc:153] oneDNN custom "
    "operations are on. You may see slightly different numerical results"
)
PNG = (
    "W0000 00:00:1796142753.928327   14498 png_io.cc:96] PNG warning: "
    "iCCP: known incorrect sRGB profile"
)
UINT8 = (
    "E0000 00:00:1796142753.928327   14498 mkl_util.h:1234] oneDNN supports "
    "DT_UINT8 only on platforms with AVX-512. Falling back to the default "
    "Eigen-based implementation if present."
)


def run_python(code, *args, env=None):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=testing_utils.REPO_ROOT,
        capture_output=True,
        text=True,
        env=env or testing_utils.script_environment(),
        timeout=300,
    )


def write_pngs_with_icc_profile(folder, labels):
    """PNGs whose iCCP chunk makes libpng warn, as many web PNGs do.

    The sRGB profile, padded to 3144 bytes with no profile ID and intent 0,
    looks to libpng like the HP/Microsoft sRGB profile, edited.
    """
    profile = bytearray(
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    )
    profile += bytes(3144 - len(profile))
    profile[0:4] = struct.pack(">I", 3144)
    profile[64:68] = bytes(4)
    profile[84:100] = bytes(16)
    for i, label in enumerate(labels):
        image = Image.fromarray(testing_utils.random_image(seed=i))
        path = os.path.join(folder, f"{imagenet.wnids()[label]}_{i}.png")
        image.save(path, icc_profile=bytes(profile))


class IsNoiseTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        (
            "absl_notice",
            "WARNING: All log messages before absl::Initialize"
            "Log() is called are written to STDERR",
        ),
        ("onednn_info", ONEDNN),
        ("png_warning", PNG),
        ("uint8_fallback", UINT8),
        (
            "damaged_jpeg",
            "E0000 00:00:1796145733.511443   15255 jpeg_mem.cc:331] "
            "Premature end of JPEG data. Stopped at line 8/375",
        ),
        ("libpng_own", "libpng warning: iCCP: known incorrect sRGB profile"),
        ("pillow_buffer", "Suspension not allowed here"),
        (
            "cpu_guard_second_line",
            "To enable the following instructions: "
            "AVX2 FMA, in other operations, rebuild TensorFlow",
        ),
        (
            "old_format",
            "2025-01-30 22:44:42.456316: I tensorflow/core/util/"
            "port.cc:153] oneDNN custom operations are on.",
        ),
    )
    def test_noise(self, line):
        self.assertTrue(quiet.is_noise(line))
        self.assertTrue(quiet.is_noise((line + "\n").encode()[:-1]))

    @parameterized.named_parameters(
        ("script_error", "error: /data: not a directory"),
        ("cpp_error", "E0000 00:00:17.5   12 op.cc:1] something failed"),
        (
            "python_absl_warning",
            "W0728 16:31:02.123456 1397 rundir.py:340] "
            "shards/x.npz: damaged; computing it again",
        ),
        ("traceback", "Traceback (most recent call last):"),
        ("progress", "evaluating: 8/300 images (3%), 0:02 elapsed"),
    )
    def test_not_noise(self, line):
        self.assertFalse(quiet.is_noise(line))

    @parameterized.named_parameters(
        ("flag", ["s.py", "--verbose"], True),
        ("true", ["s.py", "--verbose=true"], True),
        ("false", ["s.py", "--verbose=false"], False),
        ("last_wins", ["s.py", "--verbose", "--noverbose"], False),
        ("after_separator", ["s.py", "--", "--verbose"], False),
        ("other_flag", ["s.py", "--verbosity=1"], False),
        ("none", ["s.py"], False),
    )
    def test_wants_verbose(self, argv, expected):
        self.assertEqual(quiet.wants_verbose(argv), expected)


_WRITES = """
    import os, sys
    from compression_helps.core import quiet
    print(quiet.quiet_native_logs(sys.argv), os.environ.get(
        "TF_CPP_MIN_LOG_LEVEL"), flush=True)
    os.write(2, b"%s\\n")
    os.write(2, b"kept by C\\n%s\\n")
    sys.stderr.write("kept by Python\\n")
    os.write(2, b"no line end")
"""


class QuietNativeLogsTest(tf.test.TestCase):
    code = _WRITES % (ONEDNN, PNG)

    def test_drops_noise_and_keeps_the_rest_in_order(self):
        result = run_python(self.code)
        self.assertEqual(result.stdout, "True 2\n")
        self.assertEqual(
            result.stderr, "kept by C\nkept by Python\nno line end"
        )

    def test_verbose_keeps_everything(self):
        result = run_python(self.code, "--verbose")
        self.assertEqual(result.stdout, "False None\n")
        self.assertIn(ONEDNN, result.stderr)
        self.assertIn(PNG, result.stderr)

    def test_explicit_log_level_keeps_everything(self):
        result = run_python(
            self.code,
            env=testing_utils.script_environment(TF_CPP_MIN_LOG_LEVEL="0"),
        )
        self.assertEqual(result.stdout, "False 0\n")
        self.assertIn(PNG, result.stderr)

    def test_only_scripts_of_the_package_quiet_themselves(self):
        result = run_python(
            """
            from compression_helps.core import quiet
            print(quiet.is_script_run("experiments"))
            """
        )
        self.assertEqual(result.stdout, "False\n")


class ScriptOutputTest(tf.test.TestCase):
    """A normal run prints the progress and the table, and nothing else."""

    def test_png_run_prints_no_noise_and_no_escape_codes(self):
        folder = self.create_tempdir().full_path
        write_pngs_with_icc_profile(folder, [1, 2, 3, 4])
        decode = run_python(
            f"""
            import tensorflow as tf
            tf.io.decode_png(tf.io.read_file(
                tf.io.gfile.glob("{folder}/*.png")[0]))
            """,
            env=testing_utils.script_environment(TF_CPP_MIN_LOG_LEVEL="0"),
        )
        self.assertIn("PNG warning: iCCP", decode.stderr)  # The noise.
        model = testing_utils.tiny_model_file(self.create_tempdir().full_path)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.run_selectors",
                f"--model={model}",
                "--weights=none",
                f"--data={folder}",
                "--qualities=50",
                f"--workdir={self.create_tempdir().full_path}/run",
            ],
            cwd=testing_utils.REPO_ROOT,
            capture_output=True,
            text=True,
            env=testing_utils.script_environment(),
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        self.assertNotRegex(result.stdout, r"[\x1b\x08\r]")
        self.assertStartsWith(result.stdout, "evaluating: 4/4 images (100%)")
        self.assertIn("4 images evaluated, 0 skipped", result.stdout)
        self.assertIn("\n| hrs |", result.stdout)
