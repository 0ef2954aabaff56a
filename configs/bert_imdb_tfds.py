"""BERT sentiment on IMDb reviews from TFDS, with a linear head on the [CLS] output.

The seed recipe "BERT + linear head for sentiment": keras-hub's
`bert_base_en_uncased` preset, pooled [CLS] output -> Dense(1, sigmoid)
(binary task), AdamW with weight decay, early stopping on validation accuracy.
Data: TFDS `imdb_reviews` (25,000 train / 25,000 test reviews), read from
`data.tfds_data_dir`; the test split is the validation split.

Run (online, or with the dataset prepared and the preset available locally):

    sft-train --config=configs/bert_imdb_tfds.py --workdir=/tmp/bert_imdb \\
        --config.data.tfds_data_dir=~/tensorflow_datasets --config.data.tfds_download=True

Offline: prepare the data elsewhere (`tfds build imdb_reviews --data_dir=DIR`),
copy DIR here and pass `--config.data.tfds_data_dir=DIR`; pass a local preset
or Hugging Face checkpoint folder with `--config.model.preset=/path/to/bert`.
Without them this config fails within seconds with a message saying so.

Expected: not measured here (no network for the preset or the data; BERT-base
is too slow to fine-tune on 2 CPU cores). `:runlocal` trains on 2,000 reviews
for 1 epoch at sequence length 128.
"""

from sft_keras.config import get_default_config


def get_config(arg=None):
    config = get_default_config()
    config.task = "binary"
    config.data.source = "tfds"
    config.data.tfds_name = "imdb_reviews"
    config.data.tfds_train_split = "train"
    config.data.tfds_validation_split = "test"
    config.data.text_columns = ("text",)
    config.data.label_column = "label"
    config.data.sequence_length = 256
    config.model.backbone = "bert"
    config.model.preset = "bert_base_en_uncased"
    config.model.head.pooling = "cls"
    config.model.head.dropout = 0.1
    config.train.optimizer = "adamw"
    config.train.learning_rate = 2e-5
    config.train.weight_decay = 0.01
    # The recipe these figures were measured with (the text default: linear, 10% warmup).
    config.train.schedule = "constant"
    config.train.warmup_fraction = 0.0
    config.train.batch_size = 32
    config.train.epochs = 3
    config.train.early_stopping_patience = 1
    config.train.monitor = "val_accuracy"
    if arg == "runlocal":
        config.data.max_train_examples = 2000
        config.data.sequence_length = 128
        config.train.epochs = 1
    return config
