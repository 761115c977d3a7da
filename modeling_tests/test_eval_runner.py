"""`eagle-hf eval`: the runner on the fixture benchmarks of test_eval_benchmarks.py, scored with an oracle whose
scores are worked out by hand and with a tiny model; bad input in the summary; resuming; the command line."""

import argparse
import copy
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from eagle_hf import EagleForConditionalGeneration
from eagle_hf.evaluation import GenerationSettings, TASKS, add_eval_arguments, evaluate_model, get_tasks, run_eval
from eagle_hf.evaluation import runner, write_model_card
from test_eval_benchmarks import ORACLE, write_benchmarks
from tiny import tiny_llava_config, tiny_processor

ALL_TASKS = ",".join(TASKS)


@pytest.fixture(scope="module")
def tiny():
    config = tiny_llava_config()
    torch.manual_seed(0)
    return EagleForConditionalGeneration(config).eval(), tiny_processor(config)


def oracle_answers(model, processor, prompts, images, settings):
    """Stands in for the model: answers each prompt with ORACLE's answer to the question it holds."""
    assert len(images) == len(prompts) and all(isinstance(image, Image.Image) for image in images)
    return [ORACLE[max((question for question in ORACLE if question in prompt), key=len)] for prompt in prompts]


def test_oracle_answers_give_the_hand_computed_scores_of_every_benchmark(tmp_path, tiny, monkeypatch):
    data_dir = write_benchmarks(tmp_path / "data")
    monkeypatch.setattr(runner, "generate_answers", oracle_answers)
    oracle = SimpleNamespace(dtype=torch.float32, name_or_path="oracle")
    summary, markdown = evaluate_model(oracle, tiny[1], ALL_TASKS, data_dir, tmp_path / "out", progress=False)
    headline = {name: task["headline"] for name, task in summary["tasks"].items()}
    expected = {
        "textvqa": {"accuracy": (1 + 0.9 + 0) / 3 * 100},
        "textvqa_ocr": {"accuracy": (1 + 0.9 + 0) / 3 * 100},
        "docvqa": {"ANLS": (7 / 8 + 1) / 2 * 100},
        "chartqa": {"relaxed acc": 2 / 3 * 100, "human": 100.0, "augmented": 0.0},
        # F1: random 1, popular 0 (no "yes" said), adversarial 2/3; yes ratios 1/2, 0, 1
        "pope": {"F1 avg": (1 + 0 + 2 / 3) / 3 * 100, "acc avg": (1 + 0.5 + 0.5) / 3 * 100, "yes ratio avg": 50.0},
        # existence: both questions right (200); every other subtask: one of two (acc 50, acc+ 0)
        "mme": {"perception": 200 + 9 * 50.0, "cognition": 4 * 50.0},
        "mmbench": {"accuracy": 2 / 3 * 100},
        "scienceqa_img": {"accuracy": 50.0},
        "seed": {"accuracy": 100.0},
        "mmvp": {"pair acc": 50.0, "question acc": 75.0},
        # "B", "3" (the text of C), "Foot types" (A) right; "The answer is B" for D wrong; "a life cycle" (A) right
        "ai2d": {"accuracy": 4 / 5 * 100},
    }
    assert headline.keys() == expected.keys()
    for name, values in expected.items():
        assert headline[name] == pytest.approx(values), name
    assert all(task["skipped"] == 0 for task in summary["tasks"].values())
    assert summary["tasks"]["pope"]["scores"]["popular"]["recall"] == 0.0
    assert summary["tasks"]["mme"]["scores"]["existence"]["acc_plus"] == 100.0
    assert "| MMVP (`mmvp`) | pair acc / question acc | 50.00 / 75.00 | 4 | 0 |" in markdown
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert (tmp_path / "out" / "summary.md").read_text() == markdown
    record = json.loads((tmp_path / "out" / "predictions" / "mmvp.jsonl").read_text().splitlines()[1])
    assert {key: record[key] for key in ("id", "prediction", "parsed", "score", "reference")} == {
        "id": "2", "prediction": "(b) Closed", "parsed": "B", "score": 1.0, "reference": "B"}


def test_the_summary_states_the_protocol(tmp_path, tiny, monkeypatch):
    data_dir = write_benchmarks(tmp_path / "data", ["pope"])
    monkeypatch.setattr(runner, "generate_answers", oracle_answers)
    oracle = SimpleNamespace(dtype=torch.float32, name_or_path="oracle")
    summary, markdown = evaluate_model(oracle, tiny[1], "pope", data_dir, tmp_path / "out", progress=False,
                                       settings=GenerationSettings(max_new_tokens=7, batch_size=5))
    assert summary["run"]["max_new_tokens"] == 7 and summary["run"]["batch_size"] == 5
    assert "Greedy decoding (1 beam, no sampling), at most 7 new tokens, batches of 5 left-padded" in markdown
    assert "unweighted mean over the three splits" in markdown
    prompt = summary["tasks"]["pope"]["example_prompt"]
    assert prompt.startswith("<s>A chat between a curious user") and prompt.endswith(
        "USER: <image>\nIs there a dog in the image?\nAnswer the question using a single word or phrase. ASSISTANT:")


