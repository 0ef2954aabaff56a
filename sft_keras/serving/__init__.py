"""Serving: SavedModels for TF Serving whose signatures take raw inputs (`export`), the
core-TF WordPiece tokenizer they embed (`core_tokenizer`), and predicting with an export
(`predict`, the `sft-predict` command)."""
