"""A reader of PyTorch state-dict checkpoints that needs no PyTorch.

`torch.save` writes a state dict in one of two formats: the legacy one
(before torch 1.6, `_use_new_zipfile_serialization=False`: a stream of
pickles followed by the raw bytes of every storage) and the zip archive of
torch >= 1.6 (`<root>/data.pkl` plus one file per storage). Both pickle the
tensors as calls of `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)` with storages as persistent ids. `read_torch_checkpoint`
unpickles only those few classes, so a checkpoint cannot run code, and cuts
each tensor out of its storage bytes with numpy.

Used for the EfficientNet-Lite0 ImageNet checkpoint (`efficientnet_lite`),
which is in the legacy format; installing PyTorch for one file read would
add about 750 MB to every install (BUILD.md).

Not supported: big-endian files, GPU-only storage types, quantized or sparse
tensors, and pickled objects other than a state dict of tensors.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

__all__ = ["read_torch_checkpoint"]

# Legacy `torch.save` (before 1.6, `_use_new_zipfile_serialization=False`)
# starts with this pickled magic number.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for `torch.FloatStorage` etc. in the pickle."""

    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


_Storage = collections.namedtuple("_Storage", ["key", "dtype", "offset"])
_Tensor = collections.namedtuple(
    "_Tensor", ["storage", "offset", "shape", "strides"]
)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args):
    """Stands for `torch._utils._rebuild_tensor(_v2)`: bytes come later."""
    del unused_args  # requires_grad, backward hooks, metadata.
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused_args):
    """Stands for `torch._utils._rebuild_parameter`."""
    del unused_args
    return data


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickles a state dict, allowing only the classes it needs.

    Storages are pickled as persistent ids; tensors as calls of
    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    """

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str) -> Any:
        """Resolves only state-dict classes; anything else is refused."""
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        """Storage references: `('storage', type, key, location, ...)`."""
        if not isinstance(pid, tuple) or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        offset = 0
        # Legacy format: (..., location, numel, view_metadata); a view shares
        # the bytes of its root storage, from an element offset on.
        if len(pid) > 5 and pid[5] is not None:
            _, offset, _ = pid[5]
        return _Storage(key, storage_type.dtype, int(offset))


def _materialize(
    tensors: Mapping[str, Any], buffers: Mapping[str, bytes]
) -> dict[str, np.ndarray]:
    """Cuts each tensor out of its storage bytes."""
    arrays = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, _Tensor):
            raise ValueError(f"{name}: not a tensor ({type(tensor).__name__})")
        storage = tensor.storage
        flat = np.frombuffer(buffers[storage.key], dtype=storage.dtype)
        start = storage.offset + tensor.offset
        shape, strides = tensor.shape, tensor.strides
        last = start + sum(
            (n - 1) * s for n, s in zip(shape, strides, strict=True)
        )
        if min(shape, default=1) > 0 and last >= flat.size:
            raise ValueError(f"{name}: tensor runs past its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[start:],
            shape=shape,
            strides=[s * flat.itemsize for s in strides],
            writeable=False,
        )
        arrays[name] = np.array(view, dtype=storage.dtype.newbyteorder("="))
    return arrays


def _read_legacy(f: BinaryIO) -> dict[str, np.ndarray]:
    """Legacy format: 3 header pickles, the state dict, keys, raw storages."""
    if pickle.load(f) != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch checkpoint (bad magic number)")
    if pickle.load(f) != _LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy PyTorch protocol version")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        raise ValueError("big-endian PyTorch checkpoints are not supported")
    tensors = _CheckpointUnpickler(f).load()
    keys = pickle.load(f)  # Storage keys, in the order their bytes follow.
    dtypes = {}
    for tensor in tensors.values():
        if isinstance(tensor, _Tensor):
            dtypes[tensor.storage.key] = tensor.storage.dtype
    buffers = {}
    for key in keys:
        # Each storage: int64 element count, then the raw elements.
        numel = int(np.frombuffer(f.read(8), "<i8")[0])
        nbytes = numel * dtypes[str(key)].itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise ValueError("truncated PyTorch checkpoint")
        buffers[str(key)] = data
    return _materialize(tensors, buffers)


def _read_zip(path: str) -> dict[str, np.ndarray]:
    """Zip format (torch >= 1.6): `<root>/data.pkl` + `<root>/data/<key>`."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path}: no single data.pkl in the archive")
        root = pickles[0][: -len("data.pkl")]
        byteorder = f"{root}byteorder"
        if byteorder in names and archive.read(byteorder) != b"little":
            raise ValueError("big-endian PyTorch checkpoints are not supported")
        unpickler = _CheckpointUnpickler(io.BytesIO(archive.read(pickles[0])))
        tensors = unpickler.load()
        keys = {
            t.storage.key for t in tensors.values() if isinstance(t, _Tensor)
        }
        buffers = {k: archive.read(f"{root}data/{k}") for k in keys}
    return _materialize(tensors, buffers)


def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict of tensors without importing PyTorch.

    Supports both `torch.save` formats: the legacy one (a stream of pickles
    followed by the raw storage bytes, used by the EfficientNet-Lite0
    checkpoint) and the zip archive of torch >= 1.6. Only the classes a state
    dict needs are unpickled (`collections.OrderedDict`, tensor rebuilds,
    storage types); anything else raises `pickle.UnpicklingError`.

    Args:
      path: the `.pth` file.

    Returns:
      Parameter name -> array (PyTorch layout, native byte order), in the
      file's order.

    Raises:
      ValueError: not a PyTorch state dict of CPU tensors of a numpy dtype.
      pickle.UnpicklingError: the file pickles other objects.
    """
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as f:
        return _read_legacy(f)
