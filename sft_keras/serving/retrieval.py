"""The SavedModel of a retrieval chatbot: raw text in, the best replies of a bank out.

Signatures (core TensorFlow ops only: the tokenizer is
`sft_keras.serving.core_tokenizer.CoreBertTokenizer`, so the export runs
without keras, keras-hub or tensorflow-text, e.g. on stock TF Serving):

- `serving_default`: `text` (`tf.string [batch]`) -> `replies` (`tf.string
  [batch, k]`), `scores` (float32 `[batch, k]`, cosine similarities, best
  first) and `reply_ids` (int32 `[batch, k]`, positions in the bank);
- `embed`: `text` -> `vectors` (float32 `[batch, dim]`, unit length).

The bank (the replies and their embeddings, computed at export time with the
trained encoder) is held in two variables of the SavedModel; `k` is
`export.top_k`, or the bank's size when that is smaller (logged).

With `faiss_index=True` (`export.faiss_index`) the bank is also written
beside the graph, in `assets.extra/`: `bank.faiss` (a FAISS `IndexFlatIP`
of the same vectors: exact inner product, so the same top-k) and
`replies.json`; `FaissBank` searches it with the vectors of `embed`.
"""

import json
import os


import numpy as np
import tensorflow as tf
from absl import logging

from sft_keras.serving.export import new_archive, write_export


class ReplyBank(tf.Module):
    """The known replies and their unit embeddings, as SavedModel variables.

    Args:
        replies: list of str.
        vectors: float32 array `[len(replies), dim]`.
    """

    def __init__(self, replies, vectors, name="reply_bank"):
        super().__init__(name=name)
        self.replies = tf.Variable(tf.constant(list(replies), tf.string), trainable=False,
                                   name="replies")
        self.vectors = tf.Variable(np.asarray(vectors, np.float32), trainable=False,
                                   name="vectors")


def top_replies(vectors, bank_vectors, k):
    """`(scores, indices)` of the `k` best bank rows for each query vector (float32 dot)."""
    return tf.math.top_k(tf.matmul(vectors, bank_vectors, transpose_b=True), k=k)


def export_retrieval_model(model, preprocessor, export_base, bank, top_k=5, version=None,
                           overwrite=False, info=None, batch_size=64, bank_vectors=None,
                           faiss_index=False):
    """Exports a dual encoder with its reply bank as a versioned SavedModel.

    Args:
        model: the trained dual encoder (`sft_keras.models.retrieval.build_dual_encoder`).
        preprocessor: the keras-hub preprocessor used in training.
        export_base: str. The folder holding the versions.
        bank: list of str. The replies the bot chooses from (distinct, non-empty).
        top_k: int >= 1. Replies returned per message (`export.top_k`); a
            smaller bank returns all of its replies (logged).
        version, overwrite, info: as in `sft_keras.serving.export.export_image_model`.
        batch_size: int. Replies embedded per call.
        bank_vectors: float32 array `[len(bank), dim]` or None. The bank's
            embeddings when already computed (e.g. a benchmark's synthetic
            bank); None embeds `bank` with `model`.

    Returns:
        str. The path of the written version folder.

    Raises:
        ExportError: an empty bank, or as `write_export` does.

    Example:

    >>> import tempfile
    >>> from sft_keras.backbones import (build_text_backbone, load_text_tokenizer,
    ...                                  make_preprocessor, save_tiny_bert_preset)
    >>> from sft_keras.models.retrieval import build_dual_encoder
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hi", "bye"]
    >>> preset = save_tiny_bert_preset(tempfile.mkdtemp(), vocab, num_layers=1)
    >>> model = build_dual_encoder(build_text_backbone("bert", preset), 8)
    >>> preprocessor = make_preprocessor(load_text_tokenizer("bert", preset), 8)
    >>> path = export_retrieval_model(model, preprocessor, tempfile.mkdtemp(), ["hi", "bye"],
    ...                               top_k=1)
    >>> out = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(["hi"]))
    >>> sorted(out), out["replies"].shape
    (['replies', 'reply_ids', 'scores'], TensorShape([1, 1]))
    """
    import keras

    from sft_keras.errors import ExportError
    from sft_keras.models.retrieval import build_encoder, embed_texts
    from sft_keras.serving.core_tokenizer import CoreBertTokenizer

    bank = list(bank)
    if not bank:
        raise ExportError("The reply bank is empty: nothing to answer with. Received: bank=[]")
    k = min(int(top_k), len(bank))
    if k < top_k:
        logging.warning("export.top_k=%d is more than the %d replies of the bank: the export "
                        "returns all %d.", top_k, len(bank), k)
    encoder = build_encoder(model)
    length = preprocessor.sequence_length
    tokenizer = CoreBertTokenizer.from_keras_hub(
        preprocessor.tokenizer, sequence_length=length, truncate=preprocessor.truncate)
    if bank_vectors is None:
        bank_vectors = embed_texts(encoder, preprocessor, bank, batch_size)
    if np.shape(bank_vectors) != (len(bank), encoder.output.shape[-1]):
        raise ExportError(f"bank_vectors must be [{len(bank)}, {encoder.output.shape[-1]}] "
                          f"(one per reply). Received: shape {np.shape(bank_vectors)}")
    replies = ReplyBank(bank, bank_vectors)

    def embed(text):
        return {"vectors": tf.cast(encoder(tokenizer.preprocess(text, sequence_length=length),
                                           training=False), tf.float32)}

    def serve(text):
        scores, indices = top_replies(embed(text)["vectors"], replies.vectors, k)
        return {"replies": tf.gather(replies.replies, indices), "scores": scores,
                "reply_ids": indices}

    archive = new_archive(tokenizer, replies)
    signature = [tf.TensorSpec([None], tf.string, name="text")]
    archive.add_endpoint("serving_default", serve, input_signature=signature)
    archive.add_endpoint("embed", embed, input_signature=signature)
    inputs = {"serving_default": {"text": "tf.string [batch], a message"},
              "embed": {"text": "tf.string [batch]"}}
    info = {"modality": "retrieval", "sequence_length": length, "top_k": k,
            "bank_size": len(bank), **(info or {})}
    extra_files = None
    if faiss_index:
        extra_files = {FAISS_INDEX: lambda path: _write_faiss(bank_vectors, path),
                       REPLIES: lambda path: _write_json(bank, path)}
        info["faiss_index"] = FAISS_INDEX
    return write_export(archive, export_base, [], "retrieval", inputs, info, version, overwrite,
                        extra_files=extra_files)


