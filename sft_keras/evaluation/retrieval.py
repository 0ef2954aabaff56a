"""Retrieval metrics and report: recall@k and MRR against a bank of replies, with baselines.

The validation split is scored the way the bot answers: each distinct
validation context (question) ranks the bank of every distinct validation
reply; the replies paired with it are its relevant ones. recall@k is the
share of questions with a relevant reply in the top k; MRR the mean of
1 / the rank of the first relevant reply. Ties count against the question
(a relevant reply tied with n others ranks after them), which matters for
BM25's many zero scores.

The report (`report/`) holds `metrics.json` (the fine-tuned model's metrics,
plus `zero_shot` and `bm25` measured in the same run), `retrieval_report.md`
(the three rows, and example questions with their top 3 replies before and
after fine-tuning) and `training_curves.png`.
"""

import json
import os

import numpy as np

from sft_keras.files import atomic_write_text

RECALL_AT = (1, 5, 10)
NUM_EXAMPLES = 10  # Example questions in retrieval_report.md.


def queries_and_relevance(examples):
    """The distinct contexts of `examples`, the bank of its distinct replies, and relevance.

    Args:
        examples: `sft_keras.data.pairs.PairExamples`.

    Returns:
        (queries, bank, relevant): list of str, list of str, and per query a
        list of bank indices of its replies.

    Example:

    >>> from sft_keras.data.pairs import make_pair_examples
    >>> q, bank, rel = queries_and_relevance(make_pair_examples(["a", "a", "b"], ["x", "y", "x"]))
    >>> q, bank, rel
    (['a', 'b'], ['x', 'y'], [[0, 1], [0]])
    """
    bank = examples.bank()
    index = {reply: i for i, reply in enumerate(bank)}
    relevant = {}
    for context, response in zip(examples.contexts.tolist(), examples.responses.tolist()):
        relevant.setdefault(context, []).append(index[response])
    return list(relevant), bank, [sorted(set(r)) for r in relevant.values()]


def rank_metrics(scores, relevant, ks=RECALL_AT):
    """recall@k and MRR of a `[queries, bank]` score matrix (higher is better).

    Args:
        scores: float array `[num_queries, bank_size]`.
        relevant: per query, a list of the bank indices that are right.
        ks: tuple of int.

    Returns:
        dict: `recall@k` for each k, `mrr`, `num_questions`, `bank_size`.

    Example:

    >>> import numpy as np
    >>> scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.3]])
    >>> metrics = rank_metrics(scores, [[0], [2]], ks=(1, 2))
    >>> metrics["recall@1"], metrics["recall@2"], metrics["mrr"]  # Tie: rank 2.
    (0.5, 1.0, 0.75)
    """
    scores = np.asarray(scores, np.float64)
    ranks = []
    for row, right in zip(scores, relevant):
        wrong = np.ones(len(row), bool)
        wrong[right] = False
        best = row[right].max()
        ranks.append(1 + int(np.sum(row[wrong] >= best)))
    ranks = np.asarray(ranks)
    metrics = {f"recall@{k}": round(float(np.mean(ranks <= k)), 4) for k in ks}
    metrics["mrr"] = round(float(np.mean(1.0 / ranks)), 4)
    metrics.update(num_questions=int(len(ranks)), bank_size=int(scores.shape[1]))
    return metrics


def bm25_scores(queries, bank):
    """BM25 scores `[queries, bank]` of each query against each reply (`bm25s`, English
    stopwords removed, default k1/b).

    Example:

    >>> int(bm25_scores(["what is python"], ["python is a language", "hello"]).argmax())
    0
    """
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(bank), stopwords="en", show_progress=False),
                    show_progress=False)
    tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False, return_ids=False)
    return np.stack([retriever.get_scores(t) for t in tokens]) if queries else np.zeros(
        (0, len(bank)))


