"""Text: keras-hub encoders on CSV/TSV/JSONL tables, text folders, TFDS, chatterbot;
tokenized in the tf.data pipeline; exports take raw strings."""

import os

from sft_keras.modalities.base import MODALITIES, Modality, PredictionInputs


class TextModality(Modality):
    """Text runs: the preset's tokenizer is loaded once, when the modality is made.

    A bad `model.preset` therefore fails before any data is read.

    Example:

    >>> import tempfile
    >>> from sft_keras.backbones import save_tiny_bert_preset
    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.model.backbone = "bert"
    >>> config.model.preset = save_tiny_bert_preset(
    ...     tempfile.mkdtemp(), ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hi"])
    >>> config.data.sequence_length = 8
    >>> modality = TextModality(config)
    >>> sorted(modality.build_model(3).input)
    ['padding_mask', 'segment_ids', 'token_ids']
    """

    name = "text"
    supports_lora = True

    @classmethod
    def sources(cls):
        from sft_keras.data.text import TEXT_SOURCES

        return TEXT_SOURCES

    @classmethod
    def check_data_config(cls, d):
        from sft_keras.config import _fail, _int_at_least

        columns = d.text_columns
        if isinstance(columns, str) or len(columns) not in (1, 2) or not all(
            isinstance(col, str) and col for col in columns
        ):
            _fail("data.text_columns", columns, "must be a tuple of one or two column names")
        if d.validation_text_columns and len(d.validation_text_columns) != len(columns):
            _fail("data.validation_text_columns", d.validation_text_columns,
                  f"must name as many columns as data.text_columns={tuple(columns)}")
        _int_at_least("data.sequence_length", d.sequence_length, 4)
        buckets = d.length_buckets
        if isinstance(buckets, (str, int)) or not all(
            isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in buckets
        ):
            _fail("data.length_buckets", buckets,
                  "must be a tuple of positive token counts, e.g. (16, 32, 64, 128), or () for off")
        _int_at_least("data.length_sort_window", d.length_sort_window, 1)

    @classmethod
    def check_model_config(cls, m, check_files):
        from sft_keras.config import _fail, _one_of

        if not m.preset:
            _fail("model.preset", m.preset, "must name a keras-hub preset or a local folder")
        if m.weights is not None:
            _fail("model.weights", m.weights, "is for image backbones; use model.preset for text")
        if m.preset_weights is not True:
            _fail("model.preset_weights", m.preset_weights, "is for model.backbone='hub_image'")
        _one_of("model.head.pooling", m.head.pooling, ("avg", "max", "cls"))

    def __init__(self, config):
        super().__init__(config)
        from sft_keras import backbones

        self.tokenizer = backbones.load_text_tokenizer(config.model.backbone, config.model.preset)
        self.preprocessor = backbones.make_preprocessor(self.tokenizer,
                                                        config.data.sequence_length)

    def load_data(self):
        from sft_keras.data import load_text_data

        return load_text_data(self.config.data, self.config.task, self.config.seed)

    def read_examples(self, path, class_names):
        from sft_keras.data import read_text_folder, read_text_table

        d, known = self.config.data, (list(class_names) or None)
        if os.path.isdir(path):
            return read_text_folder(path, known)
        return read_text_table(path, tuple(d.text_columns), d.label_column, self.config.task,
                               known, label_separator=d.label_separator)

    def make_dataset(self, examples, cache=None):
        from sft_keras.data import make_text_dataset

        c = self.config
        return make_text_dataset(
            examples, self.preprocessor, c.train.batch_size, task=c.task, training=False,
            cache=c.data.cache if cache is None else cache, shuffle_buffer=c.data.shuffle_buffer,
            seed=c.seed,
        )

    def build_model(self, num_classes, pretrained=True):
        # The preset holds the vocabulary as well as the weights: always read it.
        from sft_keras import backbones
        from sft_keras.models import build_text_model

        c = self.config
        backbone = backbones.build_text_backbone(c.model.backbone, c.model.preset,
                                                c.model.num_layers)
        backbones.make_preprocessor(self.tokenizer, c.data.sequence_length, backbone)  # Length.
        return build_text_model(c, backbone, num_classes)

    def export(self, model, export_dir, class_names, task, info=None, version=None,
               overwrite=False):
        from sft_keras.serving.export import export_text_model

        from sft_keras.serving.export import read_export_info

        columns = list(self.config.data.text_columns)
        path = export_text_model(
            model, self.preprocessor, export_dir, class_names, task,
            num_texts=2 if len(columns) == 2 else 1, version=version, overwrite=overwrite,
            info={"text_columns": columns, **(info or {})},
        )
        if read_export_info(path).get("requires_tensorflow_text"):  # Said by sft-train/export.
            print(f"Note: the export {path} needs tensorflow-text ops in serving_default "
                  f"({self.tokenizer.__class__.__name__}): `import tensorflow_text` before "
                  f"tf.saved_model.load, and TF Serving 2.20 or later; serve_tokens needs "
                  f"none (see export_info.json).", flush=True)
        return path

    @classmethod
    def prediction_inputs(cls, info, input_path, text_column=None):
        import tensorflow as tf

        from sft_keras.errors import DataError
        from sft_keras.serving.predict import read_texts

        names = list(info["inputs"]["serving_default"])  # ["text"] or ["text", "text_pair"]
        columns = (tuple(c.strip() for c in text_column.split(",")) if text_column
                   else tuple(info.get("text_columns") or ("text",)))
        if len(columns) != len(names):
            raise DataError(f"The model takes {len(names)} text(s) per example ({names}); "
                            f"--text_column names {len(columns)}. Received: {text_column!r}")

        def feed(batch):
            return {n: tf.constant([t[i] for t in batch]) for i, n in enumerate(names)}

        return PredictionInputs(items=read_texts(input_path, columns), feed=feed,
                                show=lambda t: t[0] if len(t) == 1 else list(t))


MODALITIES.register(TextModality.name, TextModality)
