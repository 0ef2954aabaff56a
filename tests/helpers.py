"""The tests' tiny inputs, in one place: paths, a tiny BERT preset, generated data, tiny runs.

Plain functions (pytest fixtures built on them are in conftest.py). Every test folder imports
this as `helpers` (`pythonpath = tests` in setup.cfg), so a test does not import another test
module, and nothing here depends on where the importing test file lives.

- `REPO_ROOT`, `SHARED_DIR`: the checkout, and the `shared/` folder next to it.
- `run_cli(args)`: a command in a fresh process (`"python"` is this interpreter).
- `load_config_file(path, *args)`: a config file's `get_config(*args)` (see configs/).
- `VOCAB`, `write_tiny_bert_preset(path)`: a random-init 2-layer BERT preset whose
  vocabulary holds every word of the generated texts.
- `write_tiny_hf_roberta(path)`: a random-init RoBERTa as a Hugging Face checkpoint folder.
- `write_tiny_text_preset(path, family)`: the same for any text family: a tiny WordPiece
  (bert, distil_bert, electra), byte-level BPE (roberta) or SentencePiece (xlm_roberta,
  deberta_v3; trained on the generated English and Chinese texts) tokenizer.
- `write_tiny_hub_image_preset(path)`: a random-init 2-stack keras-hub ResNet image preset.
- `make_pattern_image`, `write_image_folder`: a learnable 3-class image folder.
- `write_sentiment_csv`, `write_tagged_csv`: a binary (neg/pos) and a multilabel text CSV
  (`write_sentiment_csv(..., language="zh")`: Chinese, no spaces).
- `train_image_run`, `train_text_run`: finished tiny runs (a workdir as sft-train leaves it).
- `CHAT_VOCAB`, `write_chat_pairs`, `chat_config`: a learnable toy chatbot (each question names
  a key word; its reply is the word that key maps to) as (context, response) CSV or chat JSONL,
  and a tiny `task='retrieval'` config on it.
"""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")


