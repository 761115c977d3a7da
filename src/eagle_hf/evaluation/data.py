"""Samples, the problems met while reading a benchmark, and readers that report the file and line of bad input."""

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..files import path_inside


@dataclass
class Sample:
    """One question of a benchmark, ready for the model.

    Attributes:
        id: unique within its task (the benchmark's own question id where it has one).
        question: the user text, the response-format instruction included (the chat template adds the image).
        reference: what the metric compares with: a list of answers, a label or a letter.
        image_path / image_base64: where the image is (MMBench embeds it as base64 in its TSV).
        fields: what the metric needs beyond the reference (split, subtask, image_id, options, pair_id).
        source: "file:location" the sample was read from, for messages.
    """

    id: str
    question: str
    reference: Any
    image_path: Optional[str] = None
    image_base64: Optional[str] = None
    fields: dict = field(default_factory=dict)
    source: str = ""


@dataclass
class Problem:
    """Bad input met while reading a benchmark: the file, where in it ("line 7", "data[3]") and what was wrong."""

    file: str
    location: Optional[str]
    message: str

    def __str__(self):
        where = f"{self.file}:{self.location}" if self.location else self.file
        return f"{where}: {self.message}"

    def to_dict(self):
        return {"file": self.file, "location": self.location, "message": self.message}


class Reader:
    """Collects samples and problems while a benchmark loader walks its files."""

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)
        self.samples: list[Sample] = []
        self.problems: list[Problem] = []
        self._ids = set()

    def problem(self, path, location, message):
        self.problems.append(Problem(str(path), location, message))

    def require(self, path, what):
        """True if `path` is a file; otherwise records a problem naming the expected layout."""
        if Path(path).is_file():
            return True
        self.problem(path, None, f"missing: {what}")
        return False

    def image(self, folder, name, source_file, location):
        """The path of the image `name` in `folder` if it exists; otherwise records a problem at the line that
        names it."""
        if not isinstance(name, str) or not name:
            self.problem(source_file, location, f"image name must be a non-empty string, got {name!r}")
            return None
        try:
            path = path_inside(folder, name)
        except ValueError as error:
            self.problem(source_file, location, f"image refused: {error}")
            return None
        if path.is_file():
            return str(Path(folder) / name)
        self.problem(source_file, location, f"image {Path(folder) / name} not found")
        return None

    def json(self, path):
        """The parsed JSON file, or None (problem recorded) if it cannot be read."""
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            location = f"line {error.lineno}" if isinstance(error, json.JSONDecodeError) else None
            self.problem(path, location, f"cannot read JSON: {error}")
            return None

    def entries(self, path, key=None):
        """(location, entry) for each object of the JSON list in `path` (under `key` if given); a file of another
        shape or an entry that is not an object is recorded and skipped."""
        content = self.json(path)
        if content is None:
            return
        entries = content.get(key) if key is not None and isinstance(content, dict) else content
        if not isinstance(entries, list):
            expected = f'an object with a "{key}" list' if key else "a list"
            self.problem(path, None, f"expected {expected} of entries")
            return
        prefix = key or ""
        for index, entry in enumerate(entries):
            location = f"{prefix}[{index}]"
            if isinstance(entry, dict):
                yield location, entry
            else:
                self.problem(path, location, f"expected an object, got {type(entry).__name__}")

    def json_lines(self, path):
        """(line number, object) for each line holding a JSON object; a bad line is recorded and skipped."""
        with open(path, "rb") as handle:  # line by line: a line that is not UTF-8 loses only itself
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as error:
                    self.problem(path, f"line {number}", f"not UTF-8 text: {error}")
                    continue
                except json.JSONDecodeError as error:
                    self.problem(path, f"line {number}", f"not a JSON object: {error}")
                    continue
                if not isinstance(value, dict):
                    self.problem(path, f"line {number}", f"expected a JSON object, got {type(value).__name__}")
                    continue
                yield number, value

    def table_rows(self, path, delimiter):
        """(line number, row dict) for each row of a CSV/TSV file with a header; a row whose number of cells
        differs from the header's is recorded and skipped."""
        # MMBench keeps whole base64 images in one cell, far beyond csv's default 128 KiB cell limit.
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        try:
            text = Path(path).read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as error:
            self.problem(path, f"byte {error.start}", f"not UTF-8 text: {error}")
            return
        with io.StringIO(text, newline="") as handle:
            rows = csv.reader(handle, delimiter=delimiter)
            header = next(rows, None)
            if header is None:
                self.problem(path, None, "empty file: expected a header row")
                return
            for row in rows:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    self.problem(path, f"line {rows.line_num}", f"{len(row)} cells where the header has {len(header)}")
                    continue
                yield rows.line_num, dict(zip(header, row))

    def add(self, sample, file, location):
        """Adds `sample` read at `file`:`location`, unless its id is taken (predictions are kept by id): that is
        reported instead."""
        if sample.id in self._ids:
            self.problem(file, location, f"duplicate id {sample.id!r}")
            return
        sample.source = f"{file}:{location}"
        self._ids.add(sample.id)
        self.samples.append(sample)

    def result(self):
        return self.samples, self.problems


def missing_keys(entry, keys):
    """The keys of `keys` that the dict `entry` lacks (or that are null), as a message, or None."""
    absent = [key for key in keys if entry.get(key) is None]
    return f"missing {', '.join(repr(key) for key in absent)}" if absent else None
