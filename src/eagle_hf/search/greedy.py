"""The Eagle paper's round-robin greedy selection of vision experts, independent of how a set of experts is scored.

Round 0 scores the starting set. Each later round scores the current set plus each remaining candidate (every trial
trained with the same budget by `train_and_evaluate`), keeps the best addition, and stops when it does not beat the
current score, when `max_rounds` rounds have run, or when no candidate is left.

Layout under `output_dir`: `search.json` (the settings every trial must share), `round_<r>/<a+b+c>/` (one folder per
trial, given to `train_and_evaluate`; `trial.json`, written last, marks it finished) and the table, rewritten after
every trial: `rounds.json` and `rounds.md`. Re-running a search skips every finished trial.
"""

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from transformers.utils import logging

from ..files import write_json_atomically

logger = logging.get_logger(__name__)

SEARCH_FILE = "search.json"
TRIAL_FILE = "trial.json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")  # candidate names become folder names


@dataclass
class Trial:
    """One scored expert set. `added` is the candidate this trial added to its round's base (None in round 0)."""

    round: int
    experts: tuple
    added: Optional[str]
    score: float
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def name(self):
        return "+".join(self.experts)

    @classmethod
    def read(cls, path):
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
        return cls(**{**values, "experts": tuple(values["experts"])})


@dataclass
class RoundSummary:
    """A finished round: the set it started from and its score, the best trial, and whether that trial was kept."""

    round: int
    base: tuple
    base_score: Optional[float]
    best: str
    best_score: float
    kept: bool


@dataclass
class SearchResult:
    """The experts selected (in channel order), their score, every trial, every round, and why the search stopped."""

    selected: tuple
    score: Optional[float]
    trials: list
    rounds: list
    stopped: str
    table: str


def _check_names(candidates, start):
    for name in (*candidates, *start):
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"Expert names must match {NAME_PATTERN.pattern} (they name folders), got {name!r}.")
    for label, names in (("candidates", candidates), ("start", start)):
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"`{label}` names {repeated} more than once.")


