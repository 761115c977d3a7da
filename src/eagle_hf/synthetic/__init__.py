"""The synthetic scene task that `eagle-hf demo` and `eagle-hf search-experts` both run on: scenes and questions drawn
from a seed (`scenes`), small Eagles and a tokenizer built on the spot (`build`), and scoring by question type
(`evaluate`). Never imported by the files shipped next to the weights."""