def test_a_tiny_model_runs_every_benchmark_in_left_padded_greedy_batches(tmp_path, tiny):
    model, processor = tiny
    data_dir = write_benchmarks(tmp_path / "data")
    summary, _ = evaluate_model(model, processor, ALL_TASKS, data_dir, tmp_path / "out", progress=False,
                                settings=GenerationSettings(max_new_tokens=3, batch_size=4))
    counts = {"textvqa": 3, "textvqa_ocr": 3, "docvqa": 2, "chartqa": 3, "pope": 6, "mme": 28, "mmbench": 3,
              "scienceqa_img": 2, "seed": 2, "mmvp": 4, "ai2d": 5}
    assert {name: task["scored"] for name, task in summary["tasks"].items()} == counts
    for name in counts:
        records = [json.loads(line) for line in (tmp_path / "out" / "predictions" / f"{name}.jsonl").open()]
        assert len(records) == counts[name]
        assert all(isinstance(record["prediction"], str) and 0 <= record["score"] <= 1 for record in records)
    # a batch of four answers the same as each sample alone: left padding does not change greedy answers
    first = [json.loads(line) for line in (tmp_path / "out" / "predictions" / "pope.jsonl").open()][:4]
    settings = GenerationSettings(max_new_tokens=3, batch_size=1)
    samples, _ = TASKS["pope"].load(data_dir)
    alone = [runner.predict_batch(model, processor, TASKS["pope"], [sample], settings)[0] for sample in samples[:4]]
    assert [record["prediction"] for record in alone] == [record["prediction"] for record in first]


def test_bad_input_is_skipped_counted_and_listed_while_the_rest_is_scored(tmp_path, tiny, monkeypatch):
    data_dir = write_benchmarks(tmp_path / "data", ["pope", "mmvp"])
    (data_dir / "pope" / "coco" / "coco_pope_adversarial.json").unlink()
    (data_dir / "MMVP" / "MMVP Images" / "4.jpg").write_bytes(b"not a jpeg")  # named, present, unreadable
    monkeypatch.setattr(runner, "generate_answers", oracle_answers)
    oracle = SimpleNamespace(dtype=torch.float32, name_or_path="oracle")
    summary, markdown = evaluate_model(oracle, tiny[1], "pope,mmvp", data_dir, tmp_path / "out", progress=False)
    pope, mmvp = summary["tasks"]["pope"], summary["tasks"]["mmvp"]
    assert (pope["scored"], pope["skipped"]) == (4, 1)
    assert set(pope["scores"]) >= {"random", "popular"} and "adversarial" not in pope["scores"]
    assert (mmvp["scored"], mmvp["skipped"]) == (3, 1)
    assert mmvp["scores"]["pairs"] == 1 and mmvp["scores"]["incomplete_pairs"] == 1
    assert mmvp["skipped_samples"][0]["message"].startswith("cannot read the image")
    assert "Skipped samples (2; all are listed in summary.json):" in markdown
    assert "coco_pope_adversarial.json: missing: the POPE adversarial split" in markdown
    assert "MMVP/Questions.csv:line 5: cannot read the image" in markdown


def test_ai2d_abc_questions_lacking_lettered_diagrams_are_skipped_and_counted_and_the_rest_scored(tmp_path, tiny,
                                                                                                 monkeypatch):
    data_dir = write_benchmarks(tmp_path / "data", ["ai2d"])
    shutil.rmtree(data_dir / "ai2d" / "abc_images")
    monkeypatch.setattr(runner, "generate_answers", oracle_answers)
    oracle = SimpleNamespace(dtype=torch.float32, name_or_path="oracle")
    summary, markdown = evaluate_model(oracle, tiny[1], "ai2d", data_dir, tmp_path / "out", progress=False)
    ai2d = summary["tasks"]["ai2d"]
    assert (ai2d["scored"], ai2d["skipped"]) == (3, 2)
    assert ai2d["headline"] == {"accuracy": 100.0}  # the three questions on plain diagrams, all answered right
    assert [entry["file"] for entry in ai2d["skipped_samples"]] == [
        f"{data_dir}/ai2d/questions/1000.png.json", f"{data_dir}/ai2d/questions/1001.png.json"]
    assert all(entry["message"].startswith("abcLabel question: its diagram with the labels replaced by letters")
               for entry in ai2d["skipped_samples"])
    assert "| AI2D test (`ai2d`) | accuracy | 100.00 | 3 | 2 |" in markdown
    assert ai2d["skipped_samples"][1]["location"] == 'questions["Which label shows the egg stage?"]'