FAISS_INDEX, REPLIES = "bank.faiss", "replies.json"  # In assets.extra/.


def _write_faiss(vectors, path):
    import faiss

    index = faiss.IndexFlatIP(int(np.shape(vectors)[1]))
    index.add(np.ascontiguousarray(vectors, np.float32))
    faiss.write_index(index, path)


def _write_json(values, path):
    from sft_keras.files import atomic_write_text

    atomic_write_text(path, json.dumps(list(values), ensure_ascii=False))


class FaissBank:
    """The FAISS index of an export's bank (`export.faiss_index=True`), searched exactly.

    Serve a large bank this way: the export's `embed` signature (TF Serving)
    gives the vectors, FAISS ranks the bank.

    Args:
        version_dir: str. An export version folder with `assets.extra/bank.faiss`.

    Raises:
        ExportError: the export has no FAISS index.

    Example:

    >>> bank = FaissBank("/tmp/bot/export/1")  # doctest: +SKIP
    >>> vectors = model.signatures["embed"](text=tf.constant(["Hi"]))["vectors"]  # doctest: +SKIP
    >>> bank.search(vectors.numpy(), k=5)  # doctest: +SKIP
    """

    def __init__(self, version_dir):
        import faiss

        from sft_keras.errors import ExportError
        from sft_keras.serving.export import EXTRA

        path = os.path.join(version_dir, EXTRA, FAISS_INDEX)
        if not os.path.isfile(path):
            raise ExportError(f"No FAISS index in {version_dir!r} (export.faiss_index=False when "
                              f"it was written). Received: missing {path!r}")
        self.index = faiss.read_index(path)
        with open(os.path.join(version_dir, EXTRA, REPLIES), encoding="utf-8") as f:
            self.replies = json.load(f)

    def search(self, vectors, k=5):
        """`(scores, ids, replies)` of the `k` best bank rows for each vector, best first."""
        scores, ids = self.index.search(np.ascontiguousarray(vectors, np.float32), k)
        return scores, ids, [[self.replies[i] for i in row] for row in ids]


class ChatBot:
    """Answers messages with an exported retrieval chatbot (`tf.saved_model.load`).

    Args:
        model_path: str. A version folder, or an export base (highest version).

    Raises:
        ExportError: the export is not a retrieval chatbot.

    Example:

    >>> bot = ChatBot("/tmp/bot/export")  # doctest: +SKIP
    >>> bot.reply("Hello")  # doctest: +SKIP
    [('Hi', 0.93), ...]
    """

    def __init__(self, model_path):
        from sft_keras.errors import ExportError
        from sft_keras.serving.export import read_export_info, resolve_export

        self.path = resolve_export(model_path)
        self.info = read_export_info(self.path)
        if self.info.get("modality") != "retrieval":
            raise ExportError(
                f"{self.path!r} is not a retrieval chatbot export (task='retrieval'). "
                f"Received: modality={self.info.get('modality')!r}")
        self.top_k = int(self.info["top_k"])
        self._serve = tf.saved_model.load(self.path).signatures["serving_default"]

    def reply(self, message, top_k=None):
        """The best replies to one message: list of `(reply, score)`, best first.

        Args:
            message: str.
            top_k: int or None. At most the export's `top_k` (None: all of them).
        """
        from sft_keras.errors import DataError

        top_k = self.top_k if top_k is None else top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= self.top_k:
            raise DataError(f"--top_k must be an integer in [1, {self.top_k}] (the export "
                            f"serves {self.top_k} replies). Received: top_k={top_k!r}")
        out = self._serve(text=tf.constant([message]))
        replies = [r.decode("utf-8") for r in out["replies"].numpy()[0][:top_k]]
        return list(zip(replies, (round(float(s), 4) for s in out["scores"].numpy()[0][:top_k])))
