"""transformers' shared model tests (ModelTesterMixin, GenerationTesterMixin) run against eagle-hf: the one-expert
LLaVA-1.5 preset and a CLIP + ConvNeXt + SAM mixture. `run.py` copies this file into a copy of transformers' `tests/`
package and runs it there; it is not part of the project's own suite (CI cannot fetch transformers' tests)."""
import inspect
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.environ["EAGLE_HF_REPO"], "modeling_tests"))  # the project's tiny-config factory
import torch  # noqa: E402

torch.set_num_threads(1)

from transformers.testing_utils import require_torch, torch_device  # noqa: E402

from eagle_hf.configuration_eagle import EagleConfig  # noqa: E402
from eagle_hf.modeling_eagle import EagleForConditionalGeneration, EagleModel  # noqa: E402
from tiny import tiny_eagle_config, tiny_llava_config  # noqa: E402

from transformers import StaticCache  # noqa: E402
from transformers.models.auto.modeling_auto import (  # noqa: E402
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

# Harness: registered as transformers registers its own models (the shared tests read these name tables).
MODEL_MAPPING_NAMES["eagle"] = "EagleModel"
MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES["eagle"] = "EagleForConditionalGeneration"
# Version gap: a generation/test_utils.py older than the installed transformers reads two names removed since (no model
# of 5.25 has them). Added only where missing.
if not hasattr(EagleForConditionalGeneration, "_is_stateful"):
    EagleForConditionalGeneration._is_stateful = False
if not hasattr(StaticCache, "get_max_cache_shape"):
    StaticCache.get_max_cache_shape = lambda self: self.get_max_length()

from .generation.test_utils import GenerationTesterMixin  # noqa: E402
from .test_configuration_common import ConfigTester  # noqa: E402
from .test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402


# Low (resize tests clamp the vocabulary to 80), clear of the ids 0-4 batch growth draws and 10-15 of the 4D-mask test.
HARNESS_IMAGE_TOKEN_ID = 20


class EagleTester:
    def __init__(self, parent, make_config):
        self.parent = parent
        self.make_config = make_config
        config = self.get_config()
        self.batch_size = 3
        self.text_length = 7
        self.num_image_tokens = config.image_seq_length
        self.seq_length = self.text_length + self.num_image_tokens
        self.encoder_seq_length = self.seq_length
        self.num_hidden_layers = config.text_config.num_hidden_layers
        self.hidden_size = config.text_config.hidden_size
        self.num_attention_heads = config.text_config.num_attention_heads
        self.vocab_size = config.text_config.vocab_size
        self.pad_token_id = config.text_config.pad_token_id
        self.is_training = True

    def get_config(self):
        config = self.make_config()
        config.image_token_id = HARNESS_IMAGE_TOKEN_ID  # a low id, as LLaVA's tester: resize tests clamp the vocab
        return config

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        size = config.image_size
        pixel_values = floats_tensor([self.batch_size, 3, size, size])
        input_ids = ids_tensor([self.batch_size, self.seq_length], config.text_config.vocab_size - 4) + 3
        input_ids[input_ids == HARNESS_IMAGE_TOKEN_ID] = HARNESS_IMAGE_TOKEN_ID + 1
        if getattr(self, "text_only", False):
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long).to(torch_device)
            return config, {"input_ids": input_ids, "attention_mask": attention_mask}
        input_ids[:, : self.num_image_tokens] = HARNESS_IMAGE_TOKEN_ID
        attention_mask = torch.ones(input_ids.shape, dtype=torch.long).to(torch_device)
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


class _EagleSharedTests(ModelTesterMixin, GenerationTesterMixin):
    all_model_classes = (EagleModel, EagleForConditionalGeneration)
    all_generative_model_classes = (EagleForConditionalGeneration,)
    _is_composite = True
    additional_model_inputs = ["pixel_values"]
    make_config = None

    def setUp(self):
        self.model_tester = EagleTester(self, type(self).make_config)
        if self._testMethodName.startswith("test_model_rope_scaling_from_config"):
            self.skipTest("draws ids over the whole vocabulary with no images: eagle-hf refuses the image tokens among "
                          "them (deliberate, LLaVA embeds them as text); rope scaling is the Llama LM's own, tested there")
        if self._testMethodName.startswith("test_eager_matches_sdpa_inference"):
            # Deliberate deviation: eagle-hf refuses image tokens without images (LLaVA embeds them as text). These
            # tests grow the batch with random ids and images (or draw ids over the whole vocabulary), so they run
            # text-only here; the project's own tests compare sdpa and eager with images.
            self.model_tester.text_only = True
            self.additional_model_inputs = []
        self.config_tester = ConfigTester(self, config_class=EagleConfig, has_text_modality=False,
                                          common_properties=["image_token_id", "image_seq_length"])

    # The fused features' width is the experts' channels summed (mm_hidden_size), not one vision_config's hidden_size:
    # the project's own tests check the shapes.
    skip_test_image_features_output_shape = True

    @staticmethod
    def _config_under_test(default):
        """The config the calling shared test built its model from (its local `config`), else `default`."""
        for frame in inspect.stack():
            if frame.function.startswith("check_") and "config" in frame.frame.f_locals:
                return frame.frame.f_locals["config"]
        return default

    def _image_features_get_expected_num_hidden_states(self, model_tester=None):
        from eagle_hf.vision_experts import expert_blocks

        model = EagleModel(self._config_under_test(self.model_tester.get_config()))
        return sum(len(expert_blocks(e.backbone)) + 1 for e in model.vision_tower.experts)

    def _image_features_get_expected_num_attentions(self, model_tester=None):
        """Every expert block with attention, under eager attention (the test switches the built model to eager; SAM
        keeps the kernel it was built with, and gives probabilities only if that is eager)."""
        from eagle_hf.vision_experts import _block_attention, expert_blocks

        model = EagleModel(self._config_under_test(self.model_tester.get_config()))
        model.set_attn_implementation("eager")
        return sum(_block_attention(block) is not None for e in model.vision_tower.experts
                   if e.expert_config.backbone_config._attn_implementation == "eager"
                   for block in expert_blocks(e.backbone))

    # Version gap: older generation tests ask for cache "dynamic_full", which 5.25 names "dynamic".
    def _run_with_current_cache_names(self, test):
        import unittest.mock

        original = EagleForConditionalGeneration.generate

        def generate(model, *args, **kwargs):
            if kwargs.get("cache_implementation") == "dynamic_full":
                kwargs["cache_implementation"] = "dynamic"
            return original(model, *args, **kwargs)

        with unittest.mock.patch.object(EagleForConditionalGeneration, "generate", generate):
            test()

    def test_assisted_decoding_sample(self):
        self._run_with_current_cache_names(super().test_assisted_decoding_sample)

    def test_assisted_decoding_matches_greedy_search_0_random(self):
        self._run_with_current_cache_names(super().test_assisted_decoding_matches_greedy_search_0_random)

    def test_assisted_decoding_matches_greedy_search_1_same(self):
        self._run_with_current_cache_names(super().test_assisted_decoding_matches_greedy_search_1_same)

    def test_config(self):
        self.config_tester.run_common_tests()


@require_torch
class LlavaPresetSharedTest(_EagleSharedTests, unittest.TestCase):
    make_config = staticmethod(tiny_llava_config)


@require_torch
class ClipConvnextSamSharedTest(_EagleSharedTests, unittest.TestCase):
    make_config = staticmethod(lambda: tiny_eagle_config(("clip", "convnext", "sam")))
