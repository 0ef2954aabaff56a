"""ResNet50 regression: predict a number per image from a CSV manifest.

ImageNet ResNet50 without its top, stages 1-4 frozen (`layers[:143]`, up to
`conv5_block1_1_conv`), BatchNorm kept in inference mode, head
GlobalAveragePooling -> Dense(256, relu) -> Dense(1, linear), MSE loss, MAE
metric. Data: a CSV with a header, an image path column and a numeric target
column (paths relative to the CSV's folder), e.g.

    path,age
    faces/0001.jpg,34

Run (online; Keras downloads the ImageNet weights once):

    sft-train --config=configs/resnet50_regression.py --workdir=/tmp/resnet50_reg \\
        --config.data.path=/path/to/train.csv --config.data.label_column=age

Offline: --config.model.weights=/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5

Expected: depends on your data; not measured here (no ImageNet weights
offline). Smoke run, offline: `:runlocal` regresses the digit value (0-9) of
scikit-learn's digits from 32x32 pixels with random weights, 2 epochs.
"""

from sft_keras.config import get_default_config


def get_config(arg=None):
    config = get_default_config()
    config.task = "regression"
    config.data.source = "csv"
    config.data.label_column = "target"
    config.data.image_size = (224, 224)
    config.model.backbone = "resnet50"
    config.model.weights = "imagenet"
    config.model.freeze.until = 143  # Layers before conv5_block1_1_conv: stages 1-4.
    config.model.freeze.batchnorm = True
    config.model.head.pooling = "avg"
    config.model.head.hidden_units = (256,)
    config.train.optimizer = "adamw"
    config.train.learning_rate = 1e-4
    config.train.weight_decay = 1e-4
    config.train.epochs = 15
    config.train.monitor = "val_mae"
    if arg == "runlocal":
        config.data.source = "digits"
        config.data.image_size = (32, 32)
        config.model.weights = None
        config.train.epochs = 2
    return config