def _check_settings(output_dir, settings):
    """Record `settings` in `search.json`, or check that a resumed search uses the same ones."""
    path = os.path.join(output_dir, SEARCH_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            recorded = json.load(handle)["settings"]
        if recorded != settings:
            changed = sorted(key for key in {*recorded, *settings} if recorded.get(key) != settings.get(key))
            raise ValueError(f"{output_dir} holds a search run with other settings ({', '.join(changed)}: "
                             f"{[recorded.get(key) for key in changed]} there, {[settings.get(key) for key in changed]}"
                             " now); its trials would not be comparable. Use another output folder.")
    else:
        write_json_atomically(path, {"settings": settings})


class _Search:
    def __init__(self, candidates, start, train_and_evaluate, output_dir):
        self.candidates, self.start = candidates, start
        self.train_and_evaluate, self.output_dir = train_and_evaluate, output_dir
        self.trials, self.rounds = [], []

    def trial(self, round_index, experts, added):
        """The finished trial of `experts` in round `round_index`: read from its folder, or trained and scored now."""
        trial_dir = os.path.join(self.output_dir, f"round_{round_index}", "+".join(experts))
        path = os.path.join(trial_dir, TRIAL_FILE)
        if os.path.exists(path):
            trial = Trial.read(path)
            logger.info(f"round {round_index}: {trial.name} finished earlier, score {trial.score:.4f}")
        else:
            os.makedirs(trial_dir, exist_ok=True)
            logger.info(f"round {round_index}: training and evaluating {'+'.join(experts)}")
            began = time.perf_counter()
            score, metrics = _score_and_metrics(self.train_and_evaluate(experts, trial_dir), experts)
            trial = Trial(round_index, experts, added, score, metrics, round(time.perf_counter() - began, 2))
            write_json_atomically(path, asdict(trial))
            logger.info(f"round {round_index}: {trial.name} scored {score:.4f} in {trial.seconds:.1f} s")
        self.trials.append(trial)
        self.write_table(stopped="")
        return trial

    def write_table(self, stopped, selected=None, score=None):
        values = dict(start=list(self.start), candidates=list(self.candidates),
                      selected=None if selected is None else list(selected), score=score, stopped=stopped,
                      rounds=[asdict(summary) for summary in self.rounds],
                      trials=[asdict(trial) for trial in self.trials])
        write_json_atomically(os.path.join(self.output_dir, "rounds.json"), values)
        table = format_table(self.trials, self.rounds, self.start, self.candidates, stopped, selected, score)
        with open(os.path.join(self.output_dir, "rounds.md"), "w", encoding="utf-8") as handle:
            handle.write(table)
        return table


def _score_and_metrics(outcome, experts):
    """(score, metrics) from what `train_and_evaluate` returned: a number, or a mapping with "score" and others."""
    if isinstance(outcome, dict):
        if "score" not in outcome:
            raise ValueError(f"train_and_evaluate({'+'.join(experts)}) returned a mapping without 'score': "
                             f"{sorted(outcome)}.")
        metrics = {key: float(value) for key, value in outcome.items() if key != "score"}
        outcome = outcome["score"]
    else:
        metrics = {}
    score = float(outcome)
    if math.isnan(score):
        raise ValueError(f"train_and_evaluate({'+'.join(experts)}) returned NaN; a score must be comparable.")
    return score, metrics


def greedy_search(candidates, start, train_and_evaluate, output_dir, max_rounds=None, stop_when_no_gain=True,
                  settings=None):
    """Greedy round-robin selection of experts, resumable.

    Args:
        candidates: names of the experts that may be added (in tie-break order: on equal scores the earlier wins);
            names already in `start` are left out.
        start: the starting set, in channel order (e.g. `("clip",)`); may be empty (round 1 then picks the best
            single expert).
        train_and_evaluate: `(experts: tuple, trial_dir: str) -> float` (higher is better), or a mapping holding
            "score" and further metrics for the table. Called once per trial, never again once the trial finished.
        output_dir: where trials, `rounds.json` and `rounds.md` are written; a re-run resumes from it.
        max_rounds: the most rounds that add an expert (None: until the candidates run out).
        stop_when_no_gain: stop after a round whose best trial does not beat the current score.
        settings: JSON data that every trial of this search must share (budget, seed...); a re-run with other
            settings in the same `output_dir` raises instead of mixing incomparable trials.

    Returns:
        A `SearchResult`.
    """
    candidates, start = tuple(candidates), tuple(start)
    _check_names(candidates, start)
    skipped = [name for name in candidates if name in start]
    if skipped:
        logger.info(f"candidates {skipped} are already in the starting set; they are not searched")
    candidates = tuple(name for name in candidates if name not in start)
    if not start and not candidates:
        raise ValueError("Nothing to search: both `start` and `candidates` are empty.")
    if max_rounds is not None and max_rounds < 0:
        raise ValueError(f"`max_rounds` must be None or >= 0, got {max_rounds}.")
    os.makedirs(output_dir, exist_ok=True)
    _check_settings(output_dir, json.loads(json.dumps(settings or {})))  # as read back: tuples become lists
    search = _Search(candidates, start, train_and_evaluate, output_dir)
    current, score = start, (search.trial(0, start, None).score if start else None)
    round_index, stopped = 0, ""
    while not stopped:
        remaining = [name for name in candidates if name not in current]
        if not remaining:
            stopped = "no candidate left"
        elif max_rounds is not None and round_index >= max_rounds:
            stopped = f"max_rounds ({max_rounds}) reached"
        if stopped:
            break
        round_index += 1
        trials = [search.trial(round_index, current + (name,), name) for name in remaining]
        best = max(trials, key=lambda trial: trial.score)  # max keeps the first of equal scores
        kept = score is None or best.score > score or not stop_when_no_gain
        search.rounds.append(RoundSummary(round_index, current, score, best.name, best.score, kept))
        if not kept:
            stopped = f"no candidate beat {score:.4f} in round {round_index}"
        else:
            current, score = best.experts, best.score
    table = search.write_table(stopped, current, score)
    logger.info(f"search stopped ({stopped}); selected {'+'.join(current) or '(none)'}")
    return SearchResult(current, score, search.trials, search.rounds, stopped, table)


def format_table(trials, rounds, start, candidates, stopped="", selected=None, score=None):
    """The per-round table in Markdown: one row per trial, its gain over its round's base, and the kept ones."""
    kept = {(summary.round, summary.best) for summary in rounds if summary.kept}
    scores = {trial.experts: trial.score for trial in trials}
    metric_names = list(dict.fromkeys(name for trial in trials for name in trial.metrics))
    lines = [f"Greedy expert search: start {'+'.join(start) or '(none)'}, candidates {', '.join(candidates)}.", "",
             "| round | experts | added | score | gain | kept |" + "".join(f" {m} |" for m in metric_names),
             "|---|---|---|---|---|---|" + "---|" * len(metric_names)]
    for trial in trials:
        base = scores.get(trial.experts[:-1]) if trial.added is not None else None  # known before the round ends
        gain = "" if base is None else f"{trial.score - base:+.4f}"
        is_kept = trial.round == 0 or (trial.round, trial.name) in kept
        lines.append(f"| {trial.round} | {trial.name} | {trial.added or '(start)'} | {trial.score:.4f} | {gain} | "
                     f"{'yes' if is_kept else ''} |" + "".join(f" {trial.metrics.get(m, float('nan')):.4f} |"
                                                             for m in metric_names))
    if stopped:
        scored = "no score" if score is None else f"score {score:.4f}"
        lines += ["", f"Selected: {'+'.join(selected) or '(none)'} ({scored}); stopped: {stopped}."]
    return "\n".join(lines) + "\n"


__all__ = ["RoundSummary", "SearchResult", "Trial", "format_table", "greedy_search"]
