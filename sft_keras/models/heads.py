"""Dense heads that turn backbone features into task outputs."""

import keras

from sft_keras.errors import ConfigError


def add_head(features, task, num_classes, pooling="avg", hidden_units=(), activation="relu",
             dropout=0.0, l2=0.0):
    """Applies pooling, optional hidden Dense layers and the output layer.

    Args:
        features: a symbolic Keras tensor: a feature map `[batch, h, w, c]`
            (pooled by `pooling`) or a vector `[batch, c]` (used as is).
        task: `sft_keras.tasks.Task`. Decides the output units and activation.
        num_classes: int. Number of classes (ignored for binary and regression).
        pooling: str. `"avg"`, `"max"` or `"flatten"` for feature maps.
        hidden_units: sequence of int. One Dense layer per entry.
        activation: str. Activation of the hidden layers.
        dropout: float. Dropout rate before each Dense layer (0 disables).
        l2: float. L2 penalty on the kernels of the head's Dense layers
            (`model.head.l2`; 0 disables); it is added to the loss
            (`model.losses`).

    Returns:
        The output tensor. The output layer computes in float32 so that mixed
        precision keeps a numerically safe softmax/sigmoid.

    Example:

    >>> import keras
    >>> from sft_keras.tasks import get_task
    >>> x = keras.Input((7, 7, 512))
    >>> y = add_head(x, get_task("classification"), 10, pooling="flatten",
    ...              hidden_units=(1024,))
    >>> [layer.name for layer in keras.Model(x, y).layers[1:]]
    ['flatten', 'head_dense_0', 'head_output']
    """
    regularizer = keras.regularizers.L2(l2) if l2 else None
    x = features
    if len(x.shape) == 4:
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        elif pooling == "flatten":
            x = keras.layers.Flatten(name="flatten")(x)
        else:
            raise ConfigError(
                "model.head.pooling must be 'avg', 'max' or 'flatten'. "
                f"Received: model.head.pooling={pooling!r}"
            )
    for i, units in enumerate(hidden_units):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"head_dropout_{i}")(x)
        x = keras.layers.Dense(
            units, activation=activation, kernel_regularizer=regularizer, name=f"head_dense_{i}"
        )(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout_out")(x)
    return keras.layers.Dense(
        task.output_units(num_classes),
        activation=task.output_activation(),
        kernel_regularizer=regularizer,
        dtype="float32",
        name="head_output",
    )(x)
