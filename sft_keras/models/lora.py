"""LoRA for keras-hub encoders: enable, save/load on their own, merge for export.

LoRA (Hu et al., 2021) freezes every pretrained weight and learns, for chosen
projections, a low-rank update `(alpha / rank) * A @ B` added to the kernel.
Keras 3 layers (`Dense`, `EinsumDense`, embeddings) implement it and
keras-hub's `Backbone.enable_lora(rank, target_layer_names)` enables it by
layer name; this module picks the layers by name pattern, freezes everything
else in the backbone (biases included), and handles the files:

- `enable_lora(backbone, rank, alpha, targets)`: LoRA on the layers whose name
  matches a target pattern (default: the attention `query` and `value`
  projections, as in the paper); the rest of the backbone is frozen.
- `save_lora_weights(model, path)` / `load_lora_weights(model, path)`: a
  small `.lora.h5` file with the LoRA matrices (keras-hub's own layout, so
  `Backbone.load_lora_weights` reads it too), the LoRA settings, and the head
  weights (every weighted layer of the model outside the backbone). With the
  pretrained preset it restores the fine-tuned model exactly.
- `merge_lora(model)`: a copy of the model without LoRA whose kernels are
  `kernel + (alpha / rank) * A @ B`, for export (no LoRA variables, no extra
  matmuls).
- `sft_keras.training.callbacks.LoraCheckpoint` writes `last.lora.h5` each
  epoch and `best.lora.h5` for the run's best epoch.

Note that Keras saves a LoRA layer's *merged* kernel in `.weights.h5` files
(and no LoRA matrices), so `best.weights.h5` of a LoRA run is a full merged
checkpoint that also loads into the same model built without LoRA.
"""

import json
import os
import re

import h5py
import keras
import keras_hub
import numpy as np

from sft_keras import patches
from sft_keras.errors import ConfigError, WeightsError
from sft_keras.models.build import find_backbone

DEFAULT_TARGETS = ("query", "value")
_FORMAT = "sft_keras.lora/1"


def _weighted_layers(backbone):
    # keras-hub's indexing of LoRA layers (Backbone.save_lora_weights): the
    # position in the flattened list of layers that have weights.
    return [layer for layer in patches.flatten_layers(backbone, include_self=False)
            if layer.weights]


def _lora_indices(backbone):
    """The keras-hub index (`_weighted_layers` position) of each LoRA layer of `backbone`."""
    return [i for i, layer in enumerate(_weighted_layers(backbone))
            if getattr(layer, "lora_enabled", False)]


def _settings(backbone):
    """`{"rank", "alpha", "targets"}` of a LoRA backbone; from its layers if not set by `enable_lora`."""
    settings = getattr(backbone, "_sft_lora", None)
    if settings:
        return settings
    first = lora_layers(backbone)[0]  # LoRA enabled by keras-hub's own enable_lora.
    return {"rank": first.lora_rank, "alpha": float(first.lora_alpha), "targets": []}


