"""`eagle-hf demo`: the whole system end to end on a CPU in minutes, with data made on the spot.

    eagle-hf demo --out eagle-hf-demo        # or: python -m eagle_hf demo; --quick for a pipeline check

It draws the images and questions, trains a tokenizer, builds a small Eagle (and a one-expert baseline) from the
package's classes, trains both from scratch with Eagle's three stages (`eagle_hf.training.run_plan`), evaluates them on
held-out questions, saves the Eagle as a Hub-format checkpoint and answers sample questions with it again in a fresh
process through the Auto classes. Importing this module is cheap; the run imports the training stack.
"""

from .cli import add_demo_arguments, run_demo

__all__ = ["add_demo_arguments", "run_demo"]
