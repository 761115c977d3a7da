"""`eagle-hf chat CKPT`: talk to a checkpoint in the terminal. Answers stream token by token; the conversation keeps
every turn (and every image) until `/reset`. Lines starting with `/` are commands:

    /image PATH    attach an image to your next message (repeatable)
    /reset         start a new conversation
    /help          list the commands
    /exit          quit (so does end of input, Ctrl-D)

The checkpoint is loaded as any user would, through the Auto classes with its own code (`trust_remote_code=True`), so
this works for every eagle-hf checkpoint, local or on the Hub. A bad image, an unknown command or a conversation that
grew past the model's length is reported and the chat goes on.
"""

import sys
import threading

COMMANDS_HELP = "commands: /image PATH, /reset, /help, /exit"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_chat_arguments(parser):
    parser.add_argument("model", help="checkpoint folder or Hub id")
    parser.add_argument("--image", action="append", default=[], metavar="PATH",
                        help="an image for the first message (repeatable)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (a GPU when there is one)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="weights' dtype (default: the checkpoint's)")
    parser.add_argument("--load-in-4bit", action="store_true", help="the LLM in 4-bit NF4 (bitsandbytes)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy decoding")
    parser.add_argument("--system", help="a system prompt, for templates that take one")
    return parser


def load_for_chat(model_id, device="auto", dtype="auto", load_in_4bit=False):
    """(model, processor) through the Auto classes with the checkpoint's own code."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = dict(trust_remote_code=True, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        from ..training.models import QLORA_SKIP_MODULES

        kwargs.update(device_map={"": device}, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True, llm_int8_skip_modules=QLORA_SKIP_MODULES))
    model = AutoModelForImageTextToText.from_pretrained(model_id, **kwargs)
    if not load_in_4bit:
        model = model.to(device)
    return model.eval(), AutoProcessor.from_pretrained(model_id, trust_remote_code=True)


class ChatSession:
    """The conversation so far, and one streamed answer at a time."""

    def __init__(self, model, processor, max_new_tokens=256, temperature=0.0, system=None):
        self.model, self.processor = model, processor
        self.max_new_tokens, self.temperature, self.system = max_new_tokens, temperature, system
        self.reset()

    def reset(self):
        self.messages = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] if self.system else []
        self.images, self.pending = [], []

    def attach(self, path):
        """Decode the image now (the processor's own decoder), so that a bad file is refused before it is asked."""
        from ..image_processing_eagle import load_rgb_image

        self.pending.append(load_rgb_image(path))

    def inputs(self, text):
        """The model inputs of the conversation with `text` (and the pending images) as the next user turn."""
        content = [{"type": "image"} for _ in self.pending] + [{"type": "text", "text": text}]
        messages = self.messages + [{"role": "user", "content": content}]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        images = self.images + self.pending
        batch = self.processor(text=prompt, images=images or None, return_tensors="pt")
        limit = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        length = batch["input_ids"].shape[1]
        if limit is not None and length + self.max_new_tokens > limit:
            raise ValueError(f"the conversation is {length} tokens long and the answer may take "
                             f"{self.max_new_tokens} more, past the model's {limit} positions; /reset to start again")
        return messages, images, batch.to(self.model.device)

    def ask(self, text, write):
        """Stream the answer to `text` through `write`; the turn joins the conversation only once answered."""
        from transformers import TextIteratorStreamer

        messages, images, batch = self.inputs(text)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        options = dict(max_new_tokens=self.max_new_tokens, streamer=streamer)
        options.update(do_sample=True, temperature=self.temperature) if self.temperature > 0 else options.update(
            do_sample=False)
        failure = []

        def generate():
            try:
                self.model.generate(**batch, **options)
            except Exception as error:  # reported by the chat loop; the streamer must still end
                failure.append(error)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        answer = []
        for piece in streamer:
            answer.append(piece)
            write(piece)
        worker.join()
        if failure:
            raise failure[0]
        answer = "".join(answer).strip()
        self.messages = messages + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        self.images, self.pending = images, []
        return answer


def chat_loop(session, lines, write):
    """Read user lines (commands or messages) and answer them; returns at /exit or the end of `lines`."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, argument = line.partition(" ")
            if command == "/exit":
                return
            if command == "/help":
                write(COMMANDS_HELP + "\n")
            elif command == "/reset":
                session.reset()
                write("(new conversation)\n")
            elif command == "/image":
                try:
                    session.attach(argument.strip())
                    write(f"(image {argument.strip()} attached to your next message)\n")
                except (ValueError, OSError) as error:
                    write(f"error: {error}\n")
            else:
                write(f"error: unknown command {command!r}; {COMMANDS_HELP}\n")
            continue
        write("assistant: ")
        try:
            session.ask(line, write)
            write("\n")
        except ValueError as error:  # e.g. the conversation outgrew the model: the turn is dropped, the chat goes on
            write(f"\nerror: {error}\n")


def run_chat(args):
    model, processor = load_for_chat(args.model, args.device, args.dtype, args.load_in_4bit)
    session = ChatSession(model, processor, args.max_new_tokens, args.temperature, args.system)

    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    for path in args.image:
        session.attach(path)
    interactive = sys.stdin.isatty()
    write(f"eagle-hf chat with {args.model} on {model.device} ({model.dtype}); {COMMANDS_HELP}\n")

    def lines():
        while True:
            if interactive:
                write("you: ")
            line = sys.stdin.readline()
            if not line:
                return
            yield line

    chat_loop(session, lines(), write)
    return 0


__all__ = ["ChatSession", "add_chat_arguments", "chat_loop", "load_for_chat", "run_chat"]
