"""VGG16 transfer learning on a folder of images, the first 15 layers frozen.

The classic recipe: ImageNet VGG16 without its top, `layers[:15]` (blocks 1-4)
frozen so only block 5 and the new head train, head Flatten -> Dense(1024,
relu) -> Dense(classes, softmax), Adam at a low learning rate, light
augmentation. Data: one subfolder per class (`<path>/<class>/<image>`).

Run (online; Keras downloads the ImageNet weights once into ~/.keras/models/):

    sft-train --config=configs/vgg16_image_folder.py --workdir=/tmp/vgg16 \\
        --config.data.path=/path/to/images

Offline, pass the weights file downloaded elsewhere:

    --config.model.weights=/path/to/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5

Expected: accuracy depends on your data; not measured here (no ImageNet
weights offline). Smoke run, offline, on the digits data with random
weights (checks the wiring, not accuracy; 2 epochs, ~2.5 min on 2 CPU cores):

    sft-train --config=configs/vgg16_image_folder.py:runlocal --workdir=/tmp/vgg16_smoke
"""

from sft_keras.config import get_default_config


def get_config(arg=None):
    config = get_default_config()
    config.data.source = "image_folder"
    config.data.image_size = (224, 224)
    config.data.augment.flip = "horizontal"
    config.data.augment.rotation = 0.05
    config.data.augment.zoom = 0.1
    config.model.backbone = "vgg16"
    config.model.weights = "imagenet"
    config.model.freeze.until = 15  # Freeze layers[:15]: input + blocks 1-4.
    config.model.head.pooling = "flatten"
    config.model.head.hidden_units = (1024,)
    config.model.head.activation = "relu"
    config.model.head.dropout = 0.5
    config.train.epochs = 20
    config.train.batch_size = 32
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-4
    config.train.early_stopping_patience = 4
    config.train.monitor = "val_accuracy"
    if arg == "runlocal":
        config.data.source = "digits"
        config.data.image_size = (32, 32)
        config.model.weights = None
        config.train.epochs = 2
    return config
