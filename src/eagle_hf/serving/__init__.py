"""Talking to a checkpoint: `eagle-hf chat` (terminal) and `eagle-hf serve` (OpenAI-compatible HTTP). Never imported
by the files shipped next to the weights."""
