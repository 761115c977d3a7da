"""Held-out evaluation of the demo: greedy short answers, exact match after normalisation, accuracy per question type,
and the majority-answer baseline ("chance") each type is compared with."""

from collections import Counter, defaultdict

import torch

from .scenes import QUESTION_TYPES, normalize_answer

MAX_NEW_TOKENS = 5  # the longest answer ("bottom right") is two tokens, then </s>


def chat_prompt(processor, question):
    """The single-turn prompt of `question` about one image, ending where the assistant starts."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


@torch.no_grad()
def answer(model, processor, images, questions):
    """Greedy answers (decoded, stripped) of `model` to `questions`, the i-th about `images[i]`, in one batch."""
    prompts = [chat_prompt(processor, question) for question in questions]
    inputs = processor(images=[[image] for image in images], text=prompts, padding=True, padding_side="left",
                       return_tensors="pt").to(model.device)
    output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def predict(model, processor, split, items, batch_size=64, progress=None):
    """Answers to every evaluation item of `split` (see `scenes.evaluation_items`), in order."""
    model.eval()
    predictions = []
    for start in range(0, len(items), batch_size):
        batch = items[start: start + batch_size]
        predictions += answer(model, processor, [split.image(item["index"]) for item in batch],
                              [item["question"] for item in batch])
        if progress is not None:
            progress.update(len(batch))
    return predictions


def accuracy_by_type(items, predictions):
    """{type: accuracy} for every question type, plus "all" (every question counts once)."""
    correct, total = defaultdict(int), Counter()
    for item, prediction in zip(items, predictions):
        total[item["type"]] += 1
        correct[item["type"]] += normalize_answer(prediction) == normalize_answer(item["answer"])
    scores = {kind: correct[kind] / total[kind] for kind in QUESTION_TYPES if total[kind]}
    scores["all"] = sum(correct.values()) / max(1, sum(total.values()))
    return scores


def majority_baseline(train_items, test_items):
    """{type: accuracy} of always giving the training split's most frequent answer of that type (and "all")."""
    most_common = {}
    for kind in QUESTION_TYPES:
        answers = Counter(item["answer"] for item in train_items if item["type"] == kind)
        most_common[kind] = answers.most_common(1)[0][0] if answers else ""
    return accuracy_by_type(test_items, [most_common[item["type"]] for item in test_items])
