#!/usr/bin/env bash
# vLLM's Transformers modeling backend on an eagle-hf checkpoint, on one CUDA GPU (vLLM needs a GPU build; the CPU
# suite checks the processor and model hooks the backend reads: modeling_tests/test_vllm_contract.py). Greedy answers
# of vLLM and of transformers' generate to the same image prompts are printed side by side and compared.
#     pip install vllm && bash benchmarks/gpu/vllm_check.sh [CHECKPOINT]   (default: a tiny eagle-hf smoke-kit model)
set -euo pipefail
out=/tmp/eagle-hf-vllm-check
checkpoint=${1:-}
if [ -z "$checkpoint" ]; then
    rm -rf "$out" && eagle-hf smoke-kit "$out" --preset eagle_x5 --samples 4
    checkpoint="$out/init"
fi
python - "$checkpoint" <<'PY'
import sys
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from vllm import LLM, SamplingParams

checkpoint = sys.argv[1]
processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
images = [Image.new("RGB", (320, 240), colour) for colour in ("red", "blue")]
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
llm = LLM(model=checkpoint, model_impl="transformers", trust_remote_code=True, max_model_len=4096,
          limit_mm_per_prompt={"image": 1})
print("vLLM model class:", llm.llm_engine.model_config.architectures)
outputs = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": image}} for image in images],
                       SamplingParams(temperature=0, max_tokens=16))
model = AutoModelForImageTextToText.from_pretrained(checkpoint, trust_remote_code=True, dtype="auto").cuda().eval()
same = True
for image, output in zip(images, outputs):
    inputs = processor(text=prompt, images=[image], return_tensors="pt").to("cuda")
    tokens = model.generate(**inputs, do_sample=False, max_new_tokens=16)
    ours = processor.decode(tokens[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"vLLM: {output.outputs[0].text!r}\ntransformers: {ours!r}")
    same &= output.outputs[0].text.strip() == ours.strip()
print("identical greedy answers:", same)
sys.exit(0 if same else 1)
PY
