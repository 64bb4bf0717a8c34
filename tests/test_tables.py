import dataclasses
import io
import json
import os
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from deepn_jpeg.jpeg import codec, tables, tables_io, tableset_files
from tests import testing_utils

EPS = 1e-6


class PlmTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("zero", 0.0, 255),
        ("first_segment", 10.0, 158),  # 157.5, halves round up.
        ("just_below_t1", 20.0 - EPS, 60),
        ("at_t1", 20.0, 60),  # a - k1*T1 = 60.
        ("just_above_t1", 20.0 + EPS, 60),  # b - k2*T1 = 60: continuous.
        ("second_segment", 40.0, 40),
        ("just_below_t2", 60.0 - EPS, 20),
        ("at_t2", 60.0, 20),
        ("just_above_t2", 60.0 + EPS, 60),  # The jump: c - k3*T2 = 60.
        ("third_segment", 70.0, 30),
        ("just_above_q_min", 78.0, 6),
        ("at_q_min", 235.0 / 3.0, 5),
        ("below_q_min", 100.0, 5),
        ("huge", 1e6, 5),
    )
    def test_paper_values(self, std, expected):
        self.assertEqual(tables.plm(std), expected)

    @parameterized.named_parameters(
        ("zero", 0.0, 255),
        ("at_t1", 20.0, 60),
        ("at_t2", 60.0, 20),
        ("just_above_t2", 60.0 + EPS, 20),  # No jump.
        ("third_segment", 62.0, 14),  # 200 - 3 * 62.
        ("at_q_min", 65.0, 5),
        ("huge", 1e6, 5),
    )
    def test_monotone_values(self, std, expected):
        self.assertEqual(tables.plm(std, "monotone"), expected)

    def test_monotone_c_makes_t2_continuous(self):
        self.assertEqual(tables.monotone_c(tables.PAPER_PARAMS), 200.0)

    def test_paper_jumps_at_t2_and_monotone_never_increases(self):
        std = np.linspace(0, 100, 100001)
        paper = tables.plm(std)
        monotone = tables.plm(std, "monotone")
        self.assertGreater(np.diff(paper).max(), 30)
        self.assertLessEqual(np.diff(monotone).max(), 0)
        # They differ only on (T2, (c - Qmin) / k3].
        differ = std[paper != monotone]
        self.assertGreater(differ.min(), 60.0)
        self.assertLessEqual(differ.max(), 235.0 / 3.0)

    @parameterized.named_parameters(
        ("scalar", ()), ("table", (8, 8)), ("batch", (2, 8, 8))
    )
    def test_integer_in_range_and_shape_preserved(self, shape):
        rng = np.random.default_rng(0)
        std = rng.exponential(30.0, shape)
        for variant in tables.PLM_VARIANTS:
            q = tables.plm(std, variant)
            self.assertEqual(q.shape, shape)
            self.assertEqual(q.dtype, np.int32)
            self.assertAllInRange(q, 1, 255)

    def test_clipping(self):
        # a above 255 clips to 255; q_min below 1 clips to 1.
        self.assertEqual(tables.plm(0.0, a=400.0), 255)
        self.assertEqual(tables.plm(1e6, q_min=-10.0), 1)
        self.assertEqual(tables.plm(1e6, q_min=0.4), 1)

    def test_every_parameter_overridable(self):
        self.assertEqual(tables.plm(0.0, a=100.0), 100)
        self.assertEqual(tables.plm(30.0, b=90.0), 60)
        self.assertEqual(tables.plm(70.0, c=250.0), 40)
        self.assertEqual(tables.plm(15.0, t1=10.0), 65)
        self.assertEqual(tables.plm(50.0, t2=40.0), 90)
        self.assertEqual(tables.plm(10.0, k1=1.0), 245)
        self.assertEqual(tables.plm(30.0, k2=2.0), 20)
        self.assertEqual(tables.plm(70.0, k3=2.0), 100)
        self.assertEqual(tables.plm(1e6, q_min=9.0), 9)
        # Monotone follows b, k2, k3 and t2.
        self.assertEqual(
            tables.plm(61.0, "monotone", b=90.0, t2=60.0, k3=4.0), 26
        )

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "variant"):
            tables.plm(1.0, "jagged")
        with self.assertRaisesRegex(ValueError, "unknown"):
            tables.plm(1.0, T1=3.0)
        with self.assertRaisesRegex(ValueError, "derives c"):
            tables.plm(1.0, "monotone", c=200.0)
        with self.assertRaisesRegex(ValueError, "non-negative"):
            tables.plm([-1.0])
        with self.assertRaisesRegex(ValueError, "non-negative"):
            tables.plm([np.nan])
        with self.assertRaisesRegex(ValueError, "t1 <= t2"):
            tables.plm(1.0, t1=70.0)


class ScalingTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("q0_clamped", 0, 5000),
        ("q1", 1, 5000),
        ("q10", 10, 500),
        ("q49", 49, 102),
        ("q50", 50, 100),
        ("q75", 75, 50),
        ("q100", 100, 0),
        ("q101_clamped", 101, 0),
    )
    def test_ijg_scale_factor(self, quality, expected):
        self.assertEqual(tables.ijg_scale_factor(quality), expected)

    def test_scaling(self):
        table = np.arange(1, 65).reshape(8, 8) * 4 - 3  # 1..253
        self.assertAllEqual(tables.scale_qtable(table, 50), table)
        self.assertAllEqual(tables.scale_qtable(table, 100), np.ones((8, 8)))
        # (t * 500 + 50) // 100 = 5t (integer), clipped to 255.
        self.assertAllEqual(
            tables.scale_qtable(table, 10), np.minimum(table * 5, 255)
        )
        # q=75: (t * 50 + 50) // 100, at least 1.
        self.assertAllEqual(
            tables.scale_qtable(table, 75),
            np.maximum((table * 50 + 50) // 100, 1),
        )

    @parameterized.parameters(1, 5, 10, 25, 49, 50, 51, 75, 90, 95, 99, 100)
    def test_standard_tables_equal_what_pillow_writes(self, quality):
        buffer = io.BytesIO()
        Image.fromarray(testing_utils.random_image()).save(
            buffer, "JPEG", quality=quality
        )
        luma, chroma = tables.standard_qtables(quality)
        with Image.open(io.BytesIO(buffer.getvalue())) as image:
            # Pillow reports tables in natural (row-major) order.
            written = image.quantization
        self.assertAllEqual(np.reshape(written[0], (8, 8)), luma)
        self.assertAllEqual(np.reshape(written[1], (8, 8)), chroma)
        # Natural, not zigzag: the same as the DQT segments say.
        dqt = codec.read_qtables(buffer.getvalue())
        self.assertAllEqual(dqt[0], luma)
        self.assertAllEqual(dqt[1], chroma)

    @parameterized.parameters(10, 50, 95)
    def test_standard_tables_equal_what_tf_writes(self, quality):
        jpeg = tf.io.encode_jpeg(testing_utils.random_image(), quality=quality)
        dqt = codec.read_qtables(jpeg.numpy())
        luma, chroma = tables.standard_qtables(quality)
        self.assertAllEqual(dqt[0], luma)
        self.assertAllEqual(dqt[1], chroma)

    def test_validate_rejects_bad_tables(self):
        for bad in (np.zeros((8, 8)), np.full((8, 8), 256), np.ones(63)):
            with self.assertRaises(ValueError):
                tables.validate_qtable(bad)
        with self.assertRaisesRegex(ValueError, "integers"):
            tables.validate_qtable(np.full((8, 8), 1.5))

    @parameterized.named_parameters(
        ("string", "x", "must be integers, got 'x'"),
        ("none", None, "must be integers, got None"),
        ("bool", True, "must be integers, got True"),
        ("list", [1], "8 rows of 8"),
        ("nan", float("nan"), "must be integers, got nan"),
        ("inf", float("inf"), "must be integers, got inf"),
        ("huge", 2**70, r"must be in \[1, 255\]"),
    )
    def test_validate_gives_one_line_for_any_entry(self, entry, message):
        # As a JSON tables file may hold them: lists of Python values.
        rows = [[16] * 8 for _ in range(8)]
        rows[2][5] = entry
        with self.assertRaisesRegex(ValueError, message) as e:
            tables.validate_qtable(rows)
        self.assertNotIn("\n", str(e.exception))


class TableFilesTest(tf.test.TestCase):
    def tables(self):
        luma = tables.plm(np.linspace(0, 100, 64).reshape(8, 8))
        return luma, tables.STANDARD_CHROMA_QTABLE

    def test_json_round_trip(self):
        luma, chroma = self.tables()
        path = os.path.join(self.create_tempdir().full_path, "t.json")
        tables.save_json(path, luma, chroma, {"variant": "paper"})
        got_luma, got_chroma = tables.load_json(path)
        self.assertAllEqual(got_luma, luma)
        self.assertAllEqual(got_chroma, chroma)

    def test_bad_files_give_one_line_naming_the_file(self):
        luma, chroma = self.tables()
        document = json.loads(tables.to_json(luma, chroma))
        document["chroma"][7][7] = "99"
        cases = {
            "{luma: ": r"not JSON: Expecting property name .* \(char 1\)",
            "": "not JSON",
            "[]": "not a deepn_jpeg.qtables/1 document",
            json.dumps(document): "chroma: qtable entries must be integers",
            json.dumps({**document, "luma": 7}): "luma: a qtable has 64",
            json.dumps({k: document[k] for k in ("format", "luma")}): (
                "no chroma table"
            ),
        }
        folder = self.create_tempdir().full_path
        for i, (text, problem) in enumerate(cases.items()):
            path = os.path.join(folder, f"{i}.json")
            with open(path, "w") as f:
                f.write(text)
            with self.subTest(problem):
                with self.assertRaisesRegex(
                    ValueError, f"^{path}: not a valid tables file \\({problem}"
                ) as e:
                    tables.load_json(path)
                self.assertNotIn("\n", str(e.exception))
        binary = os.path.join(folder, "binary.json")
        with open(binary, "wb") as f:
            f.write(b"\xff\xfe{")
        with self.assertRaisesRegex(ValueError, "binary.json: .*not UTF-8"):
            tables.load_json(binary)
        # A device is not read; a huge file is not read whole.
        with self.assertRaisesRegex(
            ValueError, "/dev/zero: .*not a regular file: a character device"
        ):
            tables.load_json("/dev/zero")
        huge = os.path.join(folder, "huge.json")
        with open(huge, "w") as f:
            f.write(" " * (1 << 20) + "{}")
        with self.assertRaisesRegex(ValueError, "huge.json: .*file too large"):
            tables.load_json(huge)
        with self.assertRaisesRegex(FileNotFoundError, "missing.json"):
            tables.load_json(os.path.join(folder, "missing.json"))

    def test_qtables_filename(self):
        self.assertEqual(
            tables.qtables_filename("paper", "json"), "qtables_paper.json"
        )
        self.assertEqual(
            tables.qtables_filename("fit_b2", "txt"), "qtables_fit_b2.txt"
        )

    def test_writers_replace_files_whole(self):
        luma, chroma = self.tables()
        folder = self.create_tempdir().full_path
        json_path = os.path.join(folder, "t.json")
        txt_path = os.path.join(folder, "t.txt")
        for _ in range(2):  # The second write replaces the first.
            tables.save_json(json_path, luma, chroma)
            tables.write_cjpeg_qtables(txt_path, [luma, chroma])
        self.assertCountEqual(os.listdir(folder), ["t.json", "t.txt"])
        # A failed write (invalid table) leaves the old file as it was.
        with open(json_path) as f:
            before = f.read()
        with self.assertRaises(ValueError):
            tables.save_json(json_path, np.zeros((8, 8)), chroma)
        with self.assertRaises(ValueError):
            tables.write_cjpeg_qtables(txt_path, [np.zeros((8, 8))])
        with open(json_path) as f:
            self.assertEqual(f.read(), before)
        with open(txt_path) as f:
            self.assertAllEqual(tables.read_cjpeg_qtables(f.read())[0], luma)
        self.assertCountEqual(os.listdir(folder), ["t.json", "t.txt"])

    def test_plm_params_flags_are_prefixed(self):
        # experiments.common names the flags --plm_a, ...; not a field.
        self.assertEqual(tables.PlmParams.FLAG_PREFIX, "plm_")
        self.assertNotIn(
            "FLAG_PREFIX",
            [f.name for f in dataclasses.fields(tables.PlmParams)],
        )

    def test_cjpeg_qtables_round_trip(self):
        luma, chroma = self.tables()
        path = os.path.join(self.create_tempdir().full_path, "t.txt")
        tables.write_cjpeg_qtables(path, [luma, chroma], "two\nlines")
        with open(path) as f:
            text = f.read()
        self.assertStartsWith(text, "# two\n# lines\n")
        # 8 rows of 8 numbers, natural order: the first row is the first 8.
        rows = [line for line in text.splitlines() if not line.startswith("#")]
        self.assertLen(rows, 16)
        self.assertEqual([int(x) for x in rows[0].split()], list(luma[0]))
        got = tables.read_cjpeg_qtables(text)
        self.assertLen(got, 2)
        self.assertAllEqual(got[0], luma)
        self.assertAllEqual(got[1], chroma)

    def test_read_cjpeg_qtables_free_format(self):
        # libjpeg's format: any whitespace, comments to end of line.
        values = list(range(1, 65))
        text = "# c\n" + " ".join(map(str, values[:10])) + "  # x\n"
        text += "\t".join(map(str, values[10:])) + "\n"
        (table,) = tables.read_cjpeg_qtables(text)
        self.assertAllEqual(table.ravel(), values)
        with self.assertRaisesRegex(ValueError, "64 numbers"):
            tables.read_cjpeg_qtables("1 2 3")

    def test_format_qtable(self):
        text = tables.format_qtable(tables.STANDARD_LUMA_QTABLE)
        self.assertLen(text.splitlines(), 8)
        self.assertEqual(text.splitlines()[0].split()[:3], ["16", "11", "10"])


class TableSetTest(tf.test.TestCase, parameterized.TestCase):
    def tables(self):
        luma = tables.plm(np.linspace(0, 100, 64).reshape(8, 8))
        return luma, tables.STANDARD_CHROMA_QTABLE

    @parameterized.named_parameters(
        ("nothing_fixed", None, None),
        ("subsampling", "4:4:4", None),
        ("encoder", None, "mozjpeg"),
        ("both", "4:2:2", "libjpeg"),
    )
    def test_json_round_trip_with_and_without_settings(
        self, subsampling, encoder
    ):
        luma, chroma = self.tables()
        text = tables.to_json(
            luma, chroma, {"a": 1}, subsampling=subsampling, encoder=encoder
        )
        document = json.loads(text)
        # Absent keys, not nulls: "not fixed" files stay as they were.
        self.assertEqual("subsampling" in document, subsampling is not None)
        self.assertEqual("encoder" in document, encoder is not None)
        got = tables.tableset_from_json(text)
        self.assertAllEqual(got.luma, luma)
        self.assertAllEqual(got.chroma, chroma)
        self.assertEqual((got.subsampling, got.encoder), (subsampling, encoder))
        path = os.path.join(self.create_tempdir().full_path, "t.json")
        tables.save_json(
            path, luma, chroma, subsampling=subsampling, encoder=encoder
        )
        loaded = tables.load_tableset(path)
        self.assertEqual(
            (loaded.subsampling, loaded.encoder), (subsampling, encoder)
        )
        self.assertAllEqual(loaded.luma, luma)
        # The pair readers still give the tables alone.
        for pair in (tables.from_json(text), tables.load_json(path)):
            self.assertLen(pair, 2)
            self.assertAllEqual(pair[0], luma)
            self.assertAllEqual(pair[1], chroma)

    def test_files_without_settings_keep_their_bytes(self):
        luma, chroma = self.tables()
        document = json.loads(tables.to_json(luma, chroma, {"v": "paper"}))
        self.assertEqual(
            list(document), ["format", "order", "luma", "chroma", "metadata"]
        )
        null = json.dumps({**document, "encoder": None})
        self.assertIsNone(tables.tableset_from_json(null).encoder)

    def test_tableset_checks_and_freezes_its_tables(self):
        luma, chroma = self.tables()
        tableset = tables.TableSet(luma.tolist(), chroma, "4:4:4")
        self.assertEqual(tableset.luma.dtype, np.int32)
        self.assertEqual(tableset.luma.shape, (8, 8))
        with self.assertRaises(ValueError):
            tableset.luma[0, 0] = 1
        with self.assertRaises(dataclasses.FrozenInstanceError):
            tableset.encoder = "mozjpeg"
        with self.assertRaisesRegex(ValueError, r"^chroma: .*\[1, 255\]"):
            tables.TableSet(luma, np.zeros((8, 8)))
        with self.assertRaisesRegex(ValueError, "encoder must be a string"):
            tables.TableSet(luma, chroma, encoder=3)

    def test_bad_setting_gives_one_line_naming_the_file(self):
        luma, chroma = self.tables()
        document = json.loads(tables.to_json(luma, chroma))
        path = os.path.join(self.create_tempdir().full_path, "t.json")
        with open(path, "w") as f:
            json.dump({**document, "subsampling": 420}, f)
        with self.assertRaisesRegex(
            ValueError,
            f"^{path}: not a valid tables file \\(subsampling must be a "
            "string or null: 420\\)$",
        ):
            tables.load_tableset(path)


class ShippedTablesTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.luma, self.chroma = tables.standard_qtables(30)
        self.folder = self.create_tempdir().full_path
        tables.save_json(
            os.path.join(self.folder, "lite.json"),
            self.luma,
            self.chroma,
            subsampling="4:4:4",
            encoder="mozjpeg",
        )
        tables.save_json(
            os.path.join(self.folder, "b-set_2.json"), self.luma, self.chroma
        )
        with open(os.path.join(self.folder, "notes.txt"), "w") as f:
            f.write("not a table set")
        # The package's shipped tables folder, as a temporary one.
        patcher = mock.patch.object(
            tables_io, "_shipped_dir", return_value=self.folder
        )
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_lists_and_loads_shipped_sets_by_name(self):
        self.assertEqual(tables.shipped_names(), ("b-set_2", "lite"))
        tableset = tables.load_tableset("lite")
        self.assertAllEqual(tableset.luma, self.luma)
        self.assertAllEqual(tableset.chroma, self.chroma)
        self.assertEqual(
            (tableset.subsampling, tableset.encoder), ("4:4:4", "mozjpeg")
        )
        self.assertEqual(
            tables.tableset_file("lite"), os.path.join(self.folder, "lite.json")
        )
        luma, _ = tables.load_json("b-set_2")
        self.assertAllEqual(luma, self.luma)

    def test_an_existing_path_wins_over_a_name(self):
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        here = self.create_tempdir().full_path
        os.chdir(here)
        tables.save_json("lite", *tables.standard_qtables(90))
        self.assertEqual(tables.tableset_file("lite"), "lite")
        self.assertAllEqual(
            tables.load_tableset("lite").luma, tables.standard_qtables(90)[0]
        )

    def test_unknown_name_is_one_line_listing_the_shipped_sets(self):
        with self.assertRaisesRegex(
            FileNotFoundError,
            r"^efficientnet_lite0: no such tables file, and no shipped table "
            r"set of that name \(shipped: b-set_2, lite\)$",
        ):
            tables.load_tableset("efficientnet_lite0")

    def test_paths_are_never_looked_up_as_names(self):
        for path in ("lite.json", os.path.join("missing", "lite")):
            with self.subTest(path):
                self.assertEqual(tables.tableset_file(path), path)
                with self.assertRaisesRegex(FileNotFoundError, "No such file"):
                    tables.load_tableset(path)


class PackageTablesTest(tf.test.TestCase):
    def test_the_shipped_folder_is_the_package_data_folder(self):
        folder = tables_io._shipped_dir()
        self.assertTrue(os.path.isfile(os.path.join(folder, "__init__.py")))
        self.assertEqual(
            os.path.dirname(folder), os.path.dirname(tables.__file__)
        )
        for name in tables.shipped_names():
            with self.subTest(name):
                tableset = tables.load_tableset(name)
                for value, known in (
                    (tableset.subsampling, codec.SUBSAMPLINGS),
                    (tableset.encoder, codec.ENCODERS),
                ):
                    self.assertIn(value, (None, *known))

    def test_efficientnet_lite0_tables_load_and_write_by_name(self):
        self.assertIn("efficientnet_lite0", tables.shipped_names())
        shipped = tables.load_tableset("efficientnet_lite0")
        self.assertEqual(shipped.subsampling, "4:2:0")
        image = testing_utils.random_image(seed=1)
        written = codec.encode(image, tables="efficientnet_lite0", scale=30)
        read = codec.read_qtables(written)
        self.assertAllEqual(read[0], tables.scale_qtable(shipped.luma, 30))
        self.assertAllEqual(read[1], tables.scale_qtable(shipped.chroma, 30))
        self.assertEqual(tf.io.decode_jpeg(written).shape, image.shape)


def hostile_tables_file(folder, kind):
    """A tables file under 1 MiB that used to crash the reader."""
    luma = np.ones((8, 8), int).tolist()
    document = {
        "format": "deepn_jpeg.qtables/1",
        "order": "natural",
        "luma": luma,
        "chroma": luma,
    }
    text = json.dumps(document)
    if kind == "deep":  # Arrays nested 3000 deep, as the luma table.
        text = text.replace(json.dumps(luma), "[" * 3000 + "]" * 3000, 1)
    elif kind == "deep_document":
        text = "[" * 3000 + "]" * 3000
    elif kind == "huge_integer":  # 400 digits: beyond a float64.
        text = text.replace("[1, 1", "[1" + "0" * 399 + ", 1", 1)
    elif kind == "negative_huge_integer":
        text = text.replace("[1, 1", "[-1" + "0" * 399 + ", 1", 1)
    path = os.path.join(folder, f"qtables_{kind}.json")
    with open(path, "w") as f:
        f.write(text)
    assert os.path.getsize(path) < 1 << 20
    return path


class HostileTablesFileTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(
        "deep", "deep_document", "huge_integer", "negative_huge_integer"
    )
    def test_is_one_line_not_a_valid_tables_file(self, kind):
        path = hostile_tables_file(self.create_tempdir().full_path, kind)
        readers = (
            tables.load_tableset,
            lambda p: tableset_files.load_sets([p]),
            lambda p: codec.encode(testing_utils.random_image(), tables=p),
        )
        for read in readers:
            with self.assertRaisesRegex(
                ValueError, f"{path}: not a valid tables file"
            ) as e:
                read(path)
            self.assertNotIn("\n", str(e.exception))

    def test_fifo_is_not_a_regular_file_and_is_never_opened(self):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "qtables_x.json")
        os.mkfifo(path)
        # A reader that opened the FIFO would block until this writer came.
        with testing_utils.fifo_unblocked_after(path, 20):
            for read in (
                tables.load_tableset,
                tableset_files.tables_files,
                tableset_files.load_sets,
            ):
                with self.assertRaisesRegex(
                    ValueError,
                    f"^{path}: not a valid tables file \\(not a regular "
                    "file: a FIFO\\)$",
                ):
                    read(path)
        self.assertEqual(
            tables.tables_file_problem(path),
            f"{path}: not a valid tables file (not a regular file: a FIFO)",
        )
        self.assertEndsWith(
            tables.tables_file_problem(folder), "(not a regular file: a folder)"
        )
        good = hostile_tables_file(folder, "good")
        self.assertIsNone(tables.tables_file_problem(good))
        self.assertIsNone(tables.tables_file_problem(folder + "/missing"))
