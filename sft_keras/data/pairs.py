"""(context, response) pairs for a retrieval chatbot (`task="retrieval"`).

Three readers, one result (`PairExamples`):

- a CSV/TSV/JSONL table with a context and a response column
  (`data.context_column`, `data.response_column`): one pair per row;
- chat JSON lines, `{"messages": [{"role": "user", "content": ...},
  {"role": "assistant", "content": ...}, ...]}` per line (a `.jsonl` file
  whose first record has `messages`): every assistant turn is a target, its
  context the previous `data.context_turns` turns (user and assistant,
  system messages left out) joined by a newline;
- chatterbot-corpus `conversations` (`load_chatterbot_pairs`): every two
  consecutive utterances of a conversation are a (question, answer) pair.

Rules, each logged when it applies: an exact repeat of a (context, response)
pair is dropped (the first is kept); an assistant turn that opens a
conversation has no context and is skipped. Errors (`DataError`, naming the
file, line and value): a conversation with no assistant turn, an empty
context or reply, a missing column or key, a malformed record.

`split_by_context` holds out whole contexts, so no validation question is
seen in training.
"""

import dataclasses
import json
import os

import numpy as np
from absl import logging

from sft_keras.errors import ConfigError, DataError

PAIR_SOURCES = ("text_file", "chatterbot")  # `data.source` values of task='retrieval'.
CHAT_ROLES = ("system", "user", "assistant")


@dataclasses.dataclass
class PairExamples:
    """(context, response) text pairs, with ids that tell equal texts apart.

    Args:
        contexts: numpy object array `[n]` of str.
        responses: numpy object array `[n]` of str.
        context_ids: int32 `[n]`: equal contexts share an id.
        response_ids: int32 `[n]`: equal responses share an id.
        negatives: optional object array `[n, k]` of str: hard negative
            replies per pair (`mine_hard_negatives`); "" where none was found.
        negative_ids: optional int32 `[n, k]`: their response ids; -1 for "".

    `labels` (int32 `[n, 2]`, the two ids, then the `k` negative ids if any)
    is what the training loss receives: it keeps a batch's other correct
    replies out of its negatives.

    Example:

    >>> pairs = make_pair_examples(["hi", "hello", "hi"], ["hey", "hey", "yo"])
    >>> len(pairs), pairs.labels.tolist()
    (3, [[0, 0], [1, 0], [0, 1]])
    >>> pairs.subset([2]).responses.tolist()
    ['yo']
    """

    contexts: np.ndarray
    responses: np.ndarray
    context_ids: np.ndarray
    response_ids: np.ndarray
    negatives: np.ndarray = None
    negative_ids: np.ndarray = None

    def __len__(self):
        return len(self.contexts)

    @property
    def labels(self):
        ids = np.stack([self.context_ids, self.response_ids], axis=1)
        if self.negative_ids is not None:
            ids = np.concatenate([ids, self.negative_ids.reshape(len(ids), -1)], axis=1)
        return ids.astype(np.int32)

    def subset(self, indices):
        """Returns the pairs at `indices`, in that order."""
        i = np.asarray(indices, dtype=np.intp)
        negatives = None if self.negatives is None else (self.negatives[i], self.negative_ids[i])
        return PairExamples(self.contexts[i], self.responses[i], self.context_ids[i],
                            self.response_ids[i], *(negatives or ()))

    def bank(self):
        """The distinct responses, in order of first appearance (list of str)."""
        return list(dict.fromkeys(self.responses.tolist()))


@dataclasses.dataclass
class PairData:
    """One run's pairs: `train`, `validation`, and `class_names` (always empty)."""

    train: PairExamples
    validation: PairExamples
    class_names: list = dataclasses.field(default_factory=list)


