"""sft_keras: supervised fine-tuning of pretrained models with Keras 3 on TensorFlow.

The spine: config -> data -> model (backbone, freezing, head) -> fit ->
evaluate -> export. Each step is one public function:

- `get_default_config()` / `validate_config()`  (sft_keras.config)
- `load_image_data()`, `make_image_dataset()`   (sft_keras.data)
- `build_image_model()`                          (sft_keras.models)
- `set_trainable()`, `trainable_summary()`       (sft_keras.freezing)
- `train_and_evaluate()`                         (sft_keras.train)
- `export_image_model()`                         (sft_keras.export)
- `load_run()`: a finished run from its workdir  (sft_keras.workdir)
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
        "set_trainable": "sft_keras.freezing",
        "trainable_summary": "sft_keras.freezing",
        "train_and_evaluate": "sft_keras.train",
        "export_image_model": "sft_keras.export",
        "load_run": "sft_keras.workdir",
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
    "build_image_backbone",
    "build_image_model",
    "export_image_model",
    "get_default_config",
    "load_image_data",
    "load_run",
    "make_image_dataset",
    "set_trainable",
    "train_and_evaluate",
    "trainable_summary",
    "validate_config",
]
