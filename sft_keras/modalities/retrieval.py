"""Retrieval (`task="retrieval"`): a dual text encoder of (context, response) pairs.

The chatbot that supervised fine-tuning gives a BERT-family encoder: a user's
message is embedded next to the right reply, and the bot answers with the
best replies of a bank of known replies (every distinct response of the
data). Data: `sft_keras.data.pairs`; model and loss:
`sft_keras.models.retrieval`; report: `sft_keras.evaluation.retrieval`;
export: `sft_keras.serving.retrieval`. See docs/chatbot.md.
"""

import dataclasses
import time

from absl import logging

from sft_keras.modalities.base import MODALITIES
from sft_keras.modalities.text import TextModality


class RetrievalModality(TextModality):
    """Retrieval runs: pairs in, a dual encoder, a report with baselines, a reply bank out.

    Chosen for every config with `task="retrieval"` (the backbone must be a
    text one); the tokenizer is loaded once, as for text.

    Example:

    >>> import tempfile
    >>> from sft_keras.backbones import save_tiny_bert_preset
    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.task = "retrieval"
    >>> config.model.backbone = "bert"
    >>> config.model.preset = save_tiny_bert_preset(
    ...     tempfile.mkdtemp(), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hi"])
    >>> config.data.sequence_length = 8
    >>> RetrievalModality(config).build_model(1).output.shape
    (None, 2, 16)
    """

    name = "retrieval"
    supports_lora = False

    @classmethod
    def sources(cls):
        from sft_keras.data.pairs import PAIR_SOURCES

        return PAIR_SOURCES

    @classmethod
    def check_data_config(cls, d):
        from sft_keras.config import _fail, _int_at_least

        for key in ("context_column", "response_column"):
            if not isinstance(d[key], str) or not d[key]:
                _fail(f"data.{key}", d[key], "must name a column")
        _int_at_least("data.context_turns", d.context_turns, 1)
        _int_at_least("data.sequence_length", d.sequence_length, 4)
        if d.source == "chatterbot" and d.validation_path:
            _fail("data.validation_path", d.validation_path,
                  "is not used with data.source='chatterbot'; leave it empty")

    @classmethod
    def check_model_config(cls, m, check_files):
        from sft_keras.backbones import get_backbone_spec
        from sft_keras.config import _fail

        if get_backbone_spec(m.backbone).modality != "text":
            _fail("model.backbone", m.backbone, "must be a text backbone for task='retrieval'")
        if m.lora_rank:
            _fail("model.lora_rank", m.lora_rank, "is not supported with task='retrieval'; set 0")
        if m.head.pooling != "avg" or m.head.hidden_units:
            _fail("model.head.pooling", m.head.pooling,
                  "must be 'avg' with no hidden_units for task='retrieval' (mean pooling, "
                  "then L2 normalisation)")
        super().check_model_config(m, check_files)

    def load_data(self):
        from sft_keras.data.pairs import load_pair_data

        self.data = load_pair_data(self.config.data, self.config.seed)
        if len(self.data.validation.bank()) < 10:
            logging.warning("The validation bank holds %d replies: recall@k for k >= that is 1.",
                            len(self.data.validation.bank()))
        return self.data

    def read_examples(self, path, class_names=()):
        from sft_keras.data.pairs import read_pairs

        d = self.config.data
        return read_pairs(path, d.context_column, d.response_column, d.context_turns)

    def make_dataset(self, examples, cache=None):
        """Batches of `({context_*, response_*} tokens, [context_id, response_id])`.

        With `train.retrieval_hard_negatives=k`, also `negative_0_*`... tokens and
        their ids: the training split's mined ones (`_with_hard_negatives`), empty
        slots (id -1, left out of the loss) for any other split.
        """
        import numpy as np
        import tensorflow as tf

        from sft_keras.data.pipeline import TEXT_INPUTS, _to_int32

        c, preprocessor = self.config, self.preprocessor
        k = c.train.retrieval_hard_negatives
        if k and examples.negatives is None:
            data = getattr(self, "data", None)
            if data is not None and examples is data.train:
                examples = data.train = self._with_hard_negatives(examples)
            else:
                examples = dataclasses.replace(
                    examples, negatives=np.full((len(examples), k), "", dtype=object),
                    negative_ids=np.full((len(examples), k), -1, np.int32))

        def tokenize(contexts, responses, negatives, ids):
            tokens = {}
            sides = [("context", contexts), ("response", responses)] + [
                (f"negative_{i}", negatives[:, i]) for i in range(k)]
            for side, texts in sides:
                features = _to_int32(preprocessor(x=texts))
                tokens.update({f"{side}_{n}": features[n] for n in TEXT_INPUTS})
            return tokens, ids

        negatives = examples.negatives if k else np.full((len(examples), 0), "", dtype=object)
        ds = tf.data.Dataset.from_tensor_slices((
            examples.contexts.astype(str).tolist(), examples.responses.astype(str).tolist(),
            negatives.astype(str).reshape(len(examples), k), examples.labels))
        ds = ds.batch(1024).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True).unbatch()
        # A known length, as for text: Keras then stops evaluating at the last batch
        # instead of running into the end of the data ("Your input ran out of data").
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(examples)))
        if c.data.cache if cache is None else cache:
            ds = ds.cache()
        return ds.batch(c.train.batch_size).prefetch(tf.data.AUTOTUNE)

    def _with_hard_negatives(self, examples):
        """`examples` with `train.retrieval_hard_negatives` mined by the encoder as built."""
        from sft_keras.models.retrieval import build_encoder, mine_hard_negatives

        c, start = self.config, time.perf_counter()
        mined = mine_hard_negatives(build_encoder(self.build_model()), self.preprocessor,
                                    examples, c.train.retrieval_hard_negatives,
                                    batch_size=c.train.batch_size)
        logging.info("Mined %d hard negatives for %d training pairs (%d empty slots: too few "
                     "wrong replies) with the encoder before fine-tuning in %.1fs.",
                     int((mined.negative_ids >= 0).sum()), len(mined),
                     int((mined.negative_ids < 0).sum()), time.perf_counter() - start)
        return mined

    def build_model(self, num_classes=1, pretrained=True):
        from sft_keras import backbones
        from sft_keras.models.build import apply_freeze_config, freeze_unused_pooler
        from sft_keras.models.retrieval import build_dual_encoder

        c = self.config
        backbone = backbones.build_text_backbone(c.model.backbone, c.model.preset)
        backbones.make_preprocessor(self.tokenizer, c.data.sequence_length, backbone)  # Length.
        apply_freeze_config(backbone, c.model.freeze)
        freeze_unused_pooler(backbone, "avg")  # Mean pooling: the [CLS] pooler gets no gradient.
        return build_dual_encoder(backbone, c.data.sequence_length,
                                  name=f"{c.model.backbone}_retrieval",
                                  hard_negatives=c.train.retrieval_hard_negatives)

    def evaluate(self, model, dataset, examples, report_dir, training_log=None,
                 split="validation"):
        """recall@k and MRR against the bank of `examples`' replies, with the zero-shot
        encoder (rebuilt from `model.preset`) and BM25 (`write_retrieval_report`)."""
        from sft_keras.evaluation.retrieval import write_retrieval_report

        return write_retrieval_report(
            model, self.build_model(), self.preprocessor, examples, report_dir,
            dataset=dataset, training_log=training_log, batch_size=self.config.train.batch_size,
            split=split)

    def bank(self):
        """Every distinct response of the run's data (training, then validation)."""
        data = getattr(self, "data", None) or self.load_data()
        return list(dict.fromkeys(data.train.bank() + data.validation.bank()))

    def export(self, model, export_dir, class_names, task, info=None, version=None,
               overwrite=False):
        from sft_keras.serving.retrieval import export_retrieval_model

        return export_retrieval_model(
            model, self.preprocessor, export_dir, self.bank(), top_k=self.config.export.top_k,
            version=version, overwrite=overwrite, info=info,
            faiss_index=self.config.export.faiss_index)


MODALITIES.register(RetrievalModality.name, RetrievalModality)
