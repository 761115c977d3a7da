#!/usr/bin/env bash
# FSDP smoke on one CUDA GPU (accelerate runs FSDP only on accelerators: on CPU a launch becomes DDP, so the CPU suite
# cannot run it). Eagle-X5's whole plan at tiny size through the repository's fsdp.yaml, then a check that the stage
# folders are normal checkpoints. Run from the repository root on a machine with the project installed:
#     bash benchmarks/gpu/fsdp_check.sh [OUT]        (about a minute)
set -euo pipefail
out=${1:-/tmp/eagle-hf-fsdp-check}
rm -rf "$out" && mkdir -p "$out"
eagle-hf smoke-kit "$out/kit" --preset eagle_x5 --samples 8
python - "$out" <<'PY'
import sys, yaml
config = yaml.safe_load(open("training_scripts/accelerate_configs/fsdp.yaml"))
config.update(num_processes=1, mixed_precision="bf16")
yaml.safe_dump(config, open(f"{sys.argv[1]}/fsdp_1gpu.yaml", "w"))
PY
accelerate launch --config_file "$out/fsdp_1gpu.yaml" training_scripts/sft.py \
    --config training_scripts/recipes/eagle_x5.yaml --init "$out/kit/init" --output_dir "$out/run" \
    --max_steps 2 --per_device_train_batch_size 2 --gradient_accumulation_steps 1 --eval_fraction 0.25 \
    --set data.pretrain.json="$out/kit/data/captions.json" data.pretrain.image_folder="$out/kit/data/images" \
          data.sft.json="$out/kit/data/conversations.json" data.sft.image_folder="$out/kit/data/images" \
    2>&1 | tee "$out/train.log"
python -c "
import sys
from transformers import AutoModelForImageTextToText
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True)
print('FSDP stage output loads with the Auto classes:', type(model).__name__)
" "$out/run/eagle_sft" | tee -a "$out/train.log"
grep -q "distributed type FSDP" "$out/train.log" && echo "ran under FSDP" || { echo "not FSDP: see the stage lines of the log"; exit 1; }
