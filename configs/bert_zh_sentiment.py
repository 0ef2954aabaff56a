"""Chinese sentiment with BERT: AdamW, early stopping, and a per-class report.

keras-hub's `bert_base_zh` preset (Chinese characters are tokenized one by
one), mean pooling, Dense(2, softmax); AdamW with weight decay; early stopping
on validation loss, best weights restored; `classification_report.txt` in the
workdir at the end. Data: a CSV/TSV/JSONL file with a text column and a
label column (e.g. ChnSentiCorp: `label<TAB>text_a`).

Run (online, or with a local preset/checkpoint folder):

    sft-train --config=configs/bert_zh_sentiment.py --workdir=/tmp/bert_zh \\
        --config.data.path=/path/to/train.tsv --config.data.validation_path=/path/to/dev.tsv

Offline: `--config.model.preset=/path/to/bert-base-chinese` (a Hugging Face
checkpoint folder: config.json, model.safetensors, vocab.txt).

Expected: not measured here (no Chinese checkpoint offline).
"""

from sft_keras.config import get_default_config


def get_config(arg=None):
    config = get_default_config()
    config.data.source = "text_file"
    config.data.text_columns = ("text_a",)
    config.data.label_column = "label"
    config.data.sequence_length = 128
    config.model.backbone = "bert"
    config.model.preset = "bert_base_zh"
    config.model.head.pooling = "avg"
    config.model.head.dropout = 0.1
    config.train.optimizer = "adamw"
    config.train.learning_rate = 3e-5
    config.train.weight_decay = 0.01
    # The recipe these figures were measured with (the text default: linear, 10% warmup).
    config.train.schedule = "constant"
    config.train.warmup_fraction = 0.0
    config.train.epochs = 4
    config.train.early_stopping_patience = 2
    config.train.monitor = "val_loss"
    return config
