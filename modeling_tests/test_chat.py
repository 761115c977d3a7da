"""`eagle-hf chat`, driven as a user drives it (a subprocess reading stdin): streamed answers equal in-process greedy
`generate` on the same conversation, turns and images accumulate, bad commands and images are reported and the chat
goes on."""

import subprocess
import sys

import pytest
import torch

from test_training_plan import subprocess_env


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from eagle_hf.synthetic.smoke_kit import write_smoke_kit

    return write_smoke_kit(tmp_path_factory.mktemp("chat") / "kit", "llava_1_5", samples=4)


def expected_answers(kit, turns, max_new_tokens):
    """What greedy `generate` answers, turn after turn, given the same conversation (images before the text)."""
    from eagle_hf.serving.chat import ChatSession, load_for_chat

    model, processor = load_for_chat(str(kit / "init"), device="cpu")
    session = ChatSession(model, processor, max_new_tokens=max_new_tokens)
    answers = []
    for images, text in turns:
        for image in images:
            session.attach(image)
        messages, all_images, batch = session.inputs(text)
        with torch.no_grad():
            output = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens)
        answer = processor.decode(output[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        session.messages = messages + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        session.images, session.pending = all_images, []
        answers.append(answer)
    return answers


@pytest.mark.slow  # a fresh interpreter loads transformers and the checkpoint: ~10 s
def test_a_chat_streams_the_answers_generate_gives_over_several_turns_and_images(kit):
    first, second = (str(kit / "data" / "images" / name) for name in ("0000.png", "0001.png"))
    script = "\n".join([f"/image {first}", "What colour are the shapes?", "/image /no/such.png", "/bogus",
                        f"/image {second}", "And in this one?", "/reset", "What colour are the shapes?", "/exit",
                        "never read"]) + "\n"
    done = subprocess.run([sys.executable, "-m", "eagle_hf", "chat", str(kit / "init"), "--max-new-tokens", "6",
                           "--device", "cpu"], input=script, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [line[len("assistant: "):].strip() for line in done.stdout.splitlines() if line.startswith("assistant: ")]
    want = expected_answers(kit, [([first], "What colour are the shapes?"), ([second], "And in this one?")], 6)
    fresh = expected_answers(kit, [([], "What colour are the shapes?")], 6)
    assert answers == [*want, *fresh] and all(answers)
    assert "error: Image 0: no such file '/no/such.png'" in done.stdout
    assert "error: unknown command '/bogus'" in done.stdout and "(new conversation)" in done.stdout


def test_a_conversation_that_outgrows_the_model_is_reported_and_the_chat_goes_on(kit):
    from eagle_hf.serving.chat import ChatSession, chat_loop, load_for_chat

    model, processor = load_for_chat(str(kit / "init"), device="cpu")
    model.config.get_text_config().max_position_embeddings = 80
    session = ChatSession(model, processor, max_new_tokens=3)
    written = []
    chat_loop(session, ["hello", "word " * 60, "hello again"], written.append)
    text = "".join(written)
    assert text.count("assistant: ") == 3 and "past the model's 80 positions; /reset" in text
    assert len(session.messages) == 4  # the two answered turns; the refused one is dropped


def test_load_in_4bit_quantizes_the_language_model_only_and_answers(kit):
    pytest.importorskip("bitsandbytes")
    from eagle_hf.serving.chat import ChatSession, chat_loop, load_for_chat

    model, processor = load_for_chat(str(kit / "init"), device="cpu", load_in_4bit=True)
    quantized = [name for name, module in model.named_modules() if type(module).__name__ == "Linear4bit"]
    assert quantized and all(".language_model." in name for name in quantized)
    written = []
    chat_loop(ChatSession(model, processor, max_new_tokens=3), ["hello"], written.append)
    assert "".join(written).startswith("assistant: ") and "error" not in "".join(written)
