"""sft_keras: supervised fine-tuning of pretrained models with Keras 3 on TensorFlow.

The spine: config -> data -> model (backbone, freezing, head) -> fit ->
evaluate -> export. Each step is one public function:

- `get_default_config()` / `validate_config()`  (sft_keras.config)
- `load_image_data()`, `make_image_dataset()`   (sft_keras.data)
- `build_image_model()`                          (sft_keras.models)
- `set_trainable()`, `trainable_summary()`       (sft_keras.models.freezing)
- `train_and_evaluate()`                         (sft_keras.training.loop)
- `export_image_model()`                         (sft_keras.serving.export)
- `load_run()`: a finished run from its workdir  (sft_keras.run)

Text (keras-hub BERT encoders), serving and recipes:

- `save_tiny_bert_preset()`, `build_text_backbone()`, `load_text_tokenizer()`,
  `make_preprocessor()`                          (sft_keras.backbones)
- `load_text_data()`, `make_text_dataset()`      (sft_keras.data)
- `build_text_model()`                           (sft_keras.models)
- `enable_lora()`, `merge_lora()`                (sft_keras.models.lora)
- `export_text_model()`                          (sft_keras.serving.export)
- `CoreBertTokenizer`: WordPiece in core TF ops  (sft_keras.serving.core_tokenizer)
- `write_report()`                               (sft_keras.evaluation.report)
- `build_optimizer()`, `resolve_recipe()`: the backbone's default recipe
                                                 (sft_keras.training.optimizers)
- `get_strategy()`                               (sft_keras.training.distribute)
- `parse_stages()`: staged unfreezing            (sft_keras.models.freezing)
- `run_tune()`: a grid of trials                 (sft_keras.tune)
"""

__version__ = "0.2.0"

from sft_keras.config import get_default_config, validate_config  # noqa: E402
from sft_keras.errors import ConfigError, DataError, ExportError, SftError, WeightsError  # noqa: E402


def __getattr__(name):
    # Heavy modules (TensorFlow) load on first use, so `import sft_keras` is cheap.
    lazy = {
        "load_image_data": "sft_keras.data",
        "make_image_dataset": "sft_keras.data",
        "build_image_model": "sft_keras.models",
        "build_image_backbone": "sft_keras.backbones",
        "set_trainable": "sft_keras.models.freezing",
        "trainable_summary": "sft_keras.models.freezing",
        "train_and_evaluate": "sft_keras.training",
        "export_image_model": "sft_keras.serving.export",
        "load_run": "sft_keras.run",
        # Text, serving and recipes.
        "save_tiny_bert_preset": "sft_keras.backbones",
        "build_text_backbone": "sft_keras.backbones",
        "load_text_tokenizer": "sft_keras.backbones",
        "make_preprocessor": "sft_keras.backbones",
        "load_text_data": "sft_keras.data",
        "make_text_dataset": "sft_keras.data",
        "build_text_model": "sft_keras.models",
        "enable_lora": "sft_keras.models.lora",
        "merge_lora": "sft_keras.models.lora",
        "export_text_model": "sft_keras.serving.export",
        "CoreBertTokenizer": "sft_keras.serving.core_tokenizer",
        "write_report": "sft_keras.evaluation.report",
        "build_optimizer": "sft_keras.training.optimizers",
        "resolve_recipe": "sft_keras.training.optimizers",
        "get_strategy": "sft_keras.training.distribute",
        "parse_stages": "sft_keras.models.freezing",
        "run_tune": "sft_keras.tune",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'sft_keras' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DataError",
    "ExportError",
    "SftError",
    "WeightsError",
    "CoreBertTokenizer",
    "build_image_backbone",
    "build_image_model",
    "build_optimizer",
    "build_text_backbone",
    "build_text_model",
    "enable_lora",
    "export_image_model",
    "export_text_model",
    "get_default_config",
    "get_strategy",
    "load_image_data",
    "load_run",
    "load_text_data",
    "load_text_tokenizer",
    "make_image_dataset",
    "make_preprocessor",
    "make_text_dataset",
    "merge_lora",
    "parse_stages",
    "resolve_recipe",
    "run_tune",
    "save_tiny_bert_preset",
    "set_trainable",
    "train_and_evaluate",
    "trainable_summary",
    "validate_config",
    "write_report",
]
