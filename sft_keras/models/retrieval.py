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


def build_dual_encoder(backbone, sequence_length, name="dual_encoder", hard_negatives=0):
    """Builds the dual encoder around a keras-hub text backbone (weights shared).

    Args:
        backbone: a keras-hub encoder, e.g. `keras_hub.models.BertBackbone`.
        sequence_length: int. Tokens per text.
        name: str. The model's name.
        hard_negatives: int. Hard negative replies per pair
            (`train.retrieval_hard_negatives`): inputs `negative_0_token_ids`
            and so on, embedded by the same encoder.

    Returns:
        A functional `keras.Model` taking `context_token_ids`,
        `context_segment_ids`, `context_padding_mask` and the same three for
        `response_` (and `negative_0_`...; int32 `[batch, sequence_length]`),
        returning the L2 normalised embeddings stacked, float32
        `[batch, 2 + hard_negatives, hidden_dim]`.

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
    for side in SIDES + tuple(f"negative_{i}" for i in range(hard_negatives)):
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
    """Scaled context x candidate similarities; other correct pairs of the batch masked out.

    The candidates are the batch's responses, then its hard negatives (if
    `y_pred` has more than two embeddings per row), `[batch, batch * (1 + k)]`.
    """
    ops = keras.ops
    y_pred = ops.cast(y_pred, "float32")
    contexts, size = y_pred[:, 0, :], ops.shape(y_pred)[0]
    candidates = ops.reshape(ops.transpose(y_pred[:, 1:, :], (1, 0, 2)), (-1, y_pred.shape[-1]))
    logits = scale * ops.matmul(contexts, ops.transpose(candidates))
    ids = ops.cast(ops.reshape(y_true, (size, -1)), "int32")
    candidate_ids = ops.reshape(ops.transpose(ids[:, 1:]), (1, -1))  # Responses, negatives.
    same_context = ops.equal(ids[:, :1], ops.transpose(ids[:, :1]))
    same_context = ops.pad(same_context, [[0, 0], [0, ops.shape(logits)[1] - size]])
    same_response = ops.equal(ids[:, 1:2], candidate_ids)
    off_diagonal = ops.logical_not(ops.cast(ops.eye(size, ops.shape(logits)[1]), "bool"))
    # Row i's candidate j is also right when j repeats i's context or response, and
    # an empty hard negative slot (id -1) is no candidate: neither is a negative.
    mask = ops.logical_or(ops.logical_or(same_context, same_response), candidate_ids < 0)
    mask = ops.logical_and(mask, off_diagonal)
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
    With hard negatives (`y_pred` `[batch, 2 + k, dim]`, `y_true`
    `[batch, 2 + k]` with their response ids, -1 for an empty slot) each
    context is also scored against every hard negative of the batch, masked
    the same way.

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
    >>> negatives = pairs[::-1, 1:, :]  # Each row's hard negative: the other reply.
    >>> with_negatives = np.concatenate([pairs, negatives], axis=1)  # [batch, 3, dim]
    >>> round(float(loss(np.array([[0, 0, 1], [1, 1, 0]]), with_negatives)), 5)  # One more.
    9e-05
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
            size = keras.ops.shape(logits)[0]  # The batch's own responses, no negatives.
            back = keras.losses.sparse_categorical_crossentropy(
                targets, keras.ops.transpose(logits[:, :size]), from_logits=True)
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


def mine_hard_negatives(encoder, preprocessor, examples, k, batch_size=64, chunk=4096):
    """Adds to each pair its `k` best-scoring wrong replies among the pairs' own replies.

    The bank is `examples.bank()`; a reply is correct for a pair when any pair
    of the same context has it. Scores are cosine similarities of
    `embed_texts` (a matrix product, then `tf.math.top_k`, `chunk` contexts
    at a time). A context with fewer than `k` wrong replies gets empty slots:
    text "" and id -1, which the loss leaves out.

    Args:
        encoder: `build_encoder(model)`, e.g. of the model before fine-tuning.
        preprocessor: the keras-hub preprocessor of the run.
        examples: `PairExamples` (the training split).
        k: int. Hard negatives per pair.
        batch_size: int. Texts per encoder call.
        chunk: int. Contexts scored at once.

    Returns:
        A copy of `examples` with `negatives` (str `[n, k]`) and `negative_ids`
        (int32 `[n, k]`, the replies' response ids).

    Example:

    >>> import tempfile
    >>> from sft_keras import backbones
    >>> from sft_keras.data.pairs import make_pair_examples
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hi", "yo", "hey"]
    >>> preset = backbones.save_tiny_bert_preset(tempfile.mkdtemp(), vocab)
    >>> backbone = backbones.build_text_backbone("bert", preset)
    >>> tokenizer = backbones.load_text_tokenizer("bert", preset)
    >>> preprocessor = backbones.make_preprocessor(tokenizer, 8, backbone)
    >>> encoder = build_encoder(build_dual_encoder(backbone, 8))
    >>> pairs = make_pair_examples(["hi", "yo", "hi"], ["hey", "hi", "yo"])
    >>> mined = mine_hard_negatives(encoder, preprocessor, pairs, k=1)
    >>> mined.negatives[[0, 2]].tolist()  # Context "hi" has one wrong reply: "hi".
    [['hi'], ['hi']]
    """
    import dataclasses

    import numpy as np
    import tensorflow as tf

    bank = examples.bank()
    response_id = dict(zip(examples.responses.tolist(), examples.response_ids.tolist()))
    column = {text: i for i, text in enumerate(bank)}
    contexts = list(dict.fromkeys(examples.contexts.tolist()))  # Distinct, first seen first.
    row = {text: i for i, text in enumerate(contexts)}
    correct = np.zeros((len(contexts), len(bank)), bool)
    correct[[row[c] for c in examples.contexts], [column[r] for r in examples.responses]] = True
    bank_vectors = embed_texts(encoder, preprocessor, bank, batch_size)
    take = min(k, len(bank))
    indices, found = [], []
    for start in range(0, len(contexts), chunk):
        vectors = embed_texts(encoder, preprocessor, contexts[start:start + chunk], batch_size)
        scores = np.where(correct[start:start + chunk], -np.inf, vectors @ bank_vectors.T)
        top = tf.math.top_k(scores, k=take)
        indices.append(top.indices.numpy())
        found.append(np.isfinite(top.values.numpy()))
    indices = np.concatenate(indices).reshape(len(contexts), take)
    found = np.concatenate(found).reshape(len(contexts), take)
    texts = np.full((len(contexts), k), "", dtype=object)
    ids = np.full((len(contexts), k), -1, np.int32)
    texts[:, :take] = np.where(found, np.array(bank, dtype=object)[indices], "")
    ids[:, :take] = np.where(found, np.array([response_id[r] for r in bank])[indices], -1)
    rows = [row[c] for c in examples.contexts]
    return dataclasses.replace(examples, negatives=texts[rows], negative_ids=ids[rows])
