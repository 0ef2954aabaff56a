"""Evaluation: the report folder (`report`), its plots (`plots`), and re-scoring a finished
run on its split or on new data (`eval_run`, the `sft-eval` command)."""
