"""Images: `keras.applications` (and small_cnn) backbones on image folders, CSV manifests,
digits; exports take encoded image bytes."""

import os

from sft_keras.modalities.base import MODALITIES, Modality, PredictionInputs


class ImageModality(Modality):
    """Image runs: decoded, resized pixels in [0, 255]; the model holds the preprocessing.

    Example:

    >>> from sft_keras.config import get_default_config
    >>> config = get_default_config()
    >>> config.model.backbone, config.data.source = "small_cnn", "digits"
    >>> modality = ImageModality(config)
    >>> data = modality.load_data()
    >>> images, labels = next(iter(modality.make_dataset(data.validation)))
    >>> images.shape[1:], modality.build_model(10).output.shape
    (TensorShape([32, 32, 3]), (None, 10))
    """

    name = "image"

    @classmethod
    def sources(cls):
        from sft_keras.data.images import IMAGE_SOURCES

        return IMAGE_SOURCES

    @classmethod
    def check_data_config(cls, d):
        from sft_keras.config import FLIP_MODES, _fail, _fraction, _one_of

        size = tuple(d.image_size) if isinstance(d.image_size, (tuple, list)) else None
        if size is None or len(size) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 32 for s in size
        ):
            _fail("data.image_size", d.image_size,
                  "must be (height, width), each an integer >= 32")
        _one_of("data.augment.flip", d.augment.flip, FLIP_MODES)
        for key in ("rotation", "zoom"):
            _fraction(f"data.augment.{key}", d.augment[key])

    @classmethod
    def check_model_config(cls, m, check_files):
        from sft_keras.config import _fail, _one_of

        if m.backbone == "hub_image":
            if not m.preset:
                _fail("model.preset", m.preset, "must name a keras-hub image preset or a local "
                      "preset folder for model.backbone='hub_image'")
            if m.weights is not None:
                _fail("model.weights", m.weights, "is for keras.applications backbones; a "
                      "'hub_image' backbone takes its weights from model.preset")
        elif m.preset or m.preset_weights is not True:
            if not m.preset:
                _fail("model.preset_weights", m.preset_weights,
                      "is for model.backbone='hub_image'; use model.weights=None for random init")
            _fail("model.preset", m.preset, f"is for keras-hub backbones; model.backbone="
                  f"{m.backbone!r} takes model.weights (or use model.backbone='hub_image')")
        if m.weights not in (None, "imagenet"):
            if not isinstance(m.weights, str) or (check_files and not os.path.isfile(m.weights)):
                _fail("model.weights", m.weights,
                      "must be None, 'imagenet', or the path of an existing weights file")
            if not m.weights.endswith(".h5"):
                _fail("model.weights", m.weights, "must be a Keras weights file ending in .h5")
        _one_of("model.head.pooling", m.head.pooling, ("avg", "max", "flatten"))

    def load_data(self):
        from sft_keras.data import load_image_data

        return load_image_data(self.config.data, self.config.task, self.config.seed)

    def read_examples(self, path, class_names):
        from sft_keras.data import check_images_decode, read_csv_manifest, read_image_folder

        d, known = self.config.data, (list(class_names) or None)
        if os.path.isdir(path):
            examples = read_image_folder(path, known, d.skip_unknown_files)
        else:
            examples = read_csv_manifest(path, d.path_column, d.label_column, self.config.task,
                                         known, d.label_separator)
        if d.validate_images:
            check_images_decode(examples.images)
        return examples

    def make_dataset(self, examples, cache=None):
        from sft_keras.data import make_image_dataset

        c = self.config
        return make_image_dataset(
            examples, c.data.image_size, c.train.batch_size, task=c.task, training=False,
            cache=c.data.cache if cache is None else cache, shuffle_buffer=c.data.shuffle_buffer,
            seed=c.seed,
        )

    def build_model(self, num_classes, pretrained=True):
        from sft_keras.config import validate_config
        from sft_keras.models import build_image_model

        config = self.config
        if not pretrained and config.model.weights is not None:
            config = validate_config(config.to_dict(), check_files=False)
            config.model.weights = None  # A checkpoint will set every weight: no download.
        return build_image_model(config, num_classes, pretrained=pretrained)

    def export(self, model, export_dir, class_names, task, info=None, version=None,
               overwrite=False):
        from sft_keras.serving.export import export_image_model

        return export_image_model(model, export_dir, class_names, task,
                                  self.config.data.image_size, version=version,
                                  overwrite=overwrite, info=info,
                                  max_image_pixels=self.config.export.max_image_pixels)

    @classmethod
    def prediction_inputs(cls, info, input_path, text_column=None):
        import tensorflow as tf

        from sft_keras.serving.predict import list_images

        def feed(paths):
            return {"image_bytes": tf.constant([_read_bytes(p) for p in paths])}

        return PredictionInputs(items=list_images(input_path), feed=feed, show=lambda p: p)


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


MODALITIES.register(ImageModality.name, ImageModality)
