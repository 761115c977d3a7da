"""`eagle-hf demo`: the quick run goes through every stage and the reloaded checkpoint answers as the trained model;
the data is reproducible from its seed; both models of the comparison train for the same number of steps."""

import json

import pytest

from eagle_hf.cli import main
from eagle_hf.synthetic import build
from eagle_hf.demo.pipeline import FULL, demo_recipe
from eagle_hf.demo.run import make_splits, prepare_output
from eagle_hf.synthetic.scenes import ANSWERS, QUESTION_TYPES, SceneSplit, evaluation_items, tokenizer_corpus
from eagle_hf.training import recipe_from_dict


def test_quick_demo_runs_every_stage_and_the_reloaded_checkpoint_answers_like_the_trained_model(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--threads", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    mixture, baseline = results["models"]["mixture"], results["models"]["baseline"]
    assert mixture["experts"] == list(build.MIXTURE) and baseline["experts"] == list(build.BASELINE)
    assert [stage["stage"] for stage in mixture["stages"]] == [
        *(f"eagle_prealign/expert_{index}_{kind}" for index, kind in enumerate(build.MIXTURE)),
        "eagle_align", "eagle_sft"]
    for model in (mixture, baseline):
        assert all(stage["steps"] > 0 and stage["losses"] for stage in model["stages"])
        assert set(model["test"]) == {*QUESTION_TYPES, "all"}
    reload = results["reload"]
    assert reload["answers_equal"] and reload["loaded_class"].startswith("transformers_modules")
    assert [sample["in_process"] for sample in reload["samples"]] == [
        sample["reloaded"] for sample in reload["samples"]]
    assert all((out / sample["image"]).is_file() for sample in reload["samples"])
    config = json.loads((out / "checkpoint" / "config.json").read_text())
    assert config["model_type"] == "eagle_hf" and config["fusion"] == "channel_concat"
    assert [expert["kind"] for expert in config["vision_experts"]] == list(build.MIXTURE)
    assert (out / "checkpoint" / "modeling_eagle.py").is_file() and (out / "checkpoint" / "tokenizer.json").is_file()
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| **all** |" in (out / "summary.md").read_text()


def test_scenes_are_reproducible_from_their_seed_and_splits_differ():
    first, again, other = SceneSplit("train", 3, 5), SceneSplit("train", 3, 5), SceneSplit("test", 3, 5)
    assert [first.image(i).tobytes() for i in range(5)] == [again.image(i).tobytes() for i in range(5)]
    assert [first.questions(i) for i in range(5)] == [again.questions(i) for i in range(5)]
    assert [first.image(i).tobytes() for i in range(5)] != [other.image(i).tobytes() for i in range(5)]
    for item in evaluation_items(first):
        assert item["answer"] in ANSWERS[item["type"]]


def test_the_demo_tokenizer_reads_every_prompt_and_answer_without_unknown_tokens():
    tokenizer = build.train_tokenizer(build.tokenizer_texts(tokenizer_corpus(SceneSplit("train", 0, 400))))
    processor = build.build_processor(build.demo_config(tokenizer), tokenizer)
    for answers in ANSWERS.values():
        for answer in answers:
            assert tokenizer.unk_token_id not in tokenizer(answer, add_special_tokens=False).input_ids, answer
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the text?"}]},
                {"role": "assistant", "content": "bottom right"}]
    ids = tokenizer(processor.apply_chat_template(messages)).input_ids
    assert tokenizer.unk_token_id not in ids and ids[-1] == tokenizer.eos_token_id


def test_the_baseline_trains_for_as_many_steps_as_the_mixture():
    splits = make_splits(FULL)
    steps = {}
    for kinds in (build.MIXTURE, build.BASELINE):
        recipe = recipe_from_dict(demo_recipe(FULL, "x", splits, len(kinds), len(build.MIXTURE), build.TEMPLATE))
        runs = {"eagle_prealign": len(kinds), "eagle_align": 1, "eagle_sft": 1}
        steps[kinds] = sum(recipe.stage(name).max_steps * count for name, count in runs.items())
    assert steps[build.MIXTURE] == steps[build.BASELINE]


def test_the_demo_refuses_an_output_folder_that_holds_something_else(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        prepare_output(str(tmp_path), FULL)
