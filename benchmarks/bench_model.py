"""Times EagleForConditionalGeneration against transformers' LLaVA holding the same weights, and each vision expert.

1. The `llava_1_5` preset at a small-but-not-tiny size (CLIP 256 wide, 4 layers, 112x112 patch 14 -> 64 image tokens;
   Llama 256 wide, 4 layers, vocabulary 1000) against `LlavaForConditionalGeneration` with the very same weights
   (copied through the one rename table, `modeling_tests/llava_reference.py`): image features, one forward pass on an
   image prompt (also at feature layer -1, where ours prunes nothing) and a 32-token greedy `generate`. Measurements
   are interleaved (A B, B A, ...) after warm-up runs; medians are reported.
2. The vision side of Eagle: each expert kind alone (a one-expert Eagle's `model.vision_tower`), and the whole Eagle-X5
   tower, at a small size (shared image 256x256, 16x16 grid, backbones 256 wide with 4 layers).

    OMP_NUM_THREADS=1 PYTHONPATH=src:modeling_tests python benchmarks/bench_model.py [--threads 1] [--repeats 15]
"""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its pool; --threads sets torch's own count

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT / "src", ROOT / "modeling_tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig  # noqa: E402

from eagle_hf.configuration_eagle import EagleConfig  # noqa: E402
from eagle_hf.modeling_eagle import EagleForConditionalGeneration  # noqa: E402
from llava_reference import copy_llava_weights, random_llava, randomize_  # noqa: E402

IMAGE_TOKEN_ID = 999
NEW_TOKENS = 32


def text_config():
    return LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def small_llava_config(feature_layer=-2):
    backbone = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, patch_size=14,
                    hidden_act="quick_gelu")
    clip = dict(image_size=112, feature_layer=feature_layer, backbone_config=backbone)
    return EagleConfig.llava_1_5(text_config=text_config(), expert_overrides={"clip": clip},
                                 image_token_id=IMAGE_TOKEN_ID, image_size=112, grid_size=8)


# Every expert at the benchmark's size: a 256x256 shared image and a 16x16 grid; ViTs 256 wide with 4 layers.
VIT = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4)
SMALL_EXPERTS = {
    "clip": dict(kind="clip", image_size=224, prefix_tokens="drop_before_encoder",
                 backbone_config=dict(VIT, intermediate_size=1024, patch_size=14, hidden_act="quick_gelu")),
    "siglip": dict(kind="siglip", image_size=256, backbone_config=dict(VIT, intermediate_size=1024, patch_size=16)),
    "dinov2": dict(kind="dinov2", image_size=224, backbone_config=dict(VIT, mlp_ratio=4, patch_size=14)),
    "convnext": dict(kind="convnext", image_size=256,
                     backbone_config=dict(depths=[1, 1, 3, 1], hidden_sizes=[64, 128, 256, 512], patch_size=4)),
    "sam": dict(kind="sam", image_size=256, grid_resample="pixel_unshuffle", unshuffle_factor=2,
                backbone_config=dict(VIT, global_attn_indexes=[1, 3], patch_size=8, window_size=8,
                                     output_channels=64, mlp_dim=1024, num_pos_feats=128)),
    "eva02": dict(kind="eva02", image_size=256,
                  backbone_config=dict(VIT, intermediate_size=683, global_attn_indexes=[1, 3], patch_size=8,
                                       window_size=8, pretrain_image_size=128)),
    "pix2struct": dict(kind="pix2struct", image_size=256, max_patches=256,
                       backbone_config=dict(VIT, d_ff=1024, d_kv=64, patch_size=16, patch_embed_hidden_size=768)),
}
SHARED_IMAGE, GRID = 256, 16


def one_expert_config(kind):
    return EagleConfig(text_config=text_config(), vision_experts=[SMALL_EXPERTS[kind]], image_size=SHARED_IMAGE,
                       grid_size=GRID, image_token_id=IMAGE_TOKEN_ID)


