"""The demo's last check: the saved checkpoint, loaded through the Auto classes in a fresh Python process in which
`eagle_hf` cannot be imported (so the checkpoint's own model and processor files run), answers sample questions about
images saved beside it exactly as the in-process model does."""

import json
import os
import subprocess
import sys
import tempfile

from PIL import Image

from ..synthetic.evaluate import MAX_NEW_TOKENS, answer
from ..synthetic.scenes import QUESTION_TYPES

RELOAD_SCRIPT = """
import json, sys
sys.modules["eagle_hf"] = None  # the package must not be importable: only the checkpoint's own files may run
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

checkpoint, samples_path, max_new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = AutoModelForImageTextToText.from_pretrained(checkpoint, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
with open(samples_path, encoding="utf-8") as handle:
    samples = json.load(handle)
answers = []
for sample in samples:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample["question"]}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    with Image.open(sample["path"]) as image:
        inputs = processor(images=[image.convert("RGB")], text=prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    answers.append(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
print(json.dumps(dict(answers=answers, model_class=f"{type(model).__module__}.{type(model).__name__}")))
"""


def save_samples(split, count, folder):
    """Write `count` test images to `folder` with one question each (the types in turn, one image per question)."""
    os.makedirs(folder, exist_ok=True)
    samples = []
    for index in range(min(count, split.size)):
        kind, question, expected = split.questions(index)[index % len(QUESTION_TYPES)]
        name = f"{index}_{kind}.png"
        split.image(index).save(os.path.join(folder, name))
        samples.append(dict(image=f"{os.path.basename(folder)}/{name}", path=os.path.abspath(os.path.join(folder, name)),
                            type=kind, question=question, answer=expected))
    return samples


def answer_in_process(model, processor, samples):
    answers = []
    for sample in samples:
        with Image.open(sample["path"]) as image:
            answers += answer(model, processor, [image.convert("RGB")], [sample["question"]])
    return answers


def answer_in_fresh_process(checkpoint, samples, timeout=600):
    """Run `RELOAD_SCRIPT` on `checkpoint` in a new interpreter (offline, own remote-code cache); its answers and the
    class it loaded. Raises with the subprocess's error output when it fails."""
    with tempfile.TemporaryDirectory() as scratch:
        samples_path = os.path.join(scratch, "samples.json")
        with open(samples_path, "w", encoding="utf-8") as handle:
            json.dump(samples, handle)
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=os.path.join(scratch, "modules"),
                   TRANSFORMERS_VERBOSITY="error")
        done = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, os.path.abspath(checkpoint), samples_path,
                               str(MAX_NEW_TOKENS)], env=env, cwd=scratch, capture_output=True, text=True,
                              timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"Loading the checkpoint in a fresh process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def reload_check(model, processor, checkpoint, split, count, folder):
    """Sample questions answered in-process and by the reloaded checkpoint: {"samples", "answers_equal", ...}."""
    samples = save_samples(split, count, folder)
    in_process = answer_in_process(model, processor, samples)
    reloaded = answer_in_fresh_process(checkpoint, samples)
    for sample, mine, theirs in zip(samples, in_process, reloaded["answers"]):
        sample.update(in_process=mine, reloaded=theirs)
        sample.pop("path")
    return dict(samples=samples, answers_equal=in_process == reloaded["answers"],
                loaded_class=reloaded["model_class"])