def dense_scores(encoder, preprocessor, queries, bank, batch_size=64):
    """Cosine scores `[queries, bank]` of an encoder from `build_encoder`."""
    from sft_keras.models.retrieval import embed_texts

    q = embed_texts(encoder, preprocessor, queries, batch_size)
    b = embed_texts(encoder, preprocessor, bank, batch_size)
    return q @ b.T


def write_retrieval_report(model, zero_shot_model, preprocessor, examples, report_dir,
                           dataset=None, training_log=None, batch_size=64,
                           num_examples=NUM_EXAMPLES, split="validation"):
    """Scores the fine-tuned dual encoder, the encoder before fine-tuning and BM25; writes
    the report folder; returns the fine-tuned model's metrics.

    Args:
        model: the trained dual encoder (`build_dual_encoder`), compiled.
        zero_shot_model: the same architecture with the pretrained weights.
        preprocessor: the run's keras-hub preprocessor.
        examples: the validation `PairExamples`.
        report_dir: str. Created if needed.
        dataset: the batched validation dataset or None: adds the in-batch
            `loss` and `accuracy` of `model.evaluate`.
        training_log: str or None. Draws `training_curves.png` from it.
        batch_size: int. Texts per encoder call.
        num_examples: int. Example questions in `retrieval_report.md`.
        split: str. Recorded as `split` in `metrics.json`.

    Returns:
        dict: `recall@1`, `recall@5`, `recall@10`, `mrr`, `num_questions`,
        `bank_size`, `split`, `zero_shot` and `bm25` (dicts of the same
        metrics), and `loss`/`accuracy` when `dataset` is given.
    """
    from sft_keras.evaluation import report
    from sft_keras.models.retrieval import build_encoder

    os.makedirs(report_dir, exist_ok=True)
    queries, bank, relevant = queries_and_relevance(examples)
    tuned = dense_scores(build_encoder(model), preprocessor, queries, bank, batch_size)
    before = dense_scores(build_encoder(zero_shot_model), preprocessor, queries, bank, batch_size)
    lexical = bm25_scores(queries, bank)
    metrics = {}
    if dataset is not None:
        metrics.update(report.evaluate_model(model, dataset, len(examples), split))
    metrics.update(rank_metrics(tuned, relevant))
    metrics["split"] = split
    metrics["zero_shot"] = rank_metrics(before, relevant)
    metrics["bm25"] = rank_metrics(lexical, relevant)
    report.write_metrics(metrics, report_dir)
    atomic_write_text(os.path.join(report_dir, "retrieval_report.md"), _markdown(
        metrics, queries, bank, relevant, before, tuned, num_examples))
    report._write_training_curves(training_log, report_dir)
    return metrics


def _markdown(metrics, queries, bank, relevant, before, after, num_examples):
    def cell(text):
        return text.replace("|", "\\|").replace("\n", " / ")

    names = ("recall@1", "recall@5", "recall@10", "mrr")
    lines = [f"# Retrieval report ({metrics['split']}: {metrics['num_questions']} questions, "
             f"a bank of {metrics['bank_size']} replies)", "",
             "| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, row in (("BM25 (bm25s)", metrics["bm25"]),
                       ("encoder before fine-tuning", metrics["zero_shot"]),
                       ("fine-tuned", metrics)):
        lines.append(f"| {label} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    lines += ["", "## Example questions: top 3 replies before -> after fine-tuning",
              "(* marks a relevant reply)", "",
              "| question | before | after |", "|---|---|---|"]
    for i in range(min(num_examples, len(queries))):
        shown = []
        for scores in (before, after):
            top = np.argsort(-scores[i], kind="stable")[:3]
            shown.append("<br>".join(
                f"{'*' if j in relevant[i] else ''}{cell(bank[j])} ({scores[i, j]:.2f})"
                for j in top))
        lines.append(f"| {cell(queries[i])} | {shown[0]} | {shown[1]} |")
    return "\n".join(lines) + "\n"


def read_retrieval_metrics(report_dir):
    """The `metrics.json` of a retrieval report, as a dict."""
    with open(os.path.join(report_dir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)
