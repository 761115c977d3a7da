"""Converting original Eagle (NVEagle) and LLaVA-1.5 checkpoints, and transformers' LLaVA ones, to eagle-hf.

Never imported by the files shipped next to the weights.
"""

from .cli import add_convert_arguments, run_convert
from .convert import FAMILIES, ConversionReport, convert_checkpoint
from .init import init_checkpoint
from .source import ConversionError

__all__ = ["FAMILIES", "ConversionError", "ConversionReport", "add_convert_arguments", "convert_checkpoint",
           "init_checkpoint",
           "run_convert"]
