"""The dual encoder of a retrieval chatbot and its in-batch negatives loss.

One keras-hub encoder embeds both the context and the response (shared
weights): mean pooling over non-padding tokens, then L2 normalisation, so a
dot product is a cosine similarity. The model's output stacks the two
embeddings, `[batch, 2, dim]`; `InBatchNegativesLoss` scores every context
against every response of the batch (multiple-negatives ranking / InfoNCE).
"""

import keras

from sft_keras.backbones.text import MaskedAveragePooling

# The inputs of a dual encoder: these prefixes on the token names.
SIDES = ("context", "response")


def build_dual_encoder(backbone, sequence_length, name="dual_encoder"):
    """Builds the dual encoder around a keras-hub text backbone (weights shared).

    Args:
        backbone: a keras-hub encoder, e.g. `keras_hub.models.BertBackbone`.
        sequence_length: int. Tokens per text.
        name: str. The model's name.

    Returns:
        A functional `keras.Model` taking `context_token_ids`,
        `context_segment_ids`, `context_padding_mask` and the same three for
        `response_` (int32 `[batch, sequence_length]`), returning the L2
        normalised embeddings stacked, float32 `[batch, 2, hidden_dim]`.

    Example:

    >>> import tempfile
    >>> from sft_keras.backbones import build_text_backbone, save_tiny_bert_preset
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hi"]
    >>> backbone = build_text_backbone("bert", save_tiny_bert_preset(tempfile.mkdtemp(), vocab))
    >>> model = build_dual_encoder(backbone, 8)
    >>> len(model.inputs), model.output.shape
    (6, (None, 2, 16))
    """
    from sft_keras.data.pipeline import TEXT_INPUTS

    pool = MaskedAveragePooling(name="avg_pool")
    normalize = keras.layers.UnitNormalization(axis=-1, name="l2_normalize", dtype="float32")
    embeddings, inputs = [], {}
    for side in SIDES:
        tokens = {n: keras.Input((sequence_length,), dtype="int32", name=f"{side}_{n}")
                  for n in TEXT_INPUTS}
        inputs.update({f"{side}_{n}": t for n, t in tokens.items()})
        sequence = backbone(tokens)["sequence_output"]
        pooled = pool(sequence, tokens["padding_mask"])
        embeddings.append(keras.layers.Reshape((1, -1), name=f"{side}_embedding")(
            normalize(pooled)))
    outputs = keras.layers.Concatenate(axis=1, name="pair", dtype="float32")(embeddings)
    return keras.Model(inputs, outputs, name=name)


def build_encoder(model):
    """The one-text encoder inside a dual encoder: tokens -> L2-normalised embedding.

    It shares the dual encoder's layers (and so its weights): no copy is made.

    Args:
        model: a model from `build_dual_encoder`.

    Returns:
        A functional `keras.Model` taking `token_ids`, `segment_ids`,
        `padding_mask` and returning float32 `[batch, hidden_dim]`.
    """
    from sft_keras.data.pipeline import TEXT_INPUTS
    from sft_keras.models.build import find_backbone

    backbone = find_backbone(model)
    pool = next(layer for layer in model.layers if isinstance(layer, MaskedAveragePooling))
    normalize = next(layer for layer in model.layers
                     if isinstance(layer, keras.layers.UnitNormalization))
    length = model.input["context_token_ids"].shape[1] if isinstance(model.input, dict) else (
        model.inputs[0].shape[1])
    tokens = {n: keras.Input((length,), dtype="int32", name=n) for n in TEXT_INPUTS}
    pooled = pool(backbone(tokens)["sequence_output"], tokens["padding_mask"])
    return keras.Model(tokens, normalize(pooled), name="encoder")


