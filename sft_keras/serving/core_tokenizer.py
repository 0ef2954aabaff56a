"""A BERT WordPiece tokenizer and packer built only from core TensorFlow ops.

`CoreBertTokenizer` reproduces the token ids of keras-hub's
`keras_hub.models.BertTokenizer` (TensorFlow path, i.e. what `tf.data` and
`tf.function` run, which is how models are trained) and the packed outputs of
`keras_hub.models.BertTextClassifierPreprocessor`, using only `tf.strings`,
`tf.lookup`, `tf.ragged` and `tf.while_loop`. No `tensorflow_text` op and no
`tf.py_function` ends up in the graph, so a SavedModel holding it loads and
runs where `tensorflow_text` cannot be imported (TF Serving without custom
ops, a plain `tensorflow` install).

The pipeline mirrors keras-hub's `pretokenize` + `FastWordpieceTokenizer`:

1. `strip_accents`: each character is replaced by its canonical decomposition
   (NFD; a lookup table, see below), then `\\p{Mn}` is removed with the same
   RE2 regex keras-hub uses.
2. Split on the same RE2 classes as keras-hub: ASCII whitespace (RE2 `\\s`),
   `\\p{Cc}` and `\\p{Cf}` are dropped; ASCII non-alphanumerics, `\\p{P}` and,
   with `split_on_cjk`, the CJK ideograph ranges of the original BERT are kept
   as one-character words. Like `tf_text.regex_split` (C strings), text from
   the first NUL character on is ignored. keras-hub also surrounds CJK characters with spaces
   *before* NFD; that step is redundant because NFD maps no CJK character
   outside those ranges and no other character into them (checked against
   Python's Unicode data).
3. `lowercase`: each word is NFKC-casefolded (`tf_text.case_fold_utf8`): ASCII
   with `tf.strings.lower`, other characters with a per-character lookup table
   (NFKC + full case folding, default-ignorable characters deleted), then
   adjacent characters are canonically composed with a pair table (this is
   what turns half-width "ｶﾞ" into "ガ", conjoining Hangul jamo into
   syllables, or a two-part Indic vowel typed as two characters into one).
4. Greedy longest-match-first WordPiece, vectorized over every word of the
   batch in a `tf.while_loop`; non-initial pieces get the suffix indicator
   ("##"); a word with no match at some position, or longer than 100 UTF-8
   bytes, is a single unknown token; an empty word (e.g. only U+3164 HANGUL
   FILLER, which case folding deletes) gives no token.

Unicode data. The tables are computed with Python's `unicodedata` (Unicode
14.0 on Python 3.11) and only hold characters whose mapping is not the
identity (ASCII is never in them). tensorflow-text 2.21 normalizes with a newer
ICU (Unicode 16.0), so for the ~145 characters assigned after Unicode 14 that
normalize non-trivially (e.g. U+A7CB, U+1CCD6..., U+1E030..., U+11383) the
Unicode 16.0 mappings are embedded below and used where the running Python
does not know the character. With these, every code point (all 1.1M, alone
and between other characters, in all four lowercase/strip_accents settings)
pre-tokenizes to exactly keras-hub's words; the test suite re-checks planes
0, 1 and 14 fully and planes 2-3 (CJK ideographs) in part; the rest are
unassigned or private use.

Known divergences. Per-character normalization plus adjacent-pair composition
equals whole-string NFD / NFKC_Casefold except for these inputs, all of which
need several combining marks in a row (not produced by ordinary text):

- Canonical reordering is not applied. With `strip_accents=True` it only
  matters for two adjacent non-spacing marks that are not `Mn` (e.g. the
  musical symbols U+1D165/U+1D16D), or, with `lowercase=True`, when a
  character whose case folding ends in a combining mark (e.g. U+00A8 DIAERESIS
  -> " \\u0308") is followed by one whose folding starts with one of a lower
  combining class (U+FF9E HALFWIDTH VOICED SOUND MARK -> U+3099).
- Composition only joins adjacent characters (left to right, repeated until
  nothing composes), not a starter with a mark separated from it by another
  mark of a different combining class. With `strip_accents=True` all `Mn`
  marks are gone before composition, so this cannot arise from normal text;
  with `lowercase=True, strip_accents=False` (not a BERT configuration) text
  like "a\\u0302\\u0323" (marks out of canonical order) keeps a mark separate.
- Input must be valid UTF-8; invalid bytes in non-ASCII strings are replaced
  with U+FFFD (keras-hub's ops fail or differ on such input).

`lowercase=False, strip_accents=False` (cased BERT) involves no Unicode
normalization and matches exactly.

The reference is keras-hub's TensorFlow path. keras-hub 0.32's plain eager
call runs a pure-Python re-implementation instead, which agrees with it (and
so with this module) except on text containing NUL (Python path: a separator)
and on characters newer than the running Python's Unicode data.

Table sizes (entries, all non-identity): WordPiece vocabulary; with
`strip_accents`, NFD: ~2.1k (~13.3k without `lowercase`: Hangul syllables
must then stay decomposed); with `lowercase`, case folding: ~8.7k (~10.5k
without `strip_accents`) and compositions: ~12.1k (11.2k of them Hangul).
"""