def run_cli(args, cwd=REPO_ROOT, timeout=600, env=None, input=None):
    """Runs a command in a fresh process; returns the CompletedProcess (text output).

    `input`: str or None, fed to its stdin."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CI="1")
    full_env.update(env or {})
    if args[0] == "python":
        args = [sys.executable, *args[1:]]
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, input=input)


def load_config_file(path, *args):
    """Imports a config file from its path and returns its `get_config(*args)`."""
    name = "config_under_test_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


# --- A tiny BERT ----------------------------------------------------------------

# Token ids are positions here: [PAD] 0, [CLS] 2, [SEP] 3, "the" 5 ... "." 20.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad",
         "great", "awful", "a", "film", "plot", "fine", "terrible", "really", "very", "and", "."]


def write_tiny_bert_preset(path, vocabulary=VOCAB, **sizes):
    """`sft_keras.backbones.save_tiny_bert_preset` with `VOCAB`; `sizes` such as hidden_dim=32."""
    from sft_keras.backbones import save_tiny_bert_preset

    return save_tiny_bert_preset(str(path), vocabulary, **sizes)


def byte_level_bpe(words):
    """A tiny byte-level BPE vocabulary and merges that spell each of `words` as one token.

    As in GPT-2/RoBERTa, each of the 256 bytes is a token (printable characters stand for
    bytes; a space is "Ġ"), so any text tokenizes (Chinese into byte tokens); each word,
    alone or after a space, is built left to right by merges into one token.
    """
    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    for byte in range(256):  # GPT-2's bytes_to_unicode().
        vocab.setdefault(chr(byte if byte in printable else next(shifted)), len(vocab))
    merges = []  # Words after a space first: their merges must outrank the plain words'.
    for piece in [*("Ġ" + word for word in words), *words]:
        for i in range(2, len(piece) + 1):
            if f"{piece[:i - 1]} {piece[i - 1]}" not in merges:
                merges.append(f"{piece[:i - 1]} {piece[i - 1]}")
            vocab.setdefault(piece[:i], len(vocab))
    return vocab, merges


def sentence_piece_proto(texts, special=("<unk>", "<s>", "</s>"), user_symbols=()):
    """A tiny unigram SentencePiece model trained on `texts` (serialized proto bytes).

    `special` are the unknown, start and end pieces at ids 0, 1, 2 (XLM-R's layout);
    `user_symbols` are extra whole pieces (DeBERTaV3's [PAD], [MASK]).
    """
    import io

    import sentencepiece

    model = io.BytesIO()
    unk, bos, eos = special
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=400, hard_vocab_limit=False,
        model_type="unigram", character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        unk_piece=unk, bos_piece=bos, eos_piece=eos, user_defined_symbols=list(user_symbols),
        minloglevel=2)
    return model.getvalue()


def tiny_tokenizer(family):
    """A keras-hub tokenizer of `family` that covers every word of the generated texts."""
    import keras_hub

    words = VOCAB[5:]
    if family in ("bert", "distil_bert", "electra"):
        cls = {"bert": keras_hub.models.BertTokenizer,
               "distil_bert": keras_hub.models.DistilBertTokenizer,
               "electra": keras_hub.models.ElectraTokenizer}[family]
        return cls(vocabulary=list(VOCAB), lowercase=True)
    if family == "roberta":
        vocabulary, merges = byte_level_bpe(words)
        return keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges)
    # Trained on space-separated words, so that its pieces are whole words (a real
    # model's corpus is large enough for that); unspaced Chinese then splits into them.
    rng = np.random.RandomState(0)
    vocabulary = words + [w for group in WORDS_ZH.values() for w in group]
    texts = [" ".join(rng.choice(vocabulary, size=6)) for _ in range(400)]
    if family == "xlm_roberta":
        return keras_hub.models.XLMRobertaTokenizer(proto=sentence_piece_proto(texts))
    if family == "deberta_v3":
        return keras_hub.models.DebertaV3Tokenizer(proto=sentence_piece_proto(
            texts, special=("[UNK]", "[CLS]", "[SEP]"), user_symbols=("[PAD]", "[MASK]")))
    raise ValueError(f"No tiny tokenizer for {family!r}")


def write_tiny_text_preset(path, family, **sizes):
    """A random-init 2-layer preset of text `family` with `tiny_tokenizer(family)`."""
    from sft_keras.backbones import save_tiny_text_preset

    return save_tiny_text_preset(str(path), family, tiny_tokenizer(family), **sizes)


def write_tiny_hf_roberta(path, hidden_dim=16, num_layers=1, intermediate_dim=32,
                          max_sequence_length=32, seed=0):
    """A random-init RoBERTa in Hugging Face's checkpoint layout (config.json,
    model.safetensors with `roberta.*` names, vocab.json, merges.txt), for keras-hub to convert.

    Returns the word embedding matrix written, to check that the weights came through.
    """
    from safetensors.numpy import save_file

    os.makedirs(path, exist_ok=True)
    vocabulary, merges = byte_level_bpe(VOCAB[5:])
    h, i_dim, rng = hidden_dim, intermediate_dim, np.random.RandomState(seed)

    def weight(*shape):
        return rng.normal(0, 0.02, shape).astype(np.float32)

    tensors = {"roberta.embeddings.word_embeddings.weight": weight(len(vocabulary), h),
               "roberta.embeddings.position_embeddings.weight": weight(max_sequence_length + 2, h),
               "roberta.embeddings.LayerNorm.weight": np.ones(h, np.float32),
               "roberta.embeddings.LayerNorm.bias": np.zeros(h, np.float32)}
    for index in range(num_layers):
        prefix = f"roberta.encoder.layer.{index}"
        shapes = {"attention.self.query": (h, h), "attention.self.key": (h, h),
                  "attention.self.value": (h, h), "attention.output.dense": (h, h),
                  "intermediate.dense": (i_dim, h), "output.dense": (h, i_dim)}
        for name, shape in shapes.items():
            tensors[f"{prefix}.{name}.weight"] = weight(*shape)
            tensors[f"{prefix}.{name}.bias"] = weight(shape[0])
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[f"{prefix}.{norm}.weight"] = np.ones(h, np.float32)
            tensors[f"{prefix}.{norm}.bias"] = np.zeros(h, np.float32)
    save_file(tensors, os.path.join(path, "model.safetensors"))
    config = {"model_type": "roberta", "architectures": ["RobertaModel"],
              "vocab_size": len(vocabulary), "hidden_size": h, "num_hidden_layers": num_layers,
              "num_attention_heads": 2, "intermediate_size": i_dim, "hidden_dropout_prob": 0.1,
              "max_position_embeddings": max_sequence_length + 2}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "vocab.json"), "w") as f:
        json.dump(vocabulary, f)
    with open(os.path.join(path, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return tensors["roberta.embeddings.word_embeddings.weight"]


# --- Generated images -----------------------------------------------------------


def write_tiny_hub_image_preset(path, image_size=32, num_classes=3):
    """A randomly initialised 2-stack keras-hub ResNet image classifier preset (~90k parameters).

    Saved with `save_to_preset`, image converter included (scale 1/255), as a
    real keras-hub image preset folder is; for `model.backbone="hub_image"`.
    """
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    converter = keras_hub.layers.ResNetImageConverter(image_size=(image_size, image_size),
                                                      scale=1 / 255.0)
    classifier = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=num_classes,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter))
    classifier.save_to_preset(str(path))
    return str(path)


def make_pattern_image(class_index, size=32, seed=0):
    """A learnable 3-class image: a bright bar whose orientation is the class, plus noise."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 60, (size, size, 3)).astype(np.uint8)
    third = size // 3
    if class_index == 0:
        image[third : 2 * third, :, :] = 230  # Horizontal bar.
    elif class_index == 1:
        image[:, third : 2 * third, :] = 230  # Vertical bar.
    else:
        image[np.arange(size), np.arange(size), :] = 230  # Diagonal line.
        image[np.arange(size - 1), np.arange(1, size), :] = 230
    return image


def write_image_folder(root, class_names=("horizontal", "vertical", "diagonal"), per_class=12,
                       size=32, fmt="png"):
    """Writes a class-per-subfolder image dataset of `make_pattern_image` images."""
    import tensorflow as tf

    root = str(root)
    for c, name in enumerate(class_names):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            image = make_pattern_image(c % 3, size=size, seed=1000 * c + i)
            encoded = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image)
            with open(os.path.join(root, name, f"{i:03d}.{fmt}"), "wb") as f:
                f.write(encoded.numpy())
    return root