def test_an_image_the_processor_refuses_is_skipped_and_the_rest_of_its_batch_answered(tmp_path, tiny):
    model, processor = tiny
    processor = copy.deepcopy(processor)
    processor.image_processor.max_image_pixels = 2000  # the fixture images are 24x18 (padded: 576 pixels)
    data_dir = write_benchmarks(tmp_path / "data", ["pope"])
    Image.new("RGB", (60, 60)).save(data_dir / "pope" / "val2014" / "COCO_val2014_000000000061.jpg")
    summary, _ = evaluate_model(model, processor, "pope", data_dir, tmp_path / "out", progress=False,
                                settings=GenerationSettings(max_new_tokens=3, batch_size=6))
    assert (summary["tasks"]["pope"]["scored"], summary["tasks"]["pope"]["skipped"]) == (5, 1)
    skipped = summary["tasks"]["pope"]["skipped_samples"][0]
    assert skipped["file"].endswith("coco_pope_random.json:line 2")
    assert skipped["message"].startswith("the image processor refused the image")


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumed_gives_the_same_predictions_as_an_uninterrupted_one(tmp_path, tiny, monkeypatch):
    model, processor = tiny
    data_dir = write_benchmarks(tmp_path / "data", ["pope", "mmvp"])
    settings = GenerationSettings(max_new_tokens=4, batch_size=2)
    evaluate_model(model, processor, "pope,mmvp", data_dir, tmp_path / "full", settings, progress=False)
    generate, calls = model.generate, []

    def interrupted_after_two_batches(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise Interrupted
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", interrupted_after_two_batches)
    with pytest.raises(Interrupted):
        evaluate_model(model, processor, "pope,mmvp", data_dir, tmp_path / "resumed", settings, progress=False)
    pope = tmp_path / "resumed" / "predictions" / "pope.jsonl"
    assert len(pope.read_text().splitlines()) == 4  # 2 of POPE's 3 batches of 2
    with open(pope, "a") as handle:
        handle.write('{"id": "adversarial/1", "predic')  # a kill in the middle of a write
    calls.clear()
    monkeypatch.setattr(model, "generate", lambda *args, **kwargs: calls.append(1) or generate(*args, **kwargs))
    summary, _ = evaluate_model(model, processor, "pope,mmvp", data_dir, tmp_path / "resumed", settings,
                                progress=False)
    assert len(calls) == 3  # POPE's last batch and MMVP's two: nothing done twice
    for name in ("pope", "mmvp"):
        resumed = (tmp_path / "resumed" / "predictions" / f"{name}.jsonl").read_bytes()
        assert resumed == (tmp_path / "full" / "predictions" / f"{name}.jsonl").read_bytes()
    assert summary == json.loads((tmp_path / "full" / "summary.json").read_text())


def test_resuming_with_other_settings_is_refused_unless_overwriting(tmp_path, tiny, monkeypatch):
    data_dir = write_benchmarks(tmp_path / "data", ["mmvp"])
    monkeypatch.setattr(runner, "generate_answers", oracle_answers)
    oracle = SimpleNamespace(dtype=torch.float32, name_or_path="oracle")
    evaluate_model(oracle, tiny[1], "mmvp", data_dir, tmp_path / "out", GenerationSettings(max_new_tokens=5),
                   progress=False)
    with pytest.raises(ValueError, match=r"other settings \(max_new_tokens: 5 -> 9\)"):
        evaluate_model(oracle, tiny[1], "mmvp", data_dir, tmp_path / "out", GenerationSettings(max_new_tokens=9),
                       progress=False)
    summary, _ = evaluate_model(oracle, tiny[1], "mmvp", data_dir, tmp_path / "out",
                                GenerationSettings(max_new_tokens=9), overwrite=True, progress=False)
    assert summary["tasks"]["mmvp"]["scored"] == 4


def test_limit_takes_the_first_samples_of_each_task(tmp_path, tiny, monkeypatch):
    data_dir = write_benchmarks(tmp_path / "data", ["pope", "mme"])
    monkeypatch.setattr(runner, "generate_answers", oracle_answers)
    oracle = SimpleNamespace(dtype=torch.float32, name_or_path="oracle")
    summary, markdown = evaluate_model(oracle, tiny[1], "pope,mme", data_dir, tmp_path / "out", limit=2,
                                       progress=False)
    assert [task["scored"] for task in summary["tasks"].values()] == [2, 2]
    assert "Only the first 2 samples of each task (`--limit`)." in markdown


def test_unknown_tasks_are_refused_with_the_list_of_tasks():
    with pytest.raises(ValueError, match="unknown task.*'gqa'.*textvqa, textvqa_ocr, docvqa"):
        get_tasks("pope,gqa")
    assert [task.name for task in get_tasks("mme, pope,mme")] == ["mme", "pope"]


def test_the_summary_goes_into_the_model_card_replacing_an_earlier_one(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: apache-2.0\n---\n# My Eagle\n")
    write_model_card(tmp_path, "## Evaluation\n\nfirst run\n")
    write_model_card(tmp_path, "## Evaluation\n\nsecond run\n")
    text = card.read_text()
    assert text.startswith("---\nlicense: apache-2.0\n---\n# My Eagle\n\n<!-- eagle-hf eval: start -->\n")
    assert "second run" in text and "first run" not in text and text.count("eagle-hf eval: start") == 1
    (tmp_path / "new").mkdir()
    write_model_card(tmp_path / "new", "x")
    expected = "<!-- eagle-hf eval: start -->\nx\n<!-- eagle-hf eval: end -->\n"
    assert (tmp_path / "new" / "README.md").read_text() == expected


def save_checkpoint(path, tiny, tokenize_chunks=None):
    """The tiny model and processor saved as one checkpoint (with the code AutoProcessor needs), the processor storing
    `tokenize_chunks` when given."""
    model, processor = tiny
    if tokenize_chunks is not None:
        processor = copy.copy(processor)
        processor.tokenize_chunks = tokenize_chunks
    model.save_pretrained(path)
    processor.save_pretrained(path)
    assert (path / "processing_eagle.py").is_file()
    return path


def test_the_command_line_loads_a_checkpoint_and_writes_predictions_summary_and_model_card(tmp_path, tiny, capsys):
    checkpoint = save_checkpoint(tmp_path / "ckpt", tiny, tokenize_chunks=True)  # as a converted checkpoint stores
    data_dir = write_benchmarks(tmp_path / "data", ["pope", "mmvp"])
    parser = add_eval_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--model", str(checkpoint), "--tasks", "pope,mmvp", "--data-dir", str(data_dir),
                              "--output-dir", str(tmp_path / "out"), "--limit", "3", "--batch-size", "2",
                              "--max-new-tokens", "3", "--dtype", "float32", "--device", "cpu", "--no-progress",
                              "--write-model-card"])
    assert run_eval(args) == 0
    markdown = capsys.readouterr().out
    assert markdown == (tmp_path / "out" / "summary.md").read_text()
    assert f"## Evaluation of `{checkpoint}`" in markdown
    assert "| POPE (COCO) (`pope`) | F1 avg / acc avg / yes ratio avg |" in markdown
    assert len((tmp_path / "out" / "predictions" / "pope.jsonl").read_text().splitlines()) == 3
    assert markdown.strip() in (checkpoint / "README.md").read_text()
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["tokenize_chunks"] is True and run["dtype"] == "torch.float32"