import functools
import os
import re
import unicodedata

import tensorflow as tf

__all__ = ["CoreBertTokenizer", "pack_inputs", "pack_input_pairs"]

# The RE2 patterns of keras-hub's `word_piece_tokenizer.py`.
WHITESPACE_REGEX = r"\s|\p{Cc}|\p{Cf}"
PUNCTUATION_REGEX = r"[!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]"
CJK_REGEX = (r"[\x{4E00}-\x{9FFF}]|[\x{3400}-\x{4DBF}]|[\x{20000}-\x{2A6DF}]|"
             r"[\x{2A700}-\x{2B73F}]|[\x{2B740}-\x{2B81F}]|[\x{2B820}-\x{2CEAF}]|"
             r"[\x{F900}-\x{FAFF}]|[\x{2F800}-\x{2FA1F}]")

# `tf_text.FastWordpieceTokenizer`'s default `max_bytes_per_word`.
MAX_BYTES_PER_WORD = 100

# Table lookups return this for "no mapping"; it is not valid UTF-8, so no
# real mapping can equal it.
_MISSING = b"\xff"

# Unicode 16.0 data (tensorflow-text 2.21's ICU) for characters assigned after
# Unicode 14.0, used only where the running Python's `unicodedata` reports the
# character as unassigned. Canonical decompositions, "cp:cp cp ...":
_NEW_NFD = (
    "105C9:105D2 307,105E4:105DA 307,11383:11382 113C9,11385:11384 113BB,"
    "1138E:1138B 113C2,11391:11390 113C9,113C5:113C2 113C2,113C7:113C2 113B8,"
    "113C8:113C2 113C9,16121:1611E 1611E,16122:1611E 16129,16123:1611E 1611F,"
    "16124:16129 1611F,16125:1611E 16120,16126:1611E 1611E 1611F,"
    "16127:1611E 16129 1611F,16128:1611E 1611E 16120,16D68:16D67 16D67,"
    "16D69:16D63 16D67,16D6A:16D63 16D67 16D67")
# NFKC_Casefold mappings to one character; "first-last:target" maps the range
# onto consecutive targets.
_NEW_CASEFOLD = (
    "1C89:1C8A,A7CB:264,A7CC:A7CD,A7DA:A7DB,A7DC:19B,10D50-10D65:10D70,"
    "1CCD6-1CCEF:61,1CCF0-1CCF9:30,1E030-1E038:430,1E039-1E03B:43A,"
    "1E03C-1E046:43E,1E047:44B,1E048-1E049:44D,1E04A:A689,1E04B:4D9,1E04C:456,"
    "1E04D:458,1E04E:4E9,1E04F:4AF,1E050:4CF,1E051-1E059:430,1E05A-1E05B:43A,"
    "1E05C-1E05D:43E,1E05E:441,1E05F-1E064:443,1E065-1E066:44A,1E067:491,"
    "1E068:456,1E069:455,1E06A:45F,1E06B:4AB,1E06C:A651,1E06D:4B1")
# Default_Ignorable_Code_Point: NFKC_Casefold deletes these (assigned or not).
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF))

_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3


def _parse_new_nfd():
    out = {}
    for item in _NEW_NFD.split(","):
        key, value = item.split(":")
        out[int(key, 16)] = "".join(chr(int(x, 16)) for x in value.split())
    return out


def _parse_new_casefold():
    out = {}
    for item in _NEW_CASEFOLD.split(","):
        keys, target = item.split(":")
        first, _, last = keys.partition("-")
        first = int(first, 16)
        last = int(last, 16) if last else first
        for cp in range(first, last + 1):
            out[cp] = chr(int(target, 16) + cp - first)
    return out


def _is_unassigned(cp):
    return unicodedata.category(chr(cp)) == "Cn"


@functools.lru_cache(maxsize=None)
def _default_ignorable():
    return frozenset(chr(cp) for lo, hi in _DEFAULT_IGNORABLE for cp in range(lo, hi + 1))