# --- Generated texts (every word is in VOCAB) -----------------------------------

POSITIVE = ["good", "great", "fine"]
NEGATIVE = ["bad", "awful", "terrible"]
FILLER = ["the", "movie", "was", "a", "film", "plot", "really", "very", "and"]


# The same in Chinese: words are joined without spaces.
WORDS_ZH = {"positive": ["好", "很棒", "精彩"], "negative": ["差", "糟糕", "无聊"],
            "filler": ["这部", "电影", "剧情", "真的", "非常", "演员", "故事"]}


def write_sentiment_rows(n, seed=0, language="en", pairs=False):
    """`(text, other, label)` rows: the label (neg/pos) is set by one sentiment word among
    filler words; `other` is filler only (a second text column for pair tasks), None
    without `pairs`."""
    words_of = {"en": {"positive": POSITIVE, "negative": NEGATIVE, "filler": FILLER},
                "zh": WORDS_ZH}[language]
    join = " ".join if language == "en" else "".join
    rng = np.random.RandomState(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(words_of["filler"], size=5))
        words.insert(rng.randint(0, 6),
                     rng.choice(words_of["positive"] if label else words_of["negative"]))
        other = join(rng.choice(words_of["filler"], size=3)) if pairs else None
        rows.append((join(words), other, ["neg", "pos"][label]))
    return rows


def write_sentiment_csv(path, n=96, seed=0, pairs=False, language="en"):
    """Sentences whose label (neg/pos) is set by one sentiment word among filler words.

    Columns `text,label`, or `text,other,label` with `pairs`; `language` `"en"`
    (words of `VOCAB`) or `"zh"` (Chinese, no spaces).
    """
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "other", "label"] if pairs else ["text", "label"])
        for text, other, label in write_sentiment_rows(n, seed, language, pairs):
            writer.writerow([text, other, label] if pairs else [text, label])
    return str(path)


TAG_TRIGGERS = {"good": "positive", "bad": "negative", "film": "cinema"}  # Word -> label.
TAG_FILLER = ["the", "a", "was", "plot", "very", "and"]


def write_tagged_csv(path, n=96, seed=0):
    """Columns `text,tags`: each text holds 1-3 trigger words among filler; its tags (joined
    by '|') are the triggers' labels."""
    rng = np.random.RandomState(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "tags"])
        for _ in range(n):
            words = [w for w in TAG_TRIGGERS if rng.rand() < 0.5] or [rng.choice(list(TAG_TRIGGERS))]
            labels = [TAG_TRIGGERS[w] for w in words]
            words = words + list(rng.choice(TAG_FILLER, size=5))
            rng.shuffle(words)
            writer.writerow([" ".join(words), "|".join(labels)])
    return str(path)