def make_pair_examples(contexts, responses):
    """Builds `PairExamples` from two lists of texts; ids number the distinct texts.

    Args:
        contexts: list of str.
        responses: list of str, as many.
    """
    context_ids, response_ids = {}, {}
    return PairExamples(
        np.array(list(contexts) or [], dtype=object).reshape(-1),
        np.array(list(responses) or [], dtype=object).reshape(-1),
        np.array([context_ids.setdefault(c, len(context_ids)) for c in contexts], np.int32),
        np.array([response_ids.setdefault(r, len(response_ids)) for r in responses], np.int32),
    )


def _drop_duplicates(rows, path):
    """rows: list of (line, context, response) -> the distinct pairs, first kept; logged."""
    seen, kept, dropped = set(), [], []
    for line, context, response in rows:
        if (context, response) in seen:
            dropped.append(line)
            continue
        seen.add((context, response))
        kept.append((context, response))
    if dropped:
        logging.warning("%s: dropped %d repeated (context, response) pair(s), e.g. at line %s; "
                        "the first of each is kept.", path, len(dropped), dropped[0])
    return kept


# --- Tables and chat JSON lines --------------------------------------------------


def read_pairs(path, context_column="context", response_column="response", context_turns=1):
    """Reads (context, response) pairs from a table or a chat JSON lines file.

    A `.jsonl`/`.json` file whose first record has a `messages` key is read
    as chat JSON lines (`read_chat_jsonl`); any other CSV/TSV/JSONL file as a
    table with `context_column` and `response_column`. Repeated pairs are
    dropped (logged).

    Args:
        path: str. The file.
        context_column: str. `data.context_column`.
        response_column: str. `data.response_column`.
        context_turns: int >= 1. Chat files: turns joined into a context.

    Returns:
        `PairExamples`, in file order.

    Raises:
        DataError: a missing column, an empty text, a malformed record, as
            the readers say (file, line and value).

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "pairs.csv")
    >>> _ = open(path, "w").write("question,answer\\nhi,hello\\nhi,hello\\nbye,see you\\n")
    >>> pairs = read_pairs(path, "question", "answer")
    >>> list(zip(pairs.contexts, pairs.responses))
    [('hi', 'hello'), ('bye', 'see you')]
    """
    from sft_keras.data.text import _row_texts, _table_rows

    path = os.fspath(path)
    if _is_chat_file(path):
        return read_chat_jsonl(path, context_turns)
    columns = (context_column, response_column)
    key = "data.context_column/data.response_column"
    path, table = _table_rows(path, columns, None, key)
    rows = [(line, *_row_texts(path, line, columns, values)) for line, values, _ in table]
    pairs = _drop_duplicates(rows, path)
    return make_pair_examples([c for c, _ in pairs], [r for _, r in pairs])


def _is_chat_file(path):
    if os.path.splitext(path)[1].lower() not in (".jsonl", ".json") or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for content in f:
            if content.strip():
                try:
                    record = json.loads(content)
                except json.JSONDecodeError:
                    return False  # The table reader reports it, with the line.
                return isinstance(record, dict) and "messages" in record
    return False