def x5_config():
    overrides = {kind: {k: v for k, v in SMALL_EXPERTS[kind].items() if k != "kind"}
                 for kind in ("clip", "convnext", "sam", "eva02", "pix2struct")}
    return EagleConfig.eagle_x5(text_config=text_config(), expert_overrides=overrides, image_size=SHARED_IMAGE,
                                grid_size=GRID, image_token_id=IMAGE_TOKEN_ID)


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def interleaved_times(functions, repeats, warmup):
    """Seconds of each run of each function, run in turns (A B, B A, A B...) so drifts of the machine hit all alike."""
    for _ in range(warmup):
        for function in functions:
            function()
    times = [[] for _ in functions]
    for repeat in range(repeats):
        order = range(len(functions)) if repeat % 2 == 0 else reversed(range(len(functions)))
        for index in order:
            times[index].append(timed(functions[index]))
    return times


def interleaved_medians(functions, repeats, warmup):
    return [statistics.median(t) for t in interleaved_times(functions, repeats, warmup)]


def median_seconds(function, repeats, warmup):
    return interleaved_medians([function], repeats, warmup)[0]


def millions(module):
    return sum(p.numel() for p in module.parameters()) / 1e6


def image_prompt(config, before=8, after=16):
    generator = torch.Generator().manual_seed(0)
    ids = [1] + [5 + i for i in range(before)] + [IMAGE_TOKEN_ID] * config.image_seq_length
    ids += [20 + i for i in range(after)]
    pixel_values = torch.randn(1, 3, config.image_size, config.image_size, generator=generator)
    return torch.tensor([ids]), pixel_values


def same_weights_pair(config):
    llava = random_llava(config, seed=0)
    eagle = EagleForConditionalGeneration(config).eval()
    copy_llava_weights(llava, eagle)
    return eagle, llava


@torch.no_grad()
def bench_llava(repeats, warmup):
    config = small_llava_config()
    eagle, llava = same_weights_pair(config)
    # The same at feature layer -1, where ours prunes nothing: what remains of the difference is framework overhead.
    eagle_last, llava_last = same_weights_pair(small_llava_config(feature_layer=-1))
    for model in (llava, eagle):
        model.generation_config.eos_token_id = None  # always 32 new tokens
        model.generation_config.pad_token_id = 0
    input_ids, pixel_values = image_prompt(config)
    inputs = dict(input_ids=input_ids, pixel_values=pixel_values)
    logit_diff = (eagle(**inputs).logits - llava(**inputs).logits).abs().max().item()
    logit_diff_last = (eagle_last(**inputs).logits - llava_last(**inputs).logits).abs().max().item()
    generate = dict(inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    eagle_tokens, llava_tokens = eagle.generate(**generate), llava.generate(**generate)
    assert eagle_tokens.shape[1] == llava_tokens.shape[1] == input_ids.shape[1] + NEW_TOKENS
    same_tokens = eagle_tokens.tolist() == llava_tokens.tolist()

    print(f"\n== llava_1_5 preset vs transformers LlavaForConditionalGeneration, same weights "
          f"(eagle {millions(eagle):.2f}M params, llava {millions(llava):.2f}M: ours prunes the CLIP layer after "
          f"feature layer -2 and the unused post-layernorm)")
    print(f"prompt {input_ids.shape[1]} tokens ({config.image_seq_length} image tokens, CLIP 112/14, 4 layers x 256; "
          f"Llama 4 layers x 256, vocab 1000); fp32; max |logit diff| {logit_diff:.2e} "
          f"(feature layer -1: {logit_diff_last:.2e}); "
          f"identical {NEW_TOKENS}-token greedy output: {same_tokens}")
    print(f"{'case':<28} {'eagle ms':>9} {'llava ms':>9} {'eagle/llava':>11} {'paired':>7}")
    cases = [
        ("image features", lambda: eagle.model.get_image_features(pixel_values),
         lambda: llava.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=-2,
                                                vision_feature_select_strategy="default")),
        ("forward (image prompt)", lambda: eagle(**inputs), lambda: llava(**inputs)),
        ("forward, feature layer -1", lambda: eagle_last(**inputs), lambda: llava_last(**inputs)),
        (f"generate {NEW_TOKENS} tokens greedy", lambda: eagle.generate(**generate),
         lambda: llava.generate(**generate)),
    ]
    ratios = {}
    for name, run_eagle, run_llava in cases:
        eagle_times, llava_times = interleaved_times([run_eagle, run_llava], repeats, warmup)
        eagle_s, llava_s = statistics.median(eagle_times), statistics.median(llava_times)
        paired = statistics.median(e / l for e, l in zip(eagle_times, llava_times))
        ratios[name] = eagle_s / llava_s
        print(f"{name:<28} {eagle_s * 1e3:9.2f} {llava_s * 1e3:9.2f} {eagle_s / llava_s:11.3f} {paired:7.3f}")
    return ratios


