"""Checkpoints that are data, not code: minires's run checkpoints, and what kind of file one is.

A pickle names functions to call while it loads, so opening a pickled checkpoint can run any code
its author chose (which is why PyTorch made `torch.load(weights_only=True)` its default). A minires
checkpoint is therefore an .npz archive: each array under its own name, and one JSON document,
meta.json, for everything else (config, schedule, loader position, history). `np.load(...,
allow_pickle=False)` reads it and can run nothing. file_kind() tells it from PyTorch's own
.th/.pt/.pth files, which torch_checkpoint.py reads without running code. Lesson 9 saves and loads
runs.
"""

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT, VERSION = "minires-checkpoint", 1
META = "meta.json"  # the npz member that holds the JSON document
TEMP_PREFIX = ".checkpoint-"  # temporary files of a write in progress; stale ones are removed
RUN_KEYS = ("config", "model", "optimizer", "schedule", "loader", "iteration", "epoch",
            "history", "steps", "mean", "std")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged, of another format, or refused as unsafe."""


# -- what kind of file is it? ---------------------------------------------------------------------

TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the number a legacy torch.save() file starts with
KINDS = {
    "empty": "the file is empty (a write that never finished?)",
    "damaged zip": "a truncated or damaged zip archive",
    "minires": "a minires run checkpoint",
    "torch": "a PyTorch checkpoint",
    "zip": "a zip archive that is neither a minires nor a PyTorch checkpoint",
    "pickle": "a pickle, which minires does not load because a pickle can run code (minires 0.1 "
              "wrote its checkpoints this way; train again to get a checkpoint.npz)",
    "unknown": "neither a minires checkpoint (.npz) nor a PyTorch checkpoint (.th/.pt/.pth)",
}


def file_kind(path):
    """One of KINDS's keys, from the file's first bytes; CheckpointError if it cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"{path}: {e.strerror or e}") from e
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):  # a zip archive: an .npz, or torch.save's default format
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "damaged zip"
        if META + ".npy" in names:
            return "minires"
        return "torch" if any(name.endswith("/data.pkl") for name in names) else "zip"
    if head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2..5
        # Legacy torch.save() first pickles its magic number: LONG1 (0x8a), 10 bytes.
        if head[2:4] == b"\x8a\x0a" and int.from_bytes(head[4:14], "little") == TORCH_MAGIC:
            return "torch"
        return "pickle"
    return "unknown"


# -- minires's run checkpoints --------------------------------------------------------------------

def _split(value, arrays, path):
    """value as JSON, each array replaced by {"$array": name} and stored in arrays[name]."""
    if isinstance(value, dict):
        return {key: _split(item, arrays, f"{path}/{key}" if path else key)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(item, arrays, f"{path}/{i}") for i, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        arrays[path] = value
        return {"$array": path}
    if isinstance(value, np.generic):  # a NumPy scalar: its Python number
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"save_run: {path} is a {type(value).__name__}, which a checkpoint can't hold")


def _join(value, arrays):
    """The inverse of _split."""
    if isinstance(value, dict):
        if set(value) == {"$array"}:
            return arrays[value["$array"]]
        return {key: _join(item, arrays) for key, item in value.items()}
    if isinstance(value, list):
        return [_join(item, arrays) for item in value]
    return value


def save_run(path, state):
    """Write state (nested dicts and lists of arrays, numbers and strings) to path atomically.

    The file is written under a temporary name in the same folder, flushed to disk, then renamed
    over path: a reader (or a run killed mid-write) sees the old checkpoint or the new, never half.
    """
    arrays = {}
    document = {"format": FORMAT, "version": VERSION, "state": _split(state, arrays, "")}
    # Bytes rather than a string array: a NumPy unicode array takes 4 bytes per character.
    arrays[META] = np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on one file system
    except BaseException:
        os.unlink(tmp)
        raise


def remove_stale_temp_files(folder):
    """Delete what an interrupted save_run left in folder; returns the paths removed."""
    stale = sorted(Path(folder).glob(TEMP_PREFIX + "*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _read_document(path):
    """(the JSON document, the npz file) of a minires checkpoint; arrays are read when asked."""
    kind = file_kind(path)
    if kind != "minires":
        hint = "; evaluate it with `python -m minires eval --checkpoint`" if kind == "torch" else ""
        raise CheckpointError(f"{path}: not a minires checkpoint: {KINDS[kind]}{hint}")
    try:
        npz = np.load(path, allow_pickle=False)  # allow_pickle=False: data, never code
        document = json.loads(npz[META].tobytes())
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: truncated or damaged ({e})") from e
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: its {META} does not describe a {FORMAT}")
    if not isinstance(document.get("version"), int) or document["version"] > VERSION:
        raise CheckpointError(f"{path}: format version {document.get('version')!r}; this minires "
                              f"reads version {VERSION} and older (a newer minires wrote it?)")
    state = document.get("state")
    missing = [key for key in RUN_KEYS if key not in state] if isinstance(state, dict) else RUN_KEYS
    if missing:
        raise CheckpointError(f"{path}: not a complete run checkpoint: no {', '.join(missing)}")
    return document, npz


def load_run_config(path):
    """Only the config of the run saved at path (its arrays stay unread)."""
    document, npz = _read_document(path)
    npz.close()
    return document["state"]["config"]


def load_run(path):
    """The state that save_run wrote to path; a one-line CheckpointError for anything else."""
    document, npz = _read_document(path)
    try:
        with npz:
            arrays = {name: npz[name] for name in npz.files if name != META}
        return _join(document["state"], arrays)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: truncated or damaged ({e})") from e
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: {META} names an array the file lacks ({e})") from e