def read_chat_jsonl(path, context_turns=1):
    """Reads chat JSON lines: every assistant turn becomes a (context, reply) pair.

    Each line holds `{"messages": [{"role": ..., "content": ...}, ...]}` with
    roles `system`, `user` or `assistant`. The context of an assistant turn
    is the `context_turns` turns before it (system messages left out),
    joined by `"\\n"`. An assistant turn that opens a conversation has no
    context: it is skipped (logged). Repeated pairs are dropped (logged).

    Args:
        path: str. The `.jsonl` file.
        context_turns: int >= 1.

    Returns:
        `PairExamples`.

    Raises:
        DataError: a line that is not such an object, a message without a
            known role or a string content, an empty content, or a
            conversation with no assistant turn (file and line named).

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "chat.jsonl")
    >>> line = {"messages": [{"role": "user", "content": "hi"},
    ...                      {"role": "assistant", "content": "hello"},
    ...                      {"role": "user", "content": "how are you?"},
    ...                      {"role": "assistant", "content": "fine"}]}
    >>> _ = open(path, "w").write(json.dumps(line) + "\\n")
    >>> pairs = read_chat_jsonl(path, context_turns=2)
    >>> list(zip(pairs.contexts, pairs.responses))
    [('hi', 'hello'), ('hello\\nhow are you?', 'fine')]
    """
    from sft_keras.data.text import _decode_utf8

    if isinstance(context_turns, bool) or not isinstance(context_turns, int) or context_turns < 1:
        raise ConfigError(f"data.context_turns must be an integer >= 1. "
                          f"Received: data.context_turns={context_turns!r}")
    if not os.path.isfile(path):
        raise DataError(f"Chat file not found. Received: {path!r}")
    with open(path, "rb") as f:
        text = _decode_utf8(f.read(), path)
    rows, openers = [], 0
    for line, content in enumerate(text.split("\n"), start=1):
        if not content.strip():
            continue
        turns = _chat_turns(path, line, content)
        if not any(role == "assistant" for role, _ in turns):
            raise DataError(
                f"{path}:{line}: conversation with no assistant turn, so it has no reply to "
                f"learn. Roles received: {[role for role, _ in turns]}")
        for i, (role, message) in enumerate(turns):
            if role != "assistant":
                continue
            if i == 0:
                openers += 1
                continue
            context = "\n".join(m for _, m in turns[max(0, i - context_turns):i])
            rows.append((line, context, message))
    if openers:
        logging.info("%s: skipped %d assistant turn(s) that open a conversation (no context).",
                     path, openers)
    if not rows:
        raise DataError(f"Chat file {path!r} has no assistant turn after another turn.")
    pairs = _drop_duplicates(rows, path)
    return make_pair_examples([c for c, _ in pairs], [r for _, r in pairs])


def _chat_turns(path, line, content):
    """One chat record -> [(role, stripped content)] without system messages."""
    try:
        record = json.loads(content)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{line}: malformed JSON ({e.msg}, column {e.colno}).") from None
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list):
        raise DataError(f"{path}:{line}: expected an object with a 'messages' list. "
                        f"Received: {content.strip()[:80]!r}")
    turns = []
    for number, message in enumerate(messages, start=1):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in CHAT_ROLES:
            raise DataError(f"{path}:{line}: message {number} needs a role, one of "
                            f"{list(CHAT_ROLES)}. Received: {message!r}"[:300])
        value = message.get("content")
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{path}:{line}: message {number} ({role}) has an empty or "
                            f"non-string content. Received: content={value!r}")
        if role != "system":
            turns.append((role, value.strip()))
    return turns


# --- chatterbot-corpus ------------------------------------------------------------


def load_chatterbot_pairs(topics=None):
    """Returns chatterbot-corpus (question, answer) pairs: consecutive utterances.

    Reads `chatterbot_corpus/data/english/<topic>.yml` (every topic when
    `topics` is None or empty). In each conversation, utterance i is the
    context of utterance i + 1. Utterances are stripped; repeated pairs are
    dropped (logged).

    Args:
        topics: tuple of str or None. Topic file names without `.yml`.

    Returns:
        `PairExamples`, by topic then file order.

    Raises:
        DataError: the package is missing, or a topic is unknown (the
            available ones are listed).

    Example:

    >>> pairs = load_chatterbot_pairs(("greetings",))
    >>> pairs.contexts[0], pairs.responses[0]
    ('Hello', 'Hi')
    """
    import yaml

    from sft_keras.data.text import _chatterbot_folder

    folder = _chatterbot_folder()
    available = sorted(f[: -len(".yml")] for f in os.listdir(folder) if f.endswith(".yml"))
    topics = tuple(topics or available)
    unknown = [t for t in topics if t not in available]
    if unknown:
        raise DataError(f"Unknown chatterbot-corpus topic(s) {unknown} (data.topics). "
                        f"Available topics (files in {folder}): {available}.")
    rows = []
    for topic in topics:
        file_path = os.path.join(folder, f"{topic}.yml")
        with open(file_path, encoding="utf-8") as f:
            corpus = yaml.safe_load(f)
        for number, conversation in enumerate((corpus or {}).get("conversations") or [], 1):
            turns = [t.strip() for t in conversation if isinstance(t, str)] if isinstance(
                conversation, list) else []
            for question, answer in zip(turns, turns[1:]):
                if question and answer:
                    rows.append((f"{topic} conversation {number}", question, answer))
    pairs = _drop_duplicates(rows, f"chatterbot-corpus {list(topics)}")
    return make_pair_examples([c for c, _ in pairs], [r for _, r in pairs])