@torch.no_grad()
def bench_experts(repeats, warmup):
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(1, 3, SHARED_IMAGE, SHARED_IMAGE, generator=generator)
    print(f"\n== vision experts alone and the Eagle-X5 tower: one {SHARED_IMAGE}x{SHARED_IMAGE} image, "
          f"{GRID}x{GRID} grid, fp32")
    towers = {}
    for kind in SMALL_EXPERTS:
        model = randomize_(EagleForConditionalGeneration(one_expert_config(kind)), seed=0).eval()
        towers[kind] = model.model.vision_tower
    config = x5_config()
    model = randomize_(EagleForConditionalGeneration(config), seed=0).eval()
    # One interleaved run over every case, so that load changes on the machine hit all of them alike.
    functions = [lambda tower=tower: tower(pixel_values) for tower in towers.values()]
    functions += [lambda: model.model.vision_tower(pixel_values), lambda: model.get_image_features(pixel_values),
                  lambda: pixel_values.is_floating_point() and bool(torch.isfinite(pixel_values).all())]
    seconds = interleaved_medians(functions, repeats, warmup)
    alone = dict(zip(towers, seconds))
    tower_s, features_s, check_s = seconds[-3:]

    print(f"{'expert':<12} {'input':>7} {'native map':>10} {'grid ch':>8} {'params M':>9} {'ms':>9}")
    for kind, tower in towers.items():
        expert = tower.experts[0].expert_config
        size = f"{expert.feature_map_size}x{expert.feature_map_size}"
        print(f"{kind:<12} {expert.image_size:>7} {size:>10} {expert.hidden_size:>8} {millions(tower):9.2f} "
              f"{alone[kind] * 1e3:9.2f}")
    kinds = [e.kind for e in config.vision_experts]
    tower_params = millions(model.model.vision_tower)
    print(f"Eagle-X5 ({'+'.join(kinds)}), {config.mm_hidden_size} fused channels:")
    print(f"{'X5 tower':<12} {SHARED_IMAGE:>7} {'':>10} {config.mm_hidden_size:>8} {tower_params:9.2f} "
          f"{tower_s * 1e3:9.2f}")
    print(f"{'+ projector':<12} {'':>7} {'':>10} {config.text_config.hidden_size:>8} "
          f"{tower_params + millions(model.model.multi_modal_projector):9.2f} {features_s * 1e3:9.2f}")
    print(f"{'sum alone':<12} {'':>7} {'':>10} {'':>8} {'':>9} {sum(alone[k] for k in kinds) * 1e3:9.2f}"
          f"   (the five X5 experts' times above, added)")
    print(f"input check (dtype + finiteness of pixel_values, part of get_image_features): {check_s * 1e3:.3f} ms = "
          f"{check_s / features_s:.2%} of the X5 image features (target <= 1%; smaller at full size, where the image "
          f"grows 16x and the tower far more)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=25, help="timed runs per case, median reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per case first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    start = time.perf_counter()
    print(f"# bench_model.py on {platform.machine()} {platform.processor() or platform.system()}, "
          f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, python {platform.python_version()}; "
          f"{datetime.datetime.now().isoformat(timespec='minutes')}; repeats {args.repeats}, warm-up {args.warmup}")
    ratios = bench_llava(args.repeats, args.warmup)
    target = all(ratio <= 1.05 for ratio in ratios.values())
    print(f"eagle/llava (ratio of medians) <= 1.05 in every case: {target}; 'paired' is the median of the per-turn "
          f"ratios, less sensitive to load changes on the machine")
    bench_experts(args.repeats, args.warmup)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
