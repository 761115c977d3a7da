"""eagle-hf: Eagle (a mixture of vision experts) and LLaVA-1.5 as native transformers models.

The classes load on first use (`from eagle_hf import EagleForConditionalGeneration`), so `import eagle_hf` and the
command line's `--help` import neither torch nor transformers. Taking any class from the package also registers the
classes with the Auto classes (`register_auto_classes`), so that with the package installed they load eagle-hf
checkpoints without `trust_remote_code`. `save_pretrained` writes the flat model files and an `auto_map` next to the
weights either way (each class registers itself for its Auto class), so a checkpoint loads anywhere with
`trust_remote_code=True`.
"""

import importlib

__version__ = "0.1.0"

# exported name -> the module defining it
_EXPORTS = {
    "EagleConfig": "configuration_eagle",
    "EagleVisionExpertConfig": "configuration_eagle",
    "Eva02VisionConfig": "configuration_eva02",
    "EagleImageProcessor": "image_processing_eagle",
    "EagleForConditionalGeneration": "modeling_eagle",
    "EagleModel": "modeling_eagle",
    "EaglePreTrainedModel": "modeling_eagle",
    "Eva02VisionModel": "modeling_eva02",
    "EagleProcessor": "processing_eagle",
}
_registered = False


def register_auto_classes():
    """Registers the eagle-hf classes with AutoConfig, AutoModel, AutoModelForImageTextToText, AutoImageProcessor and
    AutoProcessor (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor

    from .configuration_eagle import EagleConfig
    from .image_processing_eagle import EagleImageProcessor
    from .modeling_eagle import EagleForConditionalGeneration, EagleModel
    from .processing_eagle import EagleProcessor

    AutoConfig.register("eagle_hf", EagleConfig, exist_ok=True)
    AutoModel.register(EagleConfig, EagleModel, exist_ok=True)
    AutoModelForImageTextToText.register(EagleConfig, EagleForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(EagleConfig, EagleImageProcessor, exist_ok=True)
    AutoProcessor.register(EagleConfig, EagleProcessor, exist_ok=True)
    _registered = True


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eagle_hf' has no attribute {name!r}")
    register_auto_classes()
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = [*sorted(_EXPORTS), "register_auto_classes"]
