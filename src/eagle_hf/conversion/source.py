"""Reading a source checkpoint: a local folder or a Hub id, its config, and its weights shard by shard.

Only the files the checkpoint's own index names are read: stale copies that sit next to them (NVEagle's X5 repos hold
`model.safetensors.index_old.json` and `model-00006-of-00007_old.safetensors`) are never opened, and never downloaded.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..files import is_hub_id

WEIGHT_LAYOUTS = (  # (index file, single file), preferred first
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)
# Everything a conversion may read besides the weights: config, generation defaults, tokenizer files.
SIDE_FILES = ("*.json", "*.model", "*.txt", "*.tiktoken", "*.jinja")


class ConversionError(ValueError):
    """A source checkpoint that cannot be converted as it is; the message names the file, key or field at fault."""


def resolve_source(source, weights=True):
    """A local folder as is, or a Hub id downloaded: config and tokenizer, and with `weights` the indexed shards."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if not is_hub_id(source):
        raise ConversionError(f"Source {source!r} is neither a local folder nor a Hub id (owner/name).")
    from huggingface_hub import HfApi, snapshot_download

    try:
        files = set(HfApi().list_repo_files(source))
        folder = Path(snapshot_download(source, allow_patterns=list(SIDE_FILES)))
        if weights:
            shards = _indexed_shards(folder, files)
            folder = Path(snapshot_download(source, allow_patterns=list(SIDE_FILES) + sorted(shards)))
    except ConversionError:
        raise
    except Exception as error:  # network, authentication, gated repo: say which source, keep the cause
        raise ConversionError(f"Could not fetch {source!r} from the Hub: {error}") from error
    return folder


def _indexed_shards(folder, repo_files):
    """Names of the weight files a Hub repo's index points to (the index itself is already downloaded)."""
    for index_name, single_name in WEIGHT_LAYOUTS:
        if index_name in repo_files:
            return set(json.loads((folder / index_name).read_text())["weight_map"].values())
        if single_name in repo_files:
            return {single_name}
    names = " / ".join(name for pair in WEIGHT_LAYOUTS for name in pair)
    raise ConversionError(f"The Hub repo at {folder} holds no {names}.")


def read_json(folder, name, required=True):
    path = Path(folder) / name
    if not path.is_file():
        if required:
            raise ConversionError(f"{path} is missing.")
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path} is not valid JSON: {error}") from error


@dataclass
class TensorInfo:
    shape: tuple
    dtype: torch.dtype


class SourceWeights:
    """The tensors of a checkpoint folder: their names and shapes without loading them, then one shard at a time.

    Args:
        folder: the checkpoint folder.
        prefix_filter: keep only keys for which this returns True (None keeps all).
    """

    def __init__(self, folder, prefix_filter=None):
        self.folder = Path(folder)
        self.shards = self._find_shards()
        self.prefix_filter = prefix_filter
        self._infos = None

    def _find_shards(self):
        for index_name, single_name in WEIGHT_LAYOUTS:
            index = read_json(self.folder, index_name, required=False)
            if index is not None:
                weight_map = index.get("weight_map")
                if not isinstance(weight_map, dict) or not weight_map:
                    raise ConversionError(f"{self.folder / index_name} has no `weight_map`.")
                shards = sorted(set(weight_map.values()))
                missing = [name for name in shards if not (self.folder / name).is_file()]
                if missing:
                    raise ConversionError(
                        f"{self.folder / index_name} lists shard(s) that are missing: {missing}."
                    )
                self.index_keys = {name: sorted(k for k, v in weight_map.items() if v == name) for name in shards}
                return shards
            if (self.folder / single_name).is_file():
                self.index_keys = None
                return [single_name]
        names = ", ".join(name for pair in WEIGHT_LAYOUTS for name in pair)
        raise ConversionError(f"No weights in {self.folder}: expected one of {names}.")

    def infos(self):
        """{key: TensorInfo} over all shards, read from headers (safetensors) or memory-mapped (.bin)."""
        if self._infos is None:
            infos = {}
            for shard in self.shards:
                for key, info in self._shard_infos(shard).items():
                    if key in infos:
                        raise ConversionError(f"Key {key!r} appears in two shards of {self.folder}.")
                    infos[key] = info
            self._infos = infos
        return self._infos

    def _keep(self, key):
        return self.prefix_filter is None or self.prefix_filter(key)

    def _shard_infos(self, shard):
        path = self.folder / shard
        if shard.endswith(".safetensors"):
            with _open_safetensors(path) as handle:
                keys = list(handle.keys())
                infos = {}
                for key in keys:
                    sliced = handle.get_slice(key)
                    infos[key] = TensorInfo(tuple(sliced.get_shape()), _safetensors_dtype(sliced.get_dtype()))
        else:
            state = _load_bin(path)
            keys = list(state)
            infos = {key: TensorInfo(tuple(t.shape), t.dtype) for key, t in state.items()}
            del state
        if self.index_keys is not None and sorted(keys) != self.index_keys[shard]:
            listed, present = set(self.index_keys[shard]), set(keys)
            raise ConversionError(
                f"{path} disagrees with its index: listed but absent {sorted(listed - present)[:10]}, "
                f"present but not listed {sorted(present - listed)[:10]}."
            )
        return {key: info for key, info in infos.items() if self._keep(key)}

    def iter_shards(self):
        """Yields, shard after shard, a list of (key, loader) pairs; `loader()` returns the tensor on the CPU."""
        for shard in self.shards:
            path = self.folder / shard
            if shard.endswith(".safetensors"):
                with _open_safetensors(path) as handle:
                    yield [(key, (lambda k=key: handle.get_tensor(k))) for key in handle.keys() if self._keep(key)]
            else:
                state = _load_bin(path)
                yield [(key, (lambda k=key: state[k])) for key in state if self._keep(key)]
                del state