def _masked_logits(y_true, y_pred, scale):
    """Scaled context x response similarities; other correct pairs of the batch masked out."""
    ops = keras.ops
    y_pred = ops.cast(y_pred, "float32")
    contexts, responses = y_pred[:, 0, :], y_pred[:, 1, :]
    logits = scale * ops.matmul(contexts, ops.transpose(responses))
    ids = ops.cast(ops.reshape(y_true, (-1, 2)), "int32")
    same_context = ops.equal(ids[:, :1], ops.transpose(ids[:, :1]))
    same_response = ops.equal(ids[:, 1:], ops.transpose(ids[:, 1:]))
    size = ops.shape(logits)[0]
    off_diagonal = ops.logical_not(ops.cast(ops.eye(size), "bool"))
    # Row i's response j is also right when j repeats i's context or response:
    # it is not a negative.
    mask = ops.logical_and(ops.logical_or(same_context, same_response), off_diagonal)
    return ops.where(mask, ops.full_like(logits, -1e9), logits)


@keras.saving.register_keras_serializable(package="sft_keras")
class InBatchNegativesLoss(keras.losses.Loss):
    """Multiple-negatives ranking (InfoNCE) loss over a batch of (context, response) pairs.

    Row i's context must score its own response above every other response
    of the batch: a softmax cross-entropy over `scale * cosine similarity`.
    `y_true` holds `(context_id, response_id)` per row; another row with
    the same context or response is a correct answer too and is left out of
    the negatives (so a batch never penalises a duplicate reply).
    `symmetric=True` averages in the response -> context direction.

    Args:
        scale: float. Inverse temperature (`train.retrieval_scale`).
        symmetric: bool. Also rank contexts for each response.

    Example:

    >>> import numpy as np
    >>> pairs = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    >>> loss = InBatchNegativesLoss(scale=10.0)
    >>> round(float(loss(np.array([[0, 0], [1, 1]]), pairs)), 5)  # Each matched: small.
    5e-05
    >>> round(float(loss(np.array([[0, 0], [1, 0]]), pairs)), 5)  # Same reply id: masked.
    0.0
    """

    def __init__(self, scale=20.0, symmetric=False, name="in_batch_negatives", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale = float(scale)
        self.symmetric = bool(symmetric)

    def call(self, y_true, y_pred):
        logits = _masked_logits(y_true, y_pred, self.scale)
        targets = keras.ops.arange(keras.ops.shape(logits)[0])
        loss = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        if self.symmetric:
            # Transposed: the mask is symmetric, so the same rows stay out.
            back = keras.losses.sparse_categorical_crossentropy(
                targets, keras.ops.transpose(logits), from_logits=True)
            loss = (loss + back) / 2.0
        return loss

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "symmetric": self.symmetric}


@keras.saving.register_keras_serializable(package="sft_keras")
def in_batch_accuracy(y_true, y_pred):
    """1.0 where a context's own response scores highest in the batch (duplicates masked).

    Example:

    >>> import numpy as np
    >>> pairs = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    >>> in_batch_accuracy(np.array([[0, 0], [1, 1]]), pairs).numpy().tolist()
    [1.0, 0.0]
    """
    logits = _masked_logits(y_true, y_pred, 1.0)
    best = keras.ops.argmax(logits, axis=-1)
    return keras.ops.cast(keras.ops.equal(best, keras.ops.arange(keras.ops.shape(logits)[0])),
                          "float32")


def embed_texts(encoder, preprocessor, texts, batch_size=64):
    """Embeds `texts` with an encoder from `build_encoder` and the training tokenizer.

    Args:
        encoder: `build_encoder(model)`.
        preprocessor: the keras-hub preprocessor of the run.
        texts: list of str.
        batch_size: int. Texts per call.

    Returns:
        float32 numpy array `[len(texts), hidden_dim]`, unit rows.
    """
    import numpy as np

    from sft_keras.data.pipeline import _to_int32

    vectors = [np.zeros((0, encoder.output.shape[-1]), np.float32)]
    for start in range(0, len(texts), batch_size):
        tokens = _to_int32(preprocessor(x=list(texts[start:start + batch_size])))
        vectors.append(keras.ops.convert_to_numpy(encoder(tokens, training=False)))
    return np.concatenate(vectors).astype(np.float32)