# --- Tiny finished runs ---------------------------------------------------------


def train_image_run(root, epochs=2):
    """Trains small_cnn on 32x32 generated images (3 classes); returns (workdir, image folder)."""
    from sft_keras.config import validate_config
    from sft_keras.training import train_and_evaluate

    images = write_image_folder(os.path.join(root, "images"), per_class=8)
    config = validate_config({
        "data": {"source": "image_folder", "path": images, "validation_split": 0.25,
                 "image_size": (32, 32)},
        "model": {"backbone": "small_cnn"},
        "train": {"epochs": epochs, "batch_size": 8, "early_stopping_patience": 0},
    })
    workdir = os.path.join(root, "image_run")
    train_and_evaluate(config, workdir)
    return workdir, images


def train_text_run(root, epochs=1, sequence_length=16):
    """Trains a 2-layer tiny BERT on a generated sentiment CSV; returns (workdir, csv path)."""
    from sft_keras.config import validate_config
    from sft_keras.training import train_and_evaluate

    preset = write_tiny_bert_preset(os.path.join(root, "tiny_bert"), hidden_dim=32,
                                    intermediate_dim=64)
    csv_path = write_sentiment_csv(os.path.join(root, "train.csv"), n=48)
    config = validate_config({
        "data": {"source": "text_file", "path": csv_path, "sequence_length": sequence_length,
                 "validation_split": 0.25},
        "model": {"backbone": "bert", "preset": preset},
        "train": {"epochs": epochs, "batch_size": 16, "learning_rate": 3e-3,
                  "early_stopping_patience": 0},
    })
    workdir = os.path.join(root, "text_run")
    train_and_evaluate(config, workdir)
    return workdir, csv_path


# --- A toy chatbot (task='retrieval') ----------------------------------------------

CHAT_KEYS = {"cat": "meow", "dog": "woof", "sun": "hot", "rain": "wet", "tea": "cup",
             "code": "bug", "song": "tune", "book": "page"}  # Key word in a question -> reply.
CHAT_FILLER = ["i", "like", "the", "a", "my", "about", "tell", "me", "what", "is", "your", "so"]
CHAT_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(CHAT_KEYS)
              + list(CHAT_KEYS.values()) + CHAT_FILLER)


def write_chat_pairs(path, n=96, seed=0, fmt="csv"):
    """Writes n distinct toy questions and their replies; returns the path.

    `fmt="csv"`: columns `question,answer`; `fmt="chat"`: chat JSON lines, one
    user/assistant exchange per line.
    """
    import json

    rng = np.random.default_rng(seed)
    keys, rows, seen = list(CHAT_KEYS), [], set()
    while len(rows) < n:
        key = keys[len(rows) % len(keys)]
        words = list(rng.choice(CHAT_FILLER, size=3)) + [key]
        question = " ".join(rng.permutation(words))
        if question not in seen:
            seen.add(question)
            rows.append((question, CHAT_KEYS[key]))
    with open(path, "w", encoding="utf-8", newline="") as f:
        if fmt == "chat":
            for question, answer in rows:
                f.write(json.dumps({"messages": [{"role": "user", "content": question},
                                                 {"role": "assistant", "content": answer}]}) + "\n")
        else:
            writer = csv.writer(f)
            writer.writerow(["question", "answer"])
            writer.writerows(rows)
    return path


def chat_config(root, epochs=6, fmt="csv", **data):
    """A validated tiny `task='retrieval'` config on `write_chat_pairs` data in `root`."""
    from sft_keras.config import validate_config

    preset = write_tiny_bert_preset(os.path.join(root, "tiny_chat_bert"), CHAT_VOCAB,
                                    hidden_dim=32, intermediate_dim=64)
    path = write_chat_pairs(os.path.join(root, "chat.jsonl" if fmt == "chat" else "chat.csv"),
                            fmt=fmt)
    return validate_config({
        "task": "retrieval",
        "data": {"source": "text_file", "path": path, "context_column": "question",
                 "response_column": "answer", "sequence_length": 12,
                 "validation_split": 0.25, **data},
        "model": {"backbone": "bert", "preset": preset},
        "train": {"epochs": epochs, "batch_size": 16, "learning_rate": 3e-3,
                  "early_stopping_patience": 0, "retrieval_scale": 10.0},
        "export": {"top_k": 3},
    })