def _open_safetensors(path):
    """`safe_open`, with a file that is not whole safetensors (truncated, corrupt) refused naming it."""
    try:
        return safe_open(path, framework="pt")
    except Exception as error:  # safetensors raises its own SafetensorError (and OSError for unreadable files)
        raise ConversionError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error}); "
                              "download it again.") from None


def _load_bin(path):
    try:
        try:  # memory-mapped: a .bin shard is not read into memory as a whole
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:  # legacy (non-zip) pickles cannot be memory-mapped
            if "weights_only" in str(error) or "Unsupported global" in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # refused pickles (weights_only), truncated zips, not a checkpoint at all
        refused = "weights_only" in str(error) or "Unsupported global" in str(error)
        why = ("it holds Python objects other than tensors, which are never unpickled here (weights_only=True)"
               if refused else f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        raise ConversionError(f"{path} cannot be read as a PyTorch checkpoint: {why}.") from None


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _safetensors_dtype(name):
    if name not in _SAFETENSORS_DTYPES:
        raise ConversionError(f"Unsupported tensor dtype {name!r} in the source checkpoint.")
    return _SAFETENSORS_DTYPES[name]


class PickleWeights:
    """The tensors of one PyTorch pickle (e.g. a detectron2 `.pth`), read with `weights_only=True` so that no code in
    it runs. The state dict is found under a `model`, `state_dict`, `module` or `ema_state` wrapper; other entries
    (iteration counters, optimizer state) are left out. The same interface as `SourceWeights`."""

    WRAPPERS = ("model", "state_dict", "module", "ema_state")

    def __init__(self, path):
        self.path = Path(path)
        self.folder, self.shards = self.path.parent, [self.path.name]
        self._state = None

    def _tensors(self):
        if self._state is None:
            content = _load_bin(self.path)  # memory-mapped where the format allows; errors name the file
            while isinstance(content, dict) and not any(isinstance(v, torch.Tensor) for v in content.values()):
                inner = next((content[key] for key in self.WRAPPERS if isinstance(content.get(key), dict)), None)
                if inner is None:
                    break
                content = inner
            if not isinstance(content, dict):
                raise ConversionError(f"{self.path} holds a {type(content).__name__}, not a state dict.")
            self._state = {key: value for key, value in content.items() if isinstance(value, torch.Tensor)}
            if not self._state:
                raise ConversionError(f"{self.path} holds no tensors (looked under {list(self.WRAPPERS)}).")
        return self._state

    def infos(self):
        return {key: TensorInfo(tuple(t.shape), t.dtype) for key, t in self._tensors().items()}

    def iter_shards(self):
        state = self._tensors()
        yield [(key, (lambda k=key: state[k])) for key in state]


def resolve_file(source):
    """A local file as is, or `owner/name:path/in/repo` downloaded from the Hub (that one file only)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    repo, _, filename = source.partition(":")
    if not filename or repo.count("/") != 1 or path.exists():
        raise ConversionError(f"Source {source!r} is neither a local file nor a Hub file (owner/name:path/in/repo).")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as error:  # network, authentication, a missing file: say which source, keep the cause
        raise ConversionError(f"Could not fetch {filename!r} from the Hub repo {repo!r}: {error}") from error


__all__ = ["ConversionError", "PickleWeights", "SourceWeights", "TensorInfo", "read_json", "resolve_file",
           "resolve_source"]
