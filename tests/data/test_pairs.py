"""(context, response) pairs of task='retrieval': readers, the split by question, bad input."""

import json
import logging

import numpy as np
import pytest

import helpers
from sft_keras.config import get_default_config
from sft_keras.data.pairs import (
    load_chatterbot_pairs,
    load_pair_data,
    read_chat_jsonl,
    read_pairs,
    split_by_context,
)
from sft_keras.errors import ConfigError, DataError


def _chat(path, *conversations):
    with open(path, "w", encoding="utf-8") as f:
        for messages in conversations:
            f.write(json.dumps({"messages": messages}) + "\n")
    return str(path)


def _turn(role, content):
    return {"role": role, "content": content}


def test_tables_csv_tsv_jsonl_read_the_named_columns(tmp_path):
    (tmp_path / "p.csv").write_text("id,q,a\n1,hi,hello\n2,bye,\"see you, then\"\n")
    (tmp_path / "p.tsv").write_text("q\ta\nhi\thello\n")
    (tmp_path / "p.jsonl").write_text('{"q": "hi", "a": "hello", "x": 1}\n')
    pairs = read_pairs(str(tmp_path / "p.csv"), "q", "a")
    assert list(zip(pairs.contexts, pairs.responses)) == [("hi", "hello"), ("bye", "see you, then")]
    for name in ("p.tsv", "p.jsonl"):
        pairs = read_pairs(str(tmp_path / name), "q", "a")
        assert list(zip(pairs.contexts, pairs.responses)) == [("hi", "hello")]


def test_chat_jsonl_every_assistant_turn_is_a_target_with_the_previous_turns(tmp_path):
    path = _chat(tmp_path / "c.jsonl", [
        _turn("system", "be nice"), _turn("assistant", "welcome"), _turn("user", "hi"),
        _turn("assistant", "hello"), _turn("user", "how are you?"), _turn("assistant", "fine"),
    ])
    one = read_chat_jsonl(path, context_turns=1)
    assert list(zip(one.contexts, one.responses)) == [("hi", "hello"), ("how are you?", "fine")]
    three = read_pairs(path, context_turns=3)  # Detected as chat by its `messages` key.
    assert three.contexts.tolist() == ["welcome\nhi", "hi\nhello\nhow are you?"]


def test_conversation_without_an_assistant_turn_is_an_error_naming_the_line(tmp_path):
    path = _chat(tmp_path / "c.jsonl", [_turn("user", "hi"), _turn("assistant", "yo")],
                 [_turn("user", "anyone?")])
    with pytest.raises(DataError, match=r"c\.jsonl:2: conversation with no assistant turn"):
        read_pairs(path)


@pytest.mark.parametrize("content", ["", "   ", None])
def test_empty_reply_is_an_error_naming_the_line_and_value(tmp_path, content):
    path = _chat(tmp_path / "c.jsonl", [_turn("user", "hi"), _turn("assistant", content)])
    with pytest.raises(DataError, match=r"c\.jsonl:1: message 2 \(assistant\) has an empty"):
        read_pairs(path)
    (tmp_path / "p.csv").write_text("q,a\nhi,hello\nbye,\n")
    with pytest.raises(DataError, match=r"p\.csv:3: empty text in column 'a'"):
        read_pairs(str(tmp_path / "p.csv"), "q", "a")


def test_unknown_role_is_an_error(tmp_path):
    path = _chat(tmp_path / "c.jsonl", [_turn("user", "hi"), _turn("bot", "yo")])
    with pytest.raises(DataError, match="message 2 needs a role"):
        read_pairs(path)


def test_missing_column_names_the_keys_and_the_columns_found(tmp_path):
    (tmp_path / "p.csv").write_text("question,answer\nhi,hello\n")
    with pytest.raises(DataError, match=r"no column 'context' \(data.context_column.*"
                                        r"Columns found: \['question', 'answer'\]"):
        read_pairs(str(tmp_path / "p.csv"))


def test_duplicate_pairs_are_dropped_and_logged(tmp_path, caplog):
    (tmp_path / "p.csv").write_text("q,a\nhi,hello\nhi,hello\nhi,hey\n")
    with caplog.at_level(logging.WARNING):
        pairs = read_pairs(str(tmp_path / "p.csv"), "q", "a")
    assert pairs.responses.tolist() == ["hello", "hey"]
    assert "dropped 1 repeated (context, response) pair(s), e.g. at line 3" in caplog.text


def test_split_by_context_never_shows_a_validation_question_in_training():
    pairs = load_chatterbot_pairs()
    train, validation = split_by_context(pairs, 0.2, seed=42)
    assert len(train) + len(validation) == len(pairs)
    assert not set(train.contexts.tolist()) & set(validation.contexts.tolist())
    assert len(set(validation.contexts.tolist())) == round(0.2 * len(set(pairs.contexts.tolist())))
    again, _ = split_by_context(pairs, 0.2, seed=42)
    assert again.contexts.tolist() == train.contexts.tolist()  # Seeded.


def test_load_pair_data_numbers_equal_texts_alike_across_splits(tmp_path):
    config = get_default_config()
    config.data.source = "text_file"
    config.data.path = helpers.write_chat_pairs(str(tmp_path / "c.csv"), n=40)
    config.data.context_column, config.data.response_column = "question", "answer"
    data = load_pair_data(config.data, seed=0)
    ids = {}
    for part in (data.train, data.validation):
        for text, i in zip(part.responses.tolist(), part.response_ids.tolist()):
            assert ids.setdefault(text, i) == i
    assert len(data.train) == 32 and data.class_names == []  # 20% of 40 questions held out.


def test_chat_file_helper_trains_the_same_pairs_as_the_csv(tmp_path):
    csv_pairs = read_pairs(helpers.write_chat_pairs(str(tmp_path / "c.csv"), n=16),
                           "question", "answer")
    chat_pairs = read_pairs(helpers.write_chat_pairs(str(tmp_path / "c.jsonl"), n=16, fmt="chat"))
    assert csv_pairs.contexts.tolist() == chat_pairs.contexts.tolist()
    np.testing.assert_array_equal(csv_pairs.labels, chat_pairs.labels)


def test_context_turns_must_be_positive(tmp_path):
    path = _chat(tmp_path / "c.jsonl", [_turn("user", "hi"), _turn("assistant", "yo")])
    with pytest.raises(ConfigError, match="data.context_turns=0"):
        read_chat_jsonl(path, context_turns=0)
