"""Tests for compression_helps.torch_checkpoint."""

import collections
import io
import os
import pickle
import shlex
import sys
import types
import zipfile
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from compression_helps.models import (
    efficientnet_weights,
    torch_checkpoint,
)
from tests import testing_utils

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_TYPES = {np.float32: "FloatStorage", np.int64: "LongStorage"}


class _Tensor:
    """Pickles as PyTorch pickles a tensor: a `_rebuild_tensor_v2` call."""

    def __init__(self, storage, offset, shape, strides):
        self.args = (storage, offset, shape, strides)

    def __reduce_ex__(self, protocol):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (*self.args, False, collections.OrderedDict())


def _fake_torch():
    """`torch` modules with just the names a state-dict pickle refers to."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in STORAGE_TYPES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    return mock.patch.dict(sys.modules, {"torch": torch, "torch._utils": utils})


def write_checkpoint(
    path, storages, tensors, zip_format, views=None, byteorder="little"
):
    """Writes a state dict as `torch.save` does, without PyTorch.

    Args:
      path: the file.
      storages: key -> flat little-endian array (a storage's elements).
      tensors: name -> (storage key, element offset, shape, strides).
      zip_format: the torch >= 1.6 zip archive, else the legacy format.
      views: legacy only: view key -> (root key, element offset), a
        storage that shares its root's bytes.
      byteorder: zip only: what the archive says its byte order is.
    """
    views = views or {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, str) or not obj.startswith("storage:"):
                return None
            key = obj.split(":", 1)[1]
            root, offset = views.get(key, (key, None))
            array = storages[root]
            pid = ("storage", storage_type(array), root, "cpu", array.size)
            if zip_format:
                return pid
            view = None if offset is None else (key, offset, 1)
            return (*pid, view)

    def storage_type(array):
        return getattr(sys.modules["torch"], STORAGE_TYPES[array.dtype.type])

    state = collections.OrderedDict(
        (name, _Tensor(f"storage:{key}", offset, shape, strides))
        for name, (key, offset, shape, strides) in tensors.items()
    )
    with _fake_torch():
        data = io.BytesIO()
        Pickler(data, protocol=2).dump(state)
    if zip_format:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", data.getvalue())
            archive.writestr("archive/byteorder", byteorder)
            for key, array in storages.items():
                archive.writestr(f"archive/data/{key}", array.tobytes())
        return
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(data.getvalue())
        pickle.dump(sorted(storages), f, protocol=2)
        for key in sorted(storages):
            f.write(np.int64(storages[key].size).tobytes())
            f.write(storages[key].tobytes())


class _RunsCode:
    """Unpickles as `os.system("touch <marker>")`: must never be called."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class ReaderTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("legacy", False), ("zip", True))
    def test_reads_strided_and_offset_tensors_of_a_shared_storage(
        self, zip_format
    ):
        base = np.arange(24, dtype=np.float32).reshape(4, 6)
        storages = {
            "0": base.ravel(),
            "1": np.array([3, -1, 5], np.int64),
        }
        tensors = {
            "transposed": ("0", 0, (6, 4), (1, 6)),
            "sliced": ("0", 8, (2, 4), (6, 1)),
            "long": ("1", 1, (2,), (1,)),
            "scalar": ("1", 2, (), ()),
            "empty": ("0", 0, (0, 3), (3, 1)),
        }
        path = self.create_tempfile().full_path
        write_checkpoint(path, storages, tensors, zip_format)
        got = torch_checkpoint.read_torch_checkpoint(path)
        self.assertEqual(list(got), list(tensors))
        expected = {
            "transposed": base.T,
            "sliced": base[1:3, 2:],
            "long": np.array([-1, 5], np.int64),
            "scalar": np.array(5, np.int64),
            "empty": np.zeros((0, 3), np.float32),
        }
        for name, array in expected.items():
            self.assertEqual(got[name].dtype, array.dtype, name)
            self.assertEqual(got[name].shape, array.shape, name)
            self.assertAllEqual(got[name], array, msg=name)
            self.assertTrue(got[name].flags.writeable, name)  # A copy.

    def test_legacy_view_starts_at_its_offset_in_the_root_storage(self):
        root = np.arange(10, dtype=np.float32)
        path = self.create_tempfile().full_path
        write_checkpoint(
            path,
            {"0": root},
            {"tail": ("view", 1, (3,), (1,))},
            zip_format=False,
            views={"view": ("0", 4)},
        )
        got = torch_checkpoint.read_torch_checkpoint(path)
        self.assertAllEqual(got["tail"], root[5:8])

    @parameterized.named_parameters(("legacy", False), ("zip", True))
    def test_tensor_past_its_storage_is_an_error(self, zip_format):
        path = self.create_tempfile().full_path
        storages = {"0": np.zeros(4, np.float32)}
        write_checkpoint(
            path, storages, {"w": ("0", 2, (3,), (1,))}, zip_format
        )
        with self.assertRaisesRegex(ValueError, "w: tensor runs past"):
            torch_checkpoint.read_torch_checkpoint(path)

    def test_truncated_legacy_file_is_an_error(self):
        path = self.create_tempfile().full_path
        storages = {"0": np.zeros(100, np.float32)}
        write_checkpoint(path, storages, {"w": ("0", 0, (100,), (1,))}, False)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 10)
        with self.assertRaisesRegex(ValueError, f"{path}: .*truncated"):
            torch_checkpoint.read_torch_checkpoint(path)

    def test_refuses_pickled_objects_other_than_tensors(self):
        path = self.create_tempfile().full_path
        with open(path, "wb") as f:
            for header in (
                LEGACY_MAGIC,
                1001,
                {"little_endian": True},
                {"x": os.getcwd},  # Would run code if unpickled freely.
            ):
                pickle.dump(header, f, protocol=2)
        with self.assertRaisesRegex(ValueError, "refused.*posix.getcwd"):
            torch_checkpoint.read_torch_checkpoint(path)

    @parameterized.named_parameters(
        ("magic_number", 0),
        ("protocol_version", 1),
        ("sys_info", 2),
        ("state_dict", 3),
        ("storage_keys", 4),
    )
    def test_no_record_of_a_legacy_file_runs_code(self, position):
        marker = os.path.join(self.create_tempdir().full_path, "ran")
        records = [LEGACY_MAGIC, 1001, {"little_endian": True}, {}, []]
        records[position] = _RunsCode(marker)
        path = self.create_tempfile().full_path
        with open(path, "wb") as f:
            for record in records:
                pickle.dump(record, f, protocol=2)
        with self.assertRaises(ValueError) as e:
            torch_checkpoint.read_torch_checkpoint(path)
        self.assertFalse(os.path.exists(marker))
        self._assert_one_line_naming(str(e.exception), path, "refused")

    def test_no_data_pickle_of_a_zip_runs_code(self):
        marker = os.path.join(self.create_tempdir().full_path, "ran")
        path = self.create_tempfile().full_path
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(
                "archive/data.pkl", pickle.dumps(_RunsCode(marker), protocol=2)
            )
        with self.assertRaises(ValueError) as e:
            torch_checkpoint.read_torch_checkpoint(path)
        self.assertFalse(os.path.exists(marker))
        self._assert_one_line_naming(str(e.exception), path, "refused")

    def _assert_one_line_naming(self, message, path, reason):
        self.assertNotIn("\n", message)
        self.assertStartsWith(message, f"{path}: ")
        self.assertIn(reason, message)

    @parameterized.named_parameters(
        ("negative_stride", ("0", 3, (2,), (-1,)), "bad stride"),
        ("negative_offset", ("0", -2, (4,), (1,)), "bad offset"),
        ("negative_size", ("0", 0, (-1,), (1,)), "bad size"),
        ("strides_mismatch", ("0", 0, (2, 2), (1,)), "2 sizes, 1 strides"),
        ("expanded_view", ("0", 0, (10**12,), (0,)), "more elements than"),
    )
    def test_tensors_outside_their_storage_are_refused(self, tensor, message):
        # Each would read memory outside the storage's bytes, or make a
        # terabyte array out of four floats.
        path = self.create_tempfile().full_path
        storages = {"0": np.zeros(4, np.float32)}
        write_checkpoint(path, storages, {"w": tensor}, zip_format=False)
        with self.assertRaisesRegex(ValueError, f"{path}: .*{message}"):
            torch_checkpoint.read_torch_checkpoint(path)

    def test_storage_claiming_more_bytes_than_the_file_is_truncated(self):
        path = self.create_tempfile().full_path
        storages = {"0": np.zeros(4, np.float32)}
        write_checkpoint(path, storages, {"w": ("0", 0, (4,), (1,))}, False)
        with open(path, "r+b") as f:
            f.seek(-(8 + 16), os.SEEK_END)  # The element count.
            f.write(np.int64(2**60).tobytes())
        with self.assertRaisesRegex(ValueError, f"{path}: .*truncated"):
            torch_checkpoint.read_torch_checkpoint(path)

    @parameterized.named_parameters(
        ("garbage", b"\x00\xff not a pickle at all"),
        ("empty", b""),
        ("nested_state_dict", pickle.dumps({"model": {"w": 1}})),
    )
    def test_other_files_are_one_line_errors_naming_the_file(self, data):
        path = self.create_tempfile().full_path
        with open(path, "wb") as f:
            f.write(data)
        with self.assertRaises(ValueError) as e:
            torch_checkpoint.read_torch_checkpoint(path)
        self._assert_one_line_naming(str(e.exception), path, "")

    def test_rejects_a_file_that_is_not_a_checkpoint(self):
        path = self.create_tempfile().full_path
        with open(path, "wb") as f:
            pickle.dump(1234, f)
        with self.assertRaisesRegex(ValueError, "magic"):
            torch_checkpoint.read_torch_checkpoint(path)

    def test_rejects_a_zip_without_one_data_pickle(self):
        path = self.create_tempfile().full_path
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/other.txt", "x")
        with self.assertRaisesRegex(ValueError, "no single data.pkl"):
            torch_checkpoint.read_torch_checkpoint(path)

    def test_rejects_big_endian_zip(self):
        path = self.create_tempfile().full_path
        storages = {"0": np.zeros(2, np.float32)}
        tensors = {"w": ("0", 0, (2,), (1,))}
        write_checkpoint(path, storages, tensors, True, byteorder="big")
        with self.assertRaisesRegex(ValueError, "big-endian"):
            torch_checkpoint.read_torch_checkpoint(path)