# --- One run's pairs --------------------------------------------------------------


def split_by_context(pairs, validation_split, seed):
    """Holds out `validation_split` of the distinct contexts, with all their pairs.

    No validation context appears in training. Seeded by `seed`.

    Args:
        pairs: `PairExamples`.
        validation_split: float in (0, 1).
        seed: int.

    Returns:
        (train, validation) `PairExamples`, each in the original order.

    Example:

    >>> pairs = make_pair_examples(["a", "a", "b", "c", "d"], ["1", "2", "3", "4", "5"])
    >>> train, validation = split_by_context(pairs, 0.25, seed=0)
    >>> len(train) + len(validation), set(train.contexts) & set(validation.contexts)
    (5, set())
    """
    contexts = np.unique(pairs.context_ids)
    held = int(round(validation_split * len(contexts)))
    if held < 1 or held >= len(contexts):
        raise DataError(
            f"Cannot hold out {validation_split} of {len(contexts)} distinct contexts: each "
            f"split needs at least one. Received: data.validation_split={validation_split}")
    rng = np.random.default_rng(seed)
    validation_contexts = set(rng.permutation(contexts)[:held].tolist())
    in_validation = np.array([c in validation_contexts for c in pairs.context_ids.tolist()])
    return pairs.subset(np.flatnonzero(~in_validation)), pairs.subset(np.flatnonzero(in_validation))


def load_pair_data(data_config, seed):
    """Reads, checks and splits the pairs that the `data` config describes.

    `data.source='chatterbot'`: `load_chatterbot_pairs(data.topics)` (all
    topics when `data.topics` is empty); `'text_file'`: `read_pairs(data.path)`.
    Validation pairs come from `data.validation_path` or else are
    `data.validation_split` of the distinct contexts (`split_by_context`).
    `data.max_train_examples` > 0 keeps a seeded subset of the training pairs.
    Ids are renumbered over both splits, so equal texts share an id.

    Args:
        data_config: the `data` part of a config.
        seed: int.

    Returns:
        `PairData`.
    """
    d = data_config
    read = lambda path: read_pairs(path, d.context_column, d.response_column,  # noqa: E731
                                   d.context_turns)
    if d.source == "chatterbot":
        pairs = load_chatterbot_pairs(d.topics)
    elif d.source == "text_file":
        pairs = read(d.path)
    else:
        raise ConfigError(f"data.source must be one of {PAIR_SOURCES} for task='retrieval'. "
                          f"Received: data.source={d.source!r}")
    if d.validation_path:
        train, validation = pairs, read(d.validation_path)
        seen = set(train.contexts.tolist()) & set(validation.contexts.tolist())
        if seen:
            logging.warning("%d validation context(s) also appear in the training data.",
                            len(seen))
    else:
        train, validation = split_by_context(pairs, d.validation_split, seed)
    if d.max_train_examples and d.max_train_examples < len(train):
        keep = np.sort(np.random.default_rng(seed).permutation(len(train))[:d.max_train_examples])
        train = train.subset(keep)
    # One numbering over both splits.
    both = make_pair_examples(train.contexts.tolist() + validation.contexts.tolist(),
                              train.responses.tolist() + validation.responses.tolist())
    n = len(train)
    return PairData(both.subset(np.arange(n)), both.subset(np.arange(n, len(both))))
