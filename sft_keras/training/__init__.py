"""Training: the loop (`loop`), its callbacks, optimizers and learning-rate recipes, and the
tf.distribute runtime (`distribute`).

`train_and_evaluate(config, workdir)` is the whole run: config -> data -> model -> fit ->
evaluate -> export.
"""

from sft_keras.training.loop import train_and_evaluate

__all__ = ["train_and_evaluate"]