class RealCheckpointTest(tf.test.TestCase):
    def test_reads_the_checkpoint_keys_and_shapes(self):
        if not testing_utils.HAS_CHECKPOINT:
            self.skipTest(testing_utils.SKIP_NO_CHECKPOINT)
        state = torch_checkpoint.read_torch_checkpoint(
            efficientnet_weights.checkpoint_path()
        )
        self.assertLen(state, 296)
        expected = {
            "_conv_stem.weight": (32, 3, 3, 3),
            "_bn0.running_var": (32,),
            "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
            "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
            "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
            "_conv_head.weight": (1280, 320, 1, 1),
            "_fc.weight": (1000, 1280),
            "_fc.bias": (1000,),
        }
        for key, shape in expected.items():
            self.assertEqual(state[key].shape, shape, key)
            self.assertEqual(state[key].dtype, np.float32, key)
        # Variances: never negative (a few stem channels are dead, exactly 0).
        self.assertTrue(np.all(state["_bn0.running_var"] >= 0))
        self.assertGreater(np.mean(state["_bn0.running_var"] > 0), 0.8)

    def test_matches_torch_load(self):
        if not (testing_utils.HAS_CHECKPOINT and testing_utils.HAS_TORCH):
            self.skipTest(
                testing_utils.SKIP_NO_CHECKPOINT
                if testing_utils.HAS_TORCH
                else testing_utils.SKIP_NO_TORCH
            )
        import torch

        path = efficientnet_weights.checkpoint_path()
        state = torch_checkpoint.read_torch_checkpoint(path)
        reference = torch.load(path, map_location="cpu", weights_only=True)
        self.assertEqual(list(state), list(reference))
        for key, tensor in reference.items():
            self.assertAllEqual(state[key], tensor.numpy(), msg=key)

    def test_reads_what_torch_save_writes_in_both_formats(self):
        if not testing_utils.HAS_TORCH:
            self.skipTest(testing_utils.SKIP_NO_TORCH)
        import torch

        base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
        state = {
            "transposed": base.t(),  # Non-contiguous strides.
            "sliced": base[1:3, 2:],  # Offset into a shared storage.
            "long": torch.tensor([3, -1], dtype=torch.int64),
            "half": torch.ones(2, 3, dtype=torch.float16),
            "scalar": torch.tensor(7),
        }
        for zip_format in (False, True):
            path = self.create_tempfile().full_path
            torch.save(state, path, _use_new_zipfile_serialization=zip_format)
            got = torch_checkpoint.read_torch_checkpoint(path)
            for key, tensor in state.items():
                self.assertEqual(got[key].dtype, tensor.numpy().dtype)
                self.assertAllEqual(got[key], tensor.numpy(), msg=key)