@pytest.mark.parametrize("stored, flag, expected", [(False, [], False), (True, [], True), (False, ["--tokenization",
                         "chunks"], True), (True, ["--tokenization", "whole"], False)])
def test_eval_tokenises_as_the_checkpoint_stores_unless_told_otherwise(tmp_path, tiny, monkeypatch, stored, flag,
                                                                         expected):
    checkpoint = save_checkpoint(tmp_path / "ckpt", tiny, tokenize_chunks=stored)
    seen, generate_answers = [], runner.generate_answers

    def recording_generate_answers(model, processor, *args):
        # The checkpoint's processor class is its own code's (trust_remote_code): record what its calls are told.
        processor_class, call = type(processor), type(processor).__call__
        monkeypatch.setattr(processor_class, "__call__",
                            lambda self, *a, **k: seen.append(k.get("tokenize_chunks")) or call(self, *a, **k))
        try:
            return generate_answers(model, processor, *args)
        finally:
            monkeypatch.setattr(processor_class, "__call__", call)

    monkeypatch.setattr(runner, "generate_answers", recording_generate_answers)
    data_dir = write_benchmarks(tmp_path / "data", ["pope"])
    args = add_eval_arguments(argparse.ArgumentParser()).parse_args(
        ["--model", str(checkpoint), "--tasks", "pope", "--data-dir", str(data_dir), "--output-dir",
         str(tmp_path / "out"), "--limit", "2", "--max-new-tokens", "2", "--dtype", "float32", "--device", "cpu",
         "--no-progress", *flag])
    assert run_eval(args) == 0
    assert seen and set(seen) == {expected}
    assert json.loads((tmp_path / "out" / "run.json").read_text())["tokenize_chunks"] is expected
