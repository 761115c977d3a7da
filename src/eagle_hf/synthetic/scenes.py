"""The demo's data, drawn on the spot: small scenes of coloured shapes and a word, and short questions about them.

A scene is a white 64-pixel square cut into four quadrants. One to three shapes of one kind and one colour, each of
its own size and placement, sit in different quadrants; a short word or number, rendered small with Pillow's built-in
bitmap font (glyphs about 6 pixels high), sits in the middle of a free quadrant. Five question types, short answers:

| type | question | answers |
|---|---|---|
| colour | What colour are the shapes? | red, green, blue, yellow, purple |
| shape | What shape are they? | circle, square, triangle |
| count | How many shapes are there? | one, two, three |
| position | Where is the text? | top left, top right, bottom left, bottom right |
| text | What does the text say? | one of `WORDS` |

An expert that sees the image at a quarter size still sees colours, counts, where the text is and (roughly) the
shapes, but the text shrinks to a grey smear it cannot read; an expert that sees it at full size can read it (at half
size a from-scratch model still learns to read most words). Every scene follows from a
seed and its index; images are drawn when a record is read (a scene is a few numbers), so splits cost no memory.
"""

import functools
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

CANVAS = 64
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 200, 30),
           "purple": (150, 50, 190)}
SHAPES = ("circle", "square", "triangle")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
COUNTS = ("one", "two", "three")
WORDS = ("cat", "sun", "box", "key", "17", "42", "68", "93")
TEXT_JITTER = 3
QUESTION_TYPES = ("colour", "shape", "count", "position", "text")
ANSWERS = {"colour": tuple(COLOURS), "shape": SHAPES, "count": COUNTS, "position": QUADRANTS, "text": WORDS}


@dataclass(frozen=True)
class Shape:
    quadrant: int  # 0 top left, 1 top right, 2 bottom left, 3 bottom right
    centre: tuple
    radius: int


@dataclass(frozen=True)
class Scene:
    """What one image shows: `shapes` of one `kind` and `colour`, and `word` at `text_origin` (left, top) in
    `text_quadrant`."""

    kind: str
    colour: str
    shapes: tuple
    word: str
    text_quadrant: int
    text_origin: tuple


@functools.lru_cache(maxsize=1)
def _font():
    # The bitmap font is data inside Pillow: the same pixels on every machine (FreeType versions may differ).
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader is not None else ImageFont.load_default()


def random_scene(rng):
    """A `Scene` from `rng` (a `random.Random`)."""
    quadrants = rng.sample(range(4), 4)
    count = rng.randint(1, 3)
    kind, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
    half = CANVAS // 2
    shapes = []
    for quadrant in quadrants[:count]:
        radius = rng.randint(8, 14)
        left, top = (quadrant % 2) * half, (quadrant // 2) * half
        centre = (left + rng.randint(radius + 1, half - radius - 1), top + rng.randint(radius + 1, half - radius - 1))
        shapes.append(Shape(quadrant, centre, radius))
    word = rng.choice(WORDS)
    width, height = _text_size(word)
    text_quadrant = quadrants[count]
    left, top = (text_quadrant % 2) * half, (text_quadrant // 2) * half
    # The word sits near the middle of its quadrant, moved by up to TEXT_JITTER pixels each way: anywhere in the
    # quadrant would take a from-scratch model far longer than the demo's few minutes to read, and at one fixed place
    # a low-resolution expert reads it from the fixed pattern of the few pixels its resize happens to sample.
    origin = (left + (half - width) // 2 + rng.randint(-TEXT_JITTER, TEXT_JITTER),
              top + (half - height) // 2 + rng.randint(-TEXT_JITTER, TEXT_JITTER))
    return Scene(kind, colour, tuple(shapes), word, text_quadrant, origin)


@functools.lru_cache(maxsize=None)
def _text_size(word):
    left, top, right, bottom = _font().getbbox(word)
    return right - left, bottom - top


def draw_scene(scene):
    """The scene as a (CANVAS, CANVAS) RGB PIL image."""
    image = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    fill = COLOURS[scene.colour]
    for shape in scene.shapes:
        (x, y), r = shape.centre, shape.radius
        if scene.kind == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif scene.kind == "square":
            side = int(r * 0.85)  # a square of the circle's area looks the same size
            draw.rectangle((x - side, y - side, x + side, y + side), fill=fill)
        else:
            draw.polygon(((x, y - r), (x - r, y + int(r * 0.8)), (x + r, y + int(r * 0.8))), fill=fill)
    draw.text(scene.text_origin, scene.word, fill=(0, 0, 0), font=_font())
    return image


def questions(scene):
    """[(type, question, answer)], one per question type. No question names an answer of another, so all five can
    share a training conversation without giving each other away."""
    return [
        ("colour", "What colour are the shapes?", scene.colour),
        ("shape", "What shape are they?", scene.kind),
        ("count", "How many shapes are there?", COUNTS[len(scene.shapes) - 1]),
        ("position", "Where is the text?", QUADRANTS[scene.text_quadrant]),
        ("text", "What does the text say?", scene.word),
    ]


def caption(scene):
    """A one-line description for the alignment stage, e.g. "two red circles, and the text cat at the top left."."""
    count = len(scene.shapes)
    kinds = scene.kind if count == 1 else scene.kind + "s"
    return f"{COUNTS[count - 1]} {scene.colour} {kinds}, and the text {scene.word} at the " \
           f"{QUADRANTS[scene.text_quadrant]}."


def normalize_answer(text):
    """Lower case, outer spaces and a final full stop removed, inner spaces collapsed: what exact match compares."""
    return " ".join(text.strip().lower().rstrip(".").split())


@dataclass(frozen=True)
class SceneSplit:
    """`size` scenes drawn from `seed`: scene i is the same on every run and every machine."""

    name: str
    seed: int
    size: int

    def scene(self, index):
        return random_scene(random.Random(f"{self.name}-{self.seed}-{index}"))

    def questions(self, index):
        return questions(self.scene(index))

    def image(self, index):
        return draw_scene(self.scene(index))


class ConversationRecords:
    """Training records of a split, each drawn when read: `{"messages", "images"}` with one user/assistant turn per
    question type, in a random order (five answers trained per image). A list-like the training collator reads."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return self.split.size

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        return {"messages": self.conversation(index), "images": [self.split.image(index)]}

    def conversation(self, index):
        turns = self.split.questions(index)
        random.Random(f"{self.split.name}-{self.split.seed}-{index}-order").shuffle(turns)
        messages = []
        for position, (_, question, answer) in enumerate(turns):
            content = f"<image>\n{question}" if position == 0 else question
            messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
        return messages


class CaptionRecords(ConversationRecords):
    """Alignment records of a split: the image and its caption (the `plain` template keeps only these)."""

    def conversation(self, index):
        return [{"role": "user", "content": "<image>"},
                {"role": "assistant", "content": caption(self.split.scene(index))}]


def evaluation_items(split):
    """[{"index", "type", "question", "answer"}]: every question of every scene of `split`, one turn each."""
    return [dict(index=index, type=kind, question=question, answer=answer)
            for index in range(split.size) for kind, question, answer in split.questions(index)]


def tokenizer_corpus(split, limit=400):
    """{"chat": conversations, "captions": caption conversations} of the first `limit` scenes of `split`: what the
    demo's tokenizer is trained on (rendered with the chat templates)."""
    count = min(limit, split.size)
    chats, captions = ConversationRecords(split), CaptionRecords(split)
    return dict(chat=[chats.conversation(index) for index in range(count)],
                captions=[captions.conversation(index) for index in range(count)])