def _nfkc_casefold(text):
    """NFKC_Casefold of a string, as `tf_text.case_fold_utf8` computes it."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    ignorable = _default_ignorable()
    return "".join(c for c in text if c not in ignorable)


def _all_code_points():
    return (cp for cp in range(0x80, 0x110000) if not 0xD800 <= cp <= 0xDFFF)


@functools.lru_cache(maxsize=None)
def _nfd_map():
    """{char: NFD(char)} for every non-ASCII char NFD changes."""
    new = _parse_new_nfd()
    out = {}
    for cp in _all_code_points():
        if cp in new and _is_unassigned(cp):
            out[chr(cp)] = new[cp]
            continue
        c = chr(cp)
        d = unicodedata.normalize("NFD", c)
        if d != c:
            out[c] = d
    return out


@functools.lru_cache(maxsize=None)
def _casefold_map():
    """{char: NFKC_Casefold(char)} for every non-ASCII char it changes."""
    new = _parse_new_casefold()
    ignorable = _default_ignorable()
    out = {}
    for cp in _all_code_points():
        c = chr(cp)
        if c in ignorable:
            out[c] = ""
        elif unicodedata.category(c) == "Cn":
            if cp in new:
                out[c] = new[cp]
        else:
            f = _nfkc_casefold(c)
            if f != c:
                out[c] = f
    return out


@functools.lru_cache(maxsize=None)
def _composition_map():
    """{a + b: c} for the canonical compositions NFC / NFKC perform."""
    out = {}
    for cp in _all_code_points():
        decomposition = unicodedata.decomposition(chr(cp)).split()
        if len(decomposition) == 2 and not decomposition[0].startswith("<"):
            pair = "".join(chr(int(x, 16)) for x in decomposition)
            if unicodedata.normalize("NFC", pair) == chr(cp):
                out[pair] = chr(cp)
    new = {c: d for c, d in _parse_new_nfd().items() if _is_unassigned(c)}
    by_decomposition = {d: chr(c) for c, d in new.items()}
    for cp, d in new.items():
        first = by_decomposition.get(d[:-1], d[:-1]) if len(d) > 2 else d[0]
        out[first + d[-1]] = chr(cp)
    # Hangul: L + V -> LV and LV + T -> LVT.
    for lead in range(19):
        for vowel in range(21):
            lv = _HANGUL_FIRST + (lead * 21 + vowel) * 28
            out[chr(0x1100 + lead) + chr(0x1161 + vowel)] = chr(lv)
            for trail in range(1, 28):
                out[chr(lv) + chr(0x11A7 + trail)] = chr(lv + trail)
    return out


def _static_table(mapping, default):
    keys = [k.encode("utf-8") if isinstance(k, str) else k for k in mapping]
    values = list(mapping.values())
    if values and isinstance(values[0], str):
        values = [v.encode("utf-8") for v in values]
        value_dtype = tf.string
    else:
        value_dtype = tf.int64
    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(keys, tf.string), tf.constant(values, value_dtype))
    return tf.lookup.StaticHashTable(initializer, default_value=default)


def _map_chars(strings, table):
    """Replaces each character found in `table` (string -> string) by its value."""
    chars = tf.strings.unicode_split(strings, "UTF-8")
    flat = chars.flat_values
    mapped = table.lookup(flat)
    flat = tf.where(tf.equal(mapped, _MISSING), flat, mapped)
    return tf.strings.reduce_join(chars.with_flat_values(flat), axis=-1)


def _on_non_ascii(strings, fn, any_non_ascii):
    """Applies `fn` (1-D strings -> 1-D strings) to the non-ASCII elements only.

    `any_non_ascii` (scalar bool) False skips all of it: the common case.
    """

    def apply():
        index = tf.where(tf.logical_not(_is_ascii(strings)))
        subset = tf.gather_nd(strings, index)
        return tf.tensor_scatter_nd_update(strings, index, fn(subset))

    return tf.cond(any_non_ascii, apply, lambda: strings)


def _is_ascii(strings):
    return tf.strings.regex_full_match(strings, r"[\x00-\x7F]*")


def _char_class(chars):
    """An RE2 character class matching exactly `chars` (non-ASCII)."""
    points = sorted(ord(c) for c in chars)
    ranges = []
    for cp in points:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "[" + "".join(f"\\x{{{a:X}}}" + (f"-\\x{{{b:X}}}" if b > a else "")
                         for a, b in ranges) + "]"


def _compose(words, table, second_chars_regex, max_rounds=8):
    """Canonically composes adjacent characters using `table` (pair -> char).

    Left to right: a pair composes unless its first character was just
    composed with the one before it; repeated until nothing composes (so
    L + V + T Hangul jamo become one syllable). Nothing runs unless some word
    holds a character that can be the second of a pair
    (`second_chars_regex`).
    """

    def step(words, unused_again, rounds):
        chars = tf.strings.unicode_split(words, "UTF-8")
        flat = chars.flat_values
        rows = chars.value_rowids()
        same_word = tf.equal(rows[1:], rows[:-1])
        composed = table.lookup(tf.strings.join([flat[:-1], flat[1:]]))
        found = same_word & tf.not_equal(composed, _MISSING)
        fire = found & ~tf.concat([[False], found[:-1]], axis=0)
        # `fire[i]`: char i becomes `composed[i]` and char i + 1 is deleted.
        flat = tf.where(tf.concat([fire, [False]], axis=0),
                        tf.concat([composed, [""]], axis=0), flat)
        flat = tf.where(tf.concat([[False], fire], axis=0), "", flat)
        words = tf.strings.reduce_join(chars.with_flat_values(flat), axis=-1)
        return words, tf.reduce_any(found), rounds + 1

    words, _, _ = tf.while_loop(
        lambda w, again, rounds: again & (rounds < max_rounds), step,
        (words, tf.reduce_any(tf.strings.regex_full_match(words, second_chars_regex)),
         tf.constant(0)))
    return words


def pack_inputs(token_ids, sequence_length, cls_id, sep_id, pad_id):
    """Packs one segment as `[CLS] a [SEP]`, like keras-hub's BERT preprocessor.

    Args:
        token_ids: `tf.RaggedTensor` int32 `[batch, None]` (no special tokens).
        sequence_length: int. The output length; segments are truncated to
            `sequence_length - 2` tokens.
        cls_id: int. The id placed first.
        sep_id: int. The id placed after the segment.
        pad_id: int. The id filling the rest.

    Returns:
        A dict of int32 `[batch, sequence_length]` tensors: `token_ids`,
        `segment_ids` (all zero) and `padding_mask` (`token_ids != pad_id`).

    Example:

    >>> ids = tf.ragged.constant([[7, 8, 9], []], dtype=tf.int32)
    >>> pack_inputs(ids, 4, cls_id=1, sep_id=2, pad_id=0)["token_ids"].numpy().tolist()
    [[1, 7, 8, 2], [1, 2, 0, 0]]
    """
    if sequence_length < 2:
        raise ValueError(f"`sequence_length` must be at least 2. Received: {sequence_length}")
    token_ids = tf.cast(token_ids, tf.int32)
    keep = tf.minimum(tf.cast(token_ids.row_lengths(), tf.int32), sequence_length - 2)
    return _pack([(token_ids, keep, 0)], sequence_length, cls_id, sep_id, pad_id)


def pack_input_pairs(token_ids_a, token_ids_b, sequence_length, cls_id, sep_id, pad_id,
                     truncate="round_robin"):
    """Packs two segments as `[CLS] a [SEP] b [SEP]`, like keras-hub's preprocessor.

    Args:
        token_ids_a: `tf.RaggedTensor` int32 `[batch, None]`, the first segment.
        token_ids_b: `tf.RaggedTensor` int32 `[batch, None]`, the second segment.
        sequence_length: int. The output length; the segments share
            `sequence_length - 3` tokens.
        cls_id: int. The id placed first.
        sep_id: int. The id placed after each segment.
        pad_id: int. The id filling the rest.
        truncate: `"round_robin"` (keras-hub's default: tokens are granted one
            at a time to each segment in turn, the first segment first) or
            `"waterfall"` (the first segment takes what it needs first).

    Returns:
        A dict of int32 `[batch, sequence_length]` tensors: `token_ids`,
        `segment_ids` (0 for `[CLS]`, `a` and its `[SEP]`; 1 for `b` and its
        `[SEP]`; 0 for padding) and `padding_mask` (`token_ids != pad_id`).

    Example:

    >>> a = tf.ragged.constant([[5, 5, 5, 5]], dtype=tf.int32)
    >>> b = tf.ragged.constant([[6, 6, 6, 6]], dtype=tf.int32)
    >>> pack_input_pairs(a, b, 8, 1, 2, 0)["token_ids"].numpy().tolist()
    [[1, 5, 5, 5, 2, 6, 6, 2]]
    """
    if sequence_length < 3:
        raise ValueError(f"`sequence_length` must be at least 3. Received: {sequence_length}")
    if truncate not in ("round_robin", "waterfall"):
        raise ValueError(f"`truncate` must be 'round_robin' or 'waterfall'. Received: {truncate}")
    a = tf.cast(token_ids_a, tf.int32)
    b = tf.cast(token_ids_b, tf.int32)
    budget = sequence_length - 3
    length_a = tf.cast(a.row_lengths(), tf.int32)
    length_b = tf.cast(b.row_lengths(), tf.int32)
    if truncate == "round_robin":
        keep_a = tf.minimum(length_a, tf.maximum((budget + 1) // 2, budget - length_b))
    else:
        keep_a = tf.minimum(length_a, budget)
    keep_b = tf.minimum(length_b, budget - keep_a)
    return _pack([(a, keep_a, 0), (b, keep_b, 1)], sequence_length, cls_id, sep_id, pad_id)


def _pack(segments, sequence_length, cls_id, sep_id, pad_id):
    """`[CLS]`, then each segment's first `keep` tokens and `[SEP]`, then padding.

    Args:
        segments: list of (ragged ids `[batch, None]`, kept lengths `[batch]`,
            segment id).

    Returns:
        The output dict of `pack_inputs`, built with dense ops only.
    """
    position = tf.range(sequence_length)[None, :]
    token_ids = tf.fill(tf.shape(position + segments[0][1][:, None]), tf.cast(pad_id, tf.int32))
    segment_ids = tf.zeros_like(token_ids)
    token_ids = tf.where(tf.equal(position, 0), tf.cast(cls_id, tf.int32), token_ids)
    start = tf.ones_like(segments[0][1])  # Where the current segment begins.
    for ids, keep, segment in segments:
        dense = ids.to_tensor(default_value=0, shape=[None, sequence_length])
        offset = position - start[:, None]
        inside = (offset >= 0) & (offset < keep[:, None])
        values = tf.gather(dense, tf.clip_by_value(offset, 0, sequence_length - 1), batch_dims=1)
        token_ids = tf.where(inside, values, token_ids)
        sep = tf.equal(offset, keep[:, None])
        token_ids = tf.where(sep, tf.cast(sep_id, tf.int32), token_ids)
        if segment:
            segment_ids = tf.where(inside | sep, segment, segment_ids)
        start = start + keep + 1
    return {
        "token_ids": token_ids,
        "segment_ids": segment_ids,
        "padding_mask": tf.cast(tf.not_equal(token_ids, pad_id), tf.int32),
    }


class CoreBertTokenizer(tf.Module):
    """BERT WordPiece tokenization and packing with core TensorFlow ops only.

    Gives the token ids of `keras_hub.models.BertTokenizer` with the same
    settings (see the module docstring for the exact pipeline and the few
    documented divergences) and the packed outputs of
    `keras_hub.models.BertTextClassifierPreprocessor`. It is a `tf.Module`:
    its lookup tables are tracked, so attaching it to an exported module (or
    calling it from a `tf.function` of one) saves them into the SavedModel.

    Args:
        vocabulary: list of str, or the path of a one-token-per-line file.
        lowercase: bool. NFKC-casefold words (uncased BERT). Defaults to
            `False`, like keras-hub.
        strip_accents: bool. NFD-normalize and drop `Mn` marks. Defaults to
            `False`, like keras-hub.
        split_on_cjk: bool. Make each CJK ideograph its own word.
        suffix_indicator: str. Prefix of non-initial word pieces.
        oov_token: str. The token of words that cannot be tokenized.
        special_tokens: list of str or None. Tokens found verbatim in input
            strings (only when `special_tokens_in_strings`), never split or
            lowercased, as keras-hub's `special_tokens_in_strings=True` does.
        special_tokens_in_strings: bool. See `special_tokens`.
        cls_token: str. The start token of packed sequences.
        sep_token: str. The end token of each packed segment.
        pad_token: str. The padding token.
        sequence_length: int. Default packed length for `preprocess`.
        truncate: str. `"round_robin"` or `"waterfall"` for pairs.
        max_bytes_per_word: int. Longer words become `oov_token`.
        name: str or None. The module name.

    Example:

    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "qu", "##ick", "."]
    >>> tokenizer = CoreBertTokenizer(vocab, lowercase=True, strip_accents=True)
    >>> tokenizer.tokenize(["The quíck."]).to_list()
    [[4, 5, 6, 7]]
    >>> tokenizer(["The quick"], sequence_length=6)["token_ids"].numpy().tolist()
    [[2, 4, 5, 6, 3, 0]]
    """

    def __init__(self, vocabulary, lowercase=False, strip_accents=False, split_on_cjk=True,
                 suffix_indicator="##", oov_token="[UNK]", special_tokens=None,
                 special_tokens_in_strings=False, cls_token="[CLS]", sep_token="[SEP]",
                 pad_token="[PAD]", sequence_length=512, truncate="round_robin",
                 max_bytes_per_word=MAX_BYTES_PER_WORD, name=None):
        super().__init__(name=name)
        if isinstance(vocabulary, (str, os.PathLike)):
            with open(vocabulary, encoding="utf-8") as f:
                vocabulary = [line.rstrip() for line in f]
        vocabulary = list(vocabulary)
        self.vocabulary = vocabulary
        self.lowercase = bool(lowercase)
        self.strip_accents = bool(strip_accents)
        self.split_on_cjk = bool(split_on_cjk)
        self.suffix_indicator = suffix_indicator
        self.oov_token = oov_token
        self.sequence_length = sequence_length
        self.truncate = truncate
        self.max_bytes_per_word = int(max_bytes_per_word)
        self.special_tokens = list(special_tokens or []) if special_tokens_in_strings else []

        token_to_id = {token: i for i, token in enumerate(vocabulary)}
        if len(token_to_id) != len(vocabulary):
            # As `tf_text.FastWordpieceTokenizer` (so keras-hub) requires.
            raise ValueError("Tokens in the vocabulary must be unique.")
        for token, what in ((oov_token, "oov_token"), (cls_token, "cls_token"),
                            (sep_token, "sep_token"), (pad_token, "pad_token")):
            if token not in token_to_id:
                raise ValueError(f"The {what} {token!r} is not in the vocabulary.")
        self.oov_token_id = token_to_id[oov_token]
        self.cls_token_id = token_to_id[cls_token]
        self.sep_token_id = token_to_id[sep_token]
        self.pad_token_id = token_to_id[pad_token]
        suffix = len(suffix_indicator)
        self._max_piece_chars = max(
            [len(t[suffix:]) if suffix and t.startswith(suffix_indicator) else len(t)
             for t in vocabulary] + [1])

        self._vocab_table = _static_table({t: i for t, i in token_to_id.items()}, -1)
        if self.strip_accents:
            nfd = _nfd_map()
            if self.lowercase:
                # Case folding recomposes Hangul syllables: skip the round trip.
                nfd = {c: d for c, d in nfd.items()
                       if not _HANGUL_FIRST <= ord(c) <= _HANGUL_LAST}
            self._nfd_table = _static_table(nfd, _MISSING)
        if self.lowercase:
            casefold = _casefold_map()
            if self.strip_accents:
                # Decomposed and `Mn` characters are gone before case folding.
                nfd = _nfd_map()
                casefold = {c: f for c, f in casefold.items()
                            if c not in nfd and unicodedata.category(c) != "Mn"}
            self._casefold_table = _static_table(casefold, _MISSING)
            compositions = _composition_map()
            self._composition_table = _static_table(compositions, _MISSING)
            self._second_chars_regex = "(?s).*" + _char_class(
                {pair[1] for pair in compositions}) + ".*"

        keep = [PUNCTUATION_REGEX] + ([CJK_REGEX] if self.split_on_cjk else [])
        if self.special_tokens:
            self._special_regex = "|".join(re.escape(t) for t in self.special_tokens)
            keep.insert(0, self._special_regex)
        else:
            self._special_regex = None
        # One pass: kept delimiters get spaces around them (group 1), dropped
        # ones become spaces; RE2 alternation is leftmost-first, as in
        # `tf_text.regex_split`. `tf_text.regex_split` also ignores everything
        # from the first NUL character on (C-string semantics): so do we.
        self._split_regex = "(" + "|".join(keep) + r")|(?s:\x00.*)|" + WHITESPACE_REGEX
        self._eager = _EagerFunctions(self)

    @classmethod
    def from_keras_hub(cls, tokenizer, **kwargs):
        """Builds the equivalent of a keras-hub `BertTokenizer` (or `WordPieceTokenizer`).

        Args:
            tokenizer: the keras-hub tokenizer; its vocabulary, `lowercase`,
                `strip_accents`, `split_on_cjk`, `suffix_indicator`,
                `oov_token` and special tokens are copied.
            **kwargs: overrides or extra `CoreBertTokenizer` arguments (e.g.
                `sequence_length`).

        Returns:
            A `CoreBertTokenizer`.
        """
        if not getattr(tokenizer, "split", True):
            raise ValueError("Only tokenizers with `split=True` are supported.")
        special = None
        in_strings = bool(getattr(tokenizer, "special_tokens_in_strings", False))
        if in_strings:
            special = list(getattr(tokenizer, "special_tokens", []) or [])
            # The constructor's extra special tokens: public only through get_config().
            special += list(tokenizer.get_config().get("special_tokens") or [])
        options = dict(
            vocabulary=tokenizer.get_vocabulary(),
            lowercase=tokenizer.lowercase,
            strip_accents=tokenizer.strip_accents,
            split_on_cjk=getattr(tokenizer, "split_on_cjk", True),
            suffix_indicator=tokenizer.suffix_indicator,
            oov_token=tokenizer.oov_token,
            special_tokens=special,
            special_tokens_in_strings=in_strings,
        )
        for attr, key in (("cls_token", "cls_token"), ("sep_token", "sep_token"),
                          ("pad_token", "pad_token")):
            if getattr(tokenizer, attr, None) is not None:
                options[key] = getattr(tokenizer, attr)
        options.update(kwargs)
        return cls(**options)

    def vocabulary_size(self):
        """The number of tokens in the vocabulary."""
        return len(self.vocabulary)

    def tokenize(self, strings):
        """Tokenizes strings into WordPiece ids (no special tokens added).

        Args:
            strings: a string, a list of strings or a 1-D `tf.string` tensor.

        Returns:
            A `tf.RaggedTensor` int32 `[batch, None]` for batched input, or an
            int32 `[None]` tensor for a scalar string.
        """
        strings = tf.convert_to_tensor(strings, tf.string)
        if strings.shape.rank == 0:
            return self.tokenize(strings[None])[0]
        if tf.executing_eagerly():
            return self._eager.tokenize(strings)
        return self._tokenize(strings)

    def preprocess(self, texts, text_pairs=None, sequence_length=None):
        """Tokenizes and packs like `keras_hub.models.BertTextClassifierPreprocessor`.

        Args:
            texts: a string, a list of strings or a 1-D `tf.string` tensor.
            text_pairs: optional second segments, shaped like `texts`.
            sequence_length: int or None (the constructor's value).

        Returns:
            A dict of int32 tensors `[batch, sequence_length]` (or
            `[sequence_length]` for a scalar string): `token_ids`,
            `segment_ids` and `padding_mask` (keras-hub's `padding_mask` is
            the same values as bool).
        """
        sequence_length = sequence_length or self.sequence_length
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank == 0:
            pairs = None if text_pairs is None else tf.convert_to_tensor(text_pairs)[None]
            outputs = self.preprocess(texts[None], pairs, sequence_length)
            return {key: value[0] for key, value in outputs.items()}
        if text_pairs is not None:
            text_pairs = tf.convert_to_tensor(text_pairs, tf.string)
        if tf.executing_eagerly():
            ids = self._eager.tokenize(texts)
            if text_pairs is None:
                return self._eager.pack(ids, sequence_length)
            return self._eager.pack_pairs(ids, self._eager.tokenize(text_pairs),
                                          sequence_length, self.truncate)
        return self._preprocess(texts, text_pairs, sequence_length)

    def __call__(self, texts, text_pairs=None, sequence_length=None):
        """Same as `preprocess`."""
        return self.preprocess(texts, text_pairs, sequence_length)

    # Implementation.

    def _preprocess(self, texts, text_pairs, sequence_length):
        ids = self._tokenize(texts)
        special = (self.cls_token_id, self.sep_token_id, self.pad_token_id)
        if text_pairs is None:
            return pack_inputs(ids, sequence_length, *special)
        return pack_input_pairs(ids, self._tokenize(text_pairs), sequence_length, *special,
                                truncate=self.truncate)

    def _pretokenize(self, strings):
        """Normalized words: a `tf.RaggedTensor` of strings `[batch, None]`."""
        text = strings
        any_non_ascii = tf.logical_not(tf.reduce_all(_is_ascii(text)))
        if self.strip_accents:
            text = _on_non_ascii(text, lambda s: _map_chars(s, self._nfd_table), any_non_ascii)
            text = tf.strings.regex_replace(text, r"\p{Mn}", "")
        text = tf.strings.regex_replace(text, self._split_regex, r" \1 ")
        words = tf.strings.split(text)
        if self.lowercase:
            words = words.with_flat_values(self._casefold(words.flat_values, any_non_ascii))
        return words

    def _tokenize(self, strings):
        words = self._pretokenize(strings)
        pieces = self._wordpiece(words.flat_values)
        return tf.RaggedTensor.from_row_splits(
            pieces.values, tf.gather(pieces.row_splits, words.row_splits), validate=False)

    def _casefold(self, words, any_non_ascii):
        def non_ascii(subset):
            subset = _map_chars(subset, self._casefold_table)
            return _compose(subset, self._composition_table, self._second_chars_regex)

        folded = _on_non_ascii(tf.strings.lower(words), non_ascii, any_non_ascii)
        if self._special_regex is None:
            return folded
        special = tf.strings.regex_full_match(words, self._special_regex)
        return tf.where(special, words, folded)

    def _wordpiece(self, words):
        """Greedy longest-match-first WordPiece of each word: `[words, None]` int32."""
        table = self._vocab_table
        num_bytes = tf.strings.length(words)
        num_chars = tf.strings.length(words, unit="UTF8_CHAR")
        too_long = num_bytes > self.max_bytes_per_word
        whole = tf.cast(table.lookup(words), tf.int32)
        direct = ~too_long & (whole >= 0)
        first = tf.where(too_long, self.oov_token_id, tf.where(direct, whole, -1))
        todo = tf.where(~too_long & ~direct & (num_chars > 0))[:, 0]
        rest, failed = self._wordpiece_loop(tf.gather(words, todo), tf.gather(num_chars, todo))
        rest = tf.where(failed[:, None],
                        tf.one_hot(tf.zeros_like(failed, tf.int32), tf.shape(rest)[1],
                                   on_value=self.oov_token_id, off_value=-1, dtype=tf.int32),
                        rest)
        width = tf.maximum(tf.shape(rest)[1], 1)
        dense = tf.pad(first[:, None], [[0, 0], [0, width - 1]], constant_values=-1)
        dense = tf.tensor_scatter_nd_update(
            dense, todo[:, None], tf.pad(rest, [[0, 0], [0, width - tf.shape(rest)[1]]],
                                         constant_values=-1))
        return tf.RaggedTensor.from_tensor(dense, padding=-1)  # -1s are trailing.

    def _wordpiece_loop(self, words, num_chars):
        """Returns (`[n, steps]` piece ids with -1 for none, `[n]` failed)."""
        table = self._vocab_table
        n = tf.shape(words)[0]
        lengths = tf.range(1, self._max_piece_chars + 1, dtype=tf.int32)
        shape = tf.stack([n, self._max_piece_chars])
        length_grid = tf.broadcast_to(lengths[None, :], shape)
        words_column = words[:, None]

        def step(pos, alive, failed, pieces):
            start = pos[:, None] + tf.zeros_like(length_grid)
            candidates = tf.strings.substr(words_column, start, length_grid, unit="UTF8_CHAR")
            prefix = tf.where(pos > 0, self.suffix_indicator, "")
            candidates = tf.strings.join([tf.broadcast_to(prefix[:, None], shape), candidates])
            ids = tf.cast(table.lookup(candidates), tf.int32)
            valid = ((ids >= 0) & (length_grid <= (num_chars - pos)[:, None]) & alive[:, None])
            best = tf.reduce_max(tf.where(valid, length_grid, 0), axis=1)
            best_id = tf.reduce_max(
                tf.where(valid & tf.equal(length_grid, best[:, None]), ids, -1), axis=1)
            stuck = alive & tf.equal(best, 0)
            pos = pos + best
            pieces = tf.concat([pieces, best_id[:, None]], axis=1)
            return pos, alive & ~stuck & (pos < num_chars), failed | stuck, pieces

        _, _, failed, pieces = tf.while_loop(
            lambda pos, alive, failed, pieces: tf.reduce_any(alive), step,
            (tf.zeros([n], tf.int32), tf.ones([n], tf.bool), tf.zeros([n], tf.bool),
             tf.zeros(tf.stack([n, 0]), tf.int32)),
            shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]),
                              tf.TensorShape([None]), tf.TensorShape([None, None])))
        return pieces, failed


class _EagerFunctions:
    """`tf.function`s for eager callers, kept out of `tf.Module` tracking.

    A `tf.function` attribute of a `tf.Module` would be saved with it; these
    only exist to make eager calls fast, so they are held by a plain object.
    """

    def __init__(self, tokenizer):
        self.tokenize = tf.function(tokenizer._tokenize, autograph=False,
                                    input_signature=[tf.TensorSpec([None], tf.string)])
        special = [tf.constant(i, tf.int32) for i in (
            tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)]
        self.pack = lambda ids, sequence_length: _eager_pack(ids, sequence_length, *special)
        self.pack_pairs = lambda a, b, sequence_length, truncate: _eager_pack_pairs(
            a, b, sequence_length, *special, truncate=truncate)


# Shared by all tokenizers (special ids are tensor arguments): eager packing
# traces once per sequence length.
# (Lambdas: a wrapped function's docstring would be collected as a doctest again.)
_eager_pack = tf.function(lambda *args: pack_inputs(*args), autograph=False,
                          reduce_retracing=True)
_eager_pack_pairs = tf.function(lambda *args, truncate: pack_input_pairs(
    *args, truncate=truncate), autograph=False, reduce_retracing=True)
