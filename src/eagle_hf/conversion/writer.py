"""Writing the converted checkpoint: sharded safetensors written as tensors arrive, into a folder that appears whole.

`staged_output(path)` hands out a sibling temporary folder and renames it to `path` only when the block succeeds; on
any error it is deleted, so a failed conversion leaves nothing behind. `ShardWriter` keeps at most one shard's worth of
tensors in memory (plus the tensor being added), which is what lets a 13B conversion run without twice the model.
"""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from safetensors.torch import save_file
from transformers.utils import logging

from .source import ConversionError

logger = logging.get_logger(__name__)

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


def parse_size(size):
    """'5GB', '500MB', '2GiB' or an int (bytes) -> bytes."""
    if isinstance(size, int):
        return size
    text = str(size).strip().upper()
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * factor)
            except ValueError:
                break
    if text.isdigit():
        return int(text)
    raise ConversionError(f"Cannot read the shard size {size!r}; write e.g. '5GB', '500MB' or a number of bytes.")


def check_output(path, overwrite=False):
    """Refuse an existing non-empty `path` (before any download or work) unless `overwrite`."""
    path = Path(path).expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise ConversionError(f"The output {path} exists and is not empty; choose another folder or pass overwrite.")
    return path


@contextmanager
def staged_output(path, overwrite=False):
    """Yield a temporary folder beside `path`; on success it becomes `path`, on failure it is removed. Folders left
    by a killed run (no exception handler ran) are removed first: their name holds the pid of a process now gone."""
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_staging(path):
    """Remove the staging folders of `path` whose writing process is gone; returns their names."""
    removed = []
    for folder in Path(path).parent.glob(f".{Path(path).name}.partial-*"):
        pid = folder.name[len(f".{Path(path).name}.partial-"):].split("-", 1)[0]
        if folder.is_dir() and (not pid.isdigit() or not _alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
            logger.warning(f"removed {folder}, left by an interrupted run (process {pid} is gone)")
    return removed


class ShardWriter:
    """Collects tensors and writes a safetensors shard whenever `max_shard_bytes` would be exceeded."""

    def __init__(self, folder, max_shard_bytes):
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self.buffer, self.buffer_bytes = {}, 0
        self.shard_files, self.weight_map, self.total_bytes = [], {}, 0

    def add(self, name, tensor):
        size = tensor.numel() * tensor.element_size()
        if self.buffer and self.buffer_bytes + size > self.max_shard_bytes:
            self.flush()
        self.buffer[name] = tensor.contiguous()
        self.buffer_bytes += size
        self.total_bytes += size

    def flush(self):
        if not self.buffer:
            return
        name = f"shard-{len(self.shard_files):05d}.tmp"
        save_file(self.buffer, str(self.folder / name), metadata={"format": "pt"})
        self.weight_map.update({key: name for key in self.buffer})
        self.shard_files.append(name)
        self.buffer, self.buffer_bytes = {}, 0

    def close(self):
        """Flush, give the shards their final names and write the index (none for a single file); returns the keys."""
        self.flush()
        count = len(self.shard_files)
        final = {tmp: WEIGHTS_NAME if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
                 for i, tmp in enumerate(self.shard_files)}
        for tmp, name in final.items():
            os.replace(self.folder / tmp, self.folder / name)
        weight_map = {key: final[tmp] for key, tmp in sorted(self.weight_map.items())}
        if count > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return set(weight_map)


__all__ = ["ShardWriter", "parse_size", "staged_output"]
