"""Files of data and state: an image a dataset or benchmark file names must lie inside the folder it declares; a
state file is replaced whole or not at all; a source names a local path or a Hub repo. Not shipped next to the
weights."""

import json
import os
from pathlib import Path


def write_json_atomically(path, values, **dump_options):
    """Write JSON to a temporary file beside `path`, then rename it over `path`: a reader sees the old file or the
    whole new one, never a part (a run killed mid-write leaves at most a stray `.tmp-<pid>` file)."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(values, handle, **({"indent": 1} | dump_options))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def path_inside(folder, name):
    """`folder / name` when it resolves (symlinks followed) inside `folder`; raises `ValueError` naming both when
    it does not ("../../x.png", an absolute path elsewhere, a link pointing out)."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"{name!r} resolves to {path}, outside its folder {root}")
    return path


def is_hub_id(source):
    """Whether `source` reads as a Hub repo id ("org/name", optionally ":file") rather than a local path."""
    repo = str(source).partition(":")[0]
    return (repo.count("/") == 1 and not str(source).startswith((".", "/", "~"))
            and not Path(str(source)).expanduser().exists())