def enable_lora(backbone, rank, alpha=None, targets=DEFAULT_TARGETS):
    """Freezes `backbone` and adds trainable LoRA matrices to the target layers.

    Every backbone weight is frozen (kernels, biases, embeddings, norms);
    each layer whose name fully matches one of `targets` (regular
    expressions, `re.fullmatch`) gets what `layer.enable_lora(rank,
    lora_alpha=alpha)` gives, two matrices that are the only trainable
    backbone weights. `B` starts at
    zero, so the model's outputs are unchanged until training. The patterns
    are resolved to layer names and passed to keras-hub's
    `backbone.enable_lora(rank, target_layer_names=...)`, so the backbone
    records its LoRA layers itself and `backbone.save_lora_weights()` works;
    keras-hub takes no alpha, so `alpha` is set afterwards
    (`sft_keras.patches.set_lora_alpha`).

    Args:
        backbone: a built keras-hub `Backbone` (e.g. `BertBackbone`).
        rank: int > 0. The rank of the update.
        alpha: float or None. The update is scaled by `alpha / rank`; None
            means `alpha = rank` (scale 1), Keras's default.
        targets: sequence of str. Layer-name patterns; BERT's layers are named
            `query`, `key`, `value`, `attention_output`,
            `feedforward_intermediate_dense`, `feedforward_output_dense` (in
            every transformer layer), `pooled_dense`, `token_embedding`.

    Returns:
        List of str: the paths of the LoRA-enabled layers, e.g.
        `"bert_backbone/transformer_layer_0/self_attention_layer/query"`.

    Raises:
        ConfigError: a bad rank or alpha, an invalid pattern, a pattern
            that matches no layer that supports LoRA, a backbone that is not
            a keras-hub `Backbone`, or one that already has LoRA.

    Example:

    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(
    ...     vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=4,
    ...     intermediate_dim=8)
    >>> [p.split("/")[-1] for p in enable_lora(backbone, rank=2)]
    ['value', 'query']
    >>> sorted(v.path.split("/")[-1] for v in backbone.trainable_weights)
    ['lora_kernel_a', 'lora_kernel_a', 'lora_kernel_b', 'lora_kernel_b']
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ConfigError(f"model.lora_rank must be a positive integer. Received: model.lora_rank={rank!r}")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                              or alpha <= 0):
        raise ConfigError(
            f"model.lora_alpha must be a positive number or None. Received: model.lora_alpha={alpha!r}"
        )
    if isinstance(targets, str) or not targets:
        raise ConfigError(
            "model.lora_targets must be a non-empty tuple of layer-name patterns, e.g. "
            f"('query', 'value'). Received: model.lora_targets={targets!r}"
        )
    regexes = []
    for pattern in targets:
        try:
            regexes.append(re.compile(pattern))
        except (re.error, TypeError) as e:
            raise ConfigError(
                f"model.lora_targets holds an invalid regular expression ({e}). Received: {pattern!r}"
            ) from None
    if not isinstance(backbone, keras_hub.models.Backbone):
        raise ConfigError(
            f"LoRA needs a keras-hub Backbone. Received: backbone {backbone.name!r} of type "
            f"{type(backbone).__name__}."
        )
    if lora_layers(backbone):
        raise ConfigError(f"LoRA is already enabled on backbone {backbone.name!r}.")

    layers = _weighted_layers(backbone)
    capable = [layer for layer in layers if hasattr(layer, "enable_lora")]
    for pattern, regex in zip(targets, regexes):
        if not any(regex.fullmatch(layer.name) for layer in capable):
            names = ", ".join(sorted({layer.name for layer in capable}))
            raise ConfigError(
                f"model.lora_targets entry {pattern!r} matches no layer of backbone "
                f"{backbone.name!r} that supports LoRA. Such layers are named: {names}."
            )
    # keras-hub matches names exactly, on the same layers; each name once.
    names = sorted({layer.name for layer in capable if any(r.fullmatch(layer.name) for r in regexes)})
    backbone.enable_lora(rank, target_layer_names=names)  # Freezes the rest of the backbone.
    paths = []
    for layer in layers:
        if not getattr(layer, "lora_enabled", False):
            continue
        if alpha is not None:
            patches.set_lora_alpha(layer, alpha)
        # LoRA trains the update only: keep the bias (and anything else) as is.
        for variable in layer.trainable_weights:
            if variable is not layer.lora_kernel_a and variable is not layer.lora_kernel_b:
                variable.trainable = False
        paths.append(layer.path)
    backbone._sft_lora = {"rank": rank, "alpha": float(alpha if alpha is not None else rank),
                          "targets": list(targets)}
    return paths


def find_lora_backbone(model):
    """Returns the LoRA-enabled keras-hub backbone of `model` (or `model` itself), or None.

    Args:
        model: a keras-hub `Backbone`, or a `keras.Model` holding one (found
            with `sft_keras.models.find_backbone`).

    Returns:
        The backbone if any of its layers has LoRA enabled, else None.
    """
    if isinstance(model, keras_hub.models.Backbone):
        backbone = model
    else:
        try:
            backbone = find_backbone(model)
        except ConfigError:
            return None
    return backbone if lora_layers(backbone) else None


def lora_layers(model):
    """Returns every layer of `model` (nested layers included) with LoRA enabled."""
    return [layer for layer in patches.flatten_layers(model, include_self=False)
            if getattr(layer, "lora_enabled", False)]


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def lora_summary(model):
    """Returns one line: LoRA settings and trainable vs total parameters.

    Example:

    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(
    ...     vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=4,
    ...     intermediate_dim=8)
    >>> _ = enable_lora(backbone, rank=2)
    >>> print(lora_summary(backbone))
    LoRA rank 2, alpha 2.0 on 2 layers (query, value): 32 trainable of 2,328 parameters (1.37%): LoRA 32, rest 0
    """
    layers = lora_layers(model)
    backbone = find_lora_backbone(model)
    settings = _settings(backbone) if backbone is not None else {}
    total = _count(model.weights)
    trainable = _count(model.trainable_weights)
    lora = _count([w for layer in layers for w in (layer.lora_kernel_a, layer.lora_kernel_b)])
    names = ", ".join(sorted({layer.name for layer in layers}))
    alpha = settings.get("alpha", layers[0].lora_alpha if layers else None)
    rank = settings.get("rank", layers[0].lora_rank if layers else None)
    percent = 100.0 * trainable / total if total else 0.0
    return (
        f"LoRA rank {rank}, alpha {alpha} on {len(layers)} layers ({names}): "
        f"{trainable:,} trainable of {total:,} parameters ({percent:.2f}%): "
        f"LoRA {lora:,}, rest {trainable - lora:,}"
    )


def _head_layers(model, backbone):
    """The weighted top-level layers of `model` outside `backbone` (the head)."""
    return [layer for layer in model.layers if layer is not backbone and layer.weights]


def _own_variables(layer):
    store = {}
    layer.save_own_variables(store)
    return store


def save_lora_weights(model, filepath):
    """Writes the LoRA matrices, the LoRA settings and the head weights to `filepath`.

    The file is keras-hub's `.lora.h5` (so `Backbone.load_lora_weights`
    reads its LoRA part) plus a `sft_keras` group with rank, alpha and target
    patterns and a `head` group with the weights of every weighted top-level
    layer outside the backbone (the Dense head). It is written to a temporary
    file and renamed into place.

    Args:
        model: a `keras.Model` holding a backbone prepared by `enable_lora`.
        filepath: str, ending in `.lora.h5`.

    Raises:
        WeightsError: the model has no LoRA, or `filepath` has another suffix.
    """
    backbone = find_lora_backbone(model)
    if backbone is None:
        raise WeightsError(f"Model {model.name!r} has no LoRA-enabled backbone: nothing to save "
                           f"to {filepath!r}. Set model.lora_rank > 0.")
    if not str(filepath).endswith(".lora.h5"):
        raise WeightsError(f"A LoRA weights file must end in '.lora.h5'. Received: {filepath!r}")
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.path.basename(filepath)}")
    try:
        backbone.save_lora_weights(tmp)
        settings = _settings(backbone)
        with h5py.File(tmp, "a") as f:
            meta = f.create_group("sft_keras")
            meta.attrs["format"] = _FORMAT
            meta.attrs["settings"] = json.dumps(settings)
            meta.attrs["backbone"] = backbone.name
            meta.attrs["lora_layers"] = json.dumps(_lora_indices(backbone))
            head = f.create_group("head")
            for layer in _head_layers(model, backbone):
                group = head.create_group(layer.name)
                for key, value in _own_variables(layer).items():
                    group[key] = keras.ops.convert_to_numpy(value)
        os.replace(tmp, filepath)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_lora_settings(filepath):
    """Returns the `{"rank", "alpha", "targets"}` stored in a `.lora.h5` file."""
    try:
        with h5py.File(filepath, "r") as f:
            if "sft_keras" not in f:
                raise WeightsError(f"{filepath!r} is not a LoRA file written by sft_keras "
                                   f"(no 'sft_keras' group).")
            return json.loads(f["sft_keras"].attrs["settings"])
    except OSError as e:
        raise WeightsError(f"Cannot read LoRA weights file {filepath!r}: {e}") from None


def load_lora_weights(model, filepath):
    """Loads a file written by `save_lora_weights` into `model`.

    `model` is the same architecture built from the pretrained preset (base
    weights as pretrained). If its backbone has no LoRA yet, LoRA is enabled
    with the file's rank, alpha and targets; if it has, they must match.

    Args:
        model: a `keras.Model` around a keras-hub backbone.
        filepath: str. A `.lora.h5` file from `save_lora_weights`.

    Raises:
        WeightsError: the file is missing or does not fit the model (other
            rank, alpha, LoRA layers or head shapes).
    """
    if not os.path.isfile(filepath):
        raise WeightsError(f"LoRA weights file not found. Received: {filepath!r}")
    settings = read_lora_settings(filepath)
    backbone = find_lora_backbone(model)
    if backbone is None:
        try:
            backbone = find_backbone(model)
        except ConfigError as e:
            raise WeightsError(f"Cannot load {filepath!r}: {e}") from None
        if not isinstance(backbone, keras_hub.models.Backbone):
            raise WeightsError(f"Cannot load {filepath!r}: the backbone {backbone.name!r} of model "
                               f"{model.name!r} is not a keras-hub Backbone.")
        enable_lora(backbone, settings["rank"], settings["alpha"], settings["targets"] or DEFAULT_TARGETS)
        # Functions traced before LoRA existed would skip it (as after `quantize()`).
        model.train_function = model.test_function = model.predict_function = None
    current = _settings(backbone)
    with h5py.File(filepath, "r") as f:
        stored_layers = json.loads(f["sft_keras"].attrs["lora_layers"])
        for key in ("rank", "alpha"):
            if key in current and float(current[key]) != float(settings[key]):
                raise WeightsError(
                    f"LoRA {key} of {filepath!r} is {settings[key]}, but the model was built with "
                    f"model.lora_{key}={current[key]}. Both must match."
                )
        if stored_layers != _lora_indices(backbone):
            raise WeightsError(
                f"{filepath!r} holds LoRA for other layers (targets {settings['targets']}) than "
                f"the model has (targets {current.get('targets')}). Build the model with the "
                f"same model.lora_targets."
            )
        heads = {layer.name: layer for layer in _head_layers(model, backbone)}
        if sorted(heads) != sorted(f["head"].keys()):
            raise WeightsError(
                f"Head layers of {filepath!r} are {sorted(f['head'].keys())}, but the model's "
                f"are {sorted(heads)}. Build the model with the same model.head and classes."
            )
        try:
            for name, layer in heads.items():
                group = f["head"][name]
                layer.load_own_variables({key: group[key][()] for key in group.keys()})
        except ValueError as e:
            raise WeightsError(f"Head weights of {filepath!r} do not fit the model: {e}") from None
    backbone.load_lora_weights(filepath)


def merge_lora(model):
    """Returns a copy of `model` without LoRA, with each update merged into its kernel.

    Each LoRA layer's kernel becomes `kernel + (alpha / rank) * A @ B`
    (Keras's own merge, `save_own_variables`, as used when saving weights);
    every other weight is copied. The copy has no LoRA variables and computes
    no extra matmuls. A model without LoRA is returned as is.

    Args:
        model: a functional `keras.Model`.

    Returns:
        A `keras.Model` with the same outputs.

    Example:

    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(
    ...     vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=4,
    ...     intermediate_dim=8)
    >>> _ = enable_lora(backbone, rank=2)
    >>> names = ("token_ids", "segment_ids", "padding_mask")
    >>> inputs = {n: keras.Input((4,), dtype="int32", name=n) for n in names}
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(backbone(inputs)["pooled_output"]))
    >>> for layer in lora_layers(model):  # A nonzero update, as after training.
    ...     _ = layer.lora_kernel_b.assign(np.ones(layer.lora_kernel_b.shape))
    >>> merged = merge_lora(model)
    >>> len(lora_layers(model)), len(lora_layers(merged))
    (2, 0)
    >>> x = {"token_ids": np.array([[2, 5, 3, 0]]), "segment_ids": np.zeros((1, 4), int),
    ...      "padding_mask": np.array([[1, 1, 1, 0]])}
    >>> bool(np.allclose(model(x), merged(x), atol=1e-5))
    True
    """
    if not lora_layers(model):
        return model
    # from_config rebuilds each layer from its constructor arguments; a keras-hub
    # Backbone's config holds no LoRA, so the clone has none.
    plain = keras.models.clone_model(model)
    source = patches.flatten_layers(model)
    target = patches.flatten_layers(plain)
    if [type(s) for s in source] != [type(t) for t in target]:
        raise ValueError(f"Cannot merge LoRA: the copy of {model.name!r} has other layers.")
    for src, dst in zip(source, target):
        store = _own_variables(src)
        if store:
            dst.load_own_variables(store)
    if lora_layers(plain):
        raise ValueError(f"Cannot merge LoRA: the copy of {model.name!r} still has LoRA layers.")
    return plain


def restore_best(model, path):
    """Loads the LoRA file `path` (`best.lora.h5`) into `model` when it exists; returns it or None.

    Used instead of loading `best.weights.h5`, which holds merged kernels:
    after this the backbone's base weights are still the pretrained ones.
    """
    if not os.path.exists(path):
        return None
    load_lora_weights(model, path)
    return path
