"""Opening foreign .pt / .bin files: torch.load with an allow-list, and errors that name the file and the reason.

A refused pickle is named by the globals it wants (module.name), read statically from the file: torch lists them
for its zip format, and pickletools (which parses opcodes without running any) for raw pickles, whose protocol 4
torch's weights-only reader cannot even parse. Any other failure is reported as what the file turned out to be:
a truncated torch file, a pickle that torch.save did not write, or not a torch file at all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ZIP_MAGIC, PICKLE_PROTO = b"PK\x03\x04", 0x80  # torch.save's zip format; a pickle of protocol 2 or later
MAX_PICKLES = 5  # torch's legacy format is 5 pickles in a row (magic, protocol, sys info, object, storage keys)
_DOTTED = re.compile(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*")


def load_torch_file(path: Path, *, trust_pickle: bool = False, safe_globals: Sequence[Any] = ()) -> Any:
    """torch.load of `path` on the CPU, weights_only with `safe_globals` allowed unless `trust_pickle`.

    Raises ValueError naming the file: the refused globals, or why it cannot be read. OSError from opening it
    (no permission, ...) passes through: it names the file already.
    """
    with open(path, "rb"):  # opened here first: from torch's reader an OSError names no file
        pass
    try:
        with warnings.catch_warnings():  # the refusal below says it better than torch's warning about protocol 4
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            if trust_pickle:
                return torch.load(path, map_location="cpu", weights_only=False)
            with torch.serialization.safe_globals(list(safe_globals)):
                return torch.load(path, map_location="cpu", weights_only=True)
    except ModuleNotFoundError as err:  # only with trust_pickle: the pickle's classes live in a missing module
        raise ValueError(f"{path}: unpickling it needs the module {err.name!r}, which is not installed") from None
    except pickle.UnpicklingError as err:
        refused = [] if trust_pickle else unsafe_globals(path, err, safe_globals)
        if refused:
            raise ValueError(refusal(path, refused)) from None
        raise ValueError(unreadable(path, err)) from None
    except Exception as err:  # the reader's failures on a damaged file: RuntimeError, OSError, KeyError, ...
        raise ValueError(unreadable(path, err)) from None


def unsafe_globals(path: Path, err: Exception, safe_globals: Sequence[Any]) -> list[str]:
    """module.name of the globals a refused file wants that are neither torch's default nor in `safe_globals`."""
    found = [a or b for a, b in re.findall(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(err))]
    allowed = _allowed_names(safe_globals)
    if zipfile.is_zipfile(path):
        with contextlib.suppress(Exception):  # torch lists every unsafe global of its zip format at once
            found += [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
    else:
        found += [name for name in pickle_globals(path) if name not in allowed]
    return list(dict.fromkeys(found))


def _allowed_names(safe_globals: Sequence[Any]) -> set[str]:
    names = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in safe_globals}
    with contextlib.suppress(Exception):  # torch's own allow-list (tensor rebuilds, storages, OrderedDict, ...)
        names |= set(torch._weights_only_unpickler._get_allowed_globals())
    return names


def pickle_globals(path: Path) -> list[str]:
    """Every global (module.name) the raw pickles at the start of `path` reference, found without unpickling.

    GLOBAL and INST carry the name; STACK_GLOBAL (protocol 4) takes the two strings pushed before it, directly
    or from the memo. Scanning stops at the first thing that is not a pickle (a legacy file's raw storages).
    """
    names: list[str] = []
    with open(path, "rb") as f:
        for _ in range(MAX_PICKLES):
            pushed: list[Any] = []  # what each opcode pushed, enough to read STACK_GLOBAL's two strings
            memo: dict[int, Any] = {}
            try:
                for opcode, arg, _pos in pickletools.genops(f):
                    name = opcode.name
                    if name in ("GLOBAL", "INST"):
                        names.append(".".join(str(arg).split(" ", 1)))
                    elif name == "STACK_GLOBAL" and len(pushed) >= 2 and all(isinstance(s, str) for s in pushed[-2:]):
                        names.append(f"{pushed[-2]}.{pushed[-1]}")
                    if name == "MEMOIZE":
                        memo[len(memo)] = pushed[-1] if pushed else None
                    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[int(arg)] = pushed[-1] if pushed else None
                    elif name in ("GET", "BINGET", "LONG_BINGET"):
                        pushed.append(memo.get(int(arg)))
                    elif name not in ("FRAME", "PROTO", "STOP"):
                        pushed.append(arg if isinstance(arg, str) else None)
            except Exception:  # not (or no longer) a pickle: what was read so far stands
                break
            if not f.read(1):  # the end of the file: no further pickle
                break
            f.seek(-1, 1)
    return [n for n in dict.fromkeys(names) if _DOTTED.fullmatch(n)]


def refusal(path: Path, names: Sequence[str]) -> str:
    """Why a pickle was refused, naming the globals it wants to load."""
    message = (
        f"{path}: refused to unpickle {', '.join(names)}: loading it could run code. If you trust the file, pass "
        f"--trust-pickle (convert(..., trust_pickle=True))"
    )
    if any(name.startswith("omegaconf") for name in names):
        message += (
            "; its config is an omegaconf object (fairseq Hydra checkpoints), so unpickling it also needs omegaconf"
            + ("" if importlib.util.find_spec("omegaconf") else ", which is not installed")
        )
    return message


def unreadable(path: Path, err: Exception) -> str:
    """What a file torch could not load is, from its first bytes: a damaged torch file, a pickle that torch.save
    did not write, or not a torch file at all."""
    with open(path, "rb") as f:
        head = f.read(2)
    text = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else ""
    detail = f"{type(err).__name__}: {text}" if text else type(err).__name__
    if not head:
        return f"{path}: empty file, not a torch checkpoint"
    if head == ZIP_MAGIC[:2] or (head[0] == PICKLE_PROTO and _is_legacy_torch(path)):
        if isinstance(err, AttributeError):  # a trusted pickle whose class is not where it was when saved
            return f"{path}: cannot unpickle it ({detail})"
        return f"{path}: truncated or corrupt torch file ({detail})"
    if head[0] == PICKLE_PROTO:
        return f"{path}: a plain pickle (protocol {head[1]}), not a checkpoint written by torch.save"
    return f"{path}: truncated or not a torch file (neither torch's zip format nor a pickle)"


class _NoGlobals(pickle.Unpickler):
    """An unpickler that loads no global at all, so it cannot run code: enough for plain numbers."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} refused")


def _is_legacy_torch(path: Path) -> bool:
    """Whether `path` starts as torch's legacy (pre-zip) format does: a pickle of torch's magic number."""
    with open(path, "rb") as f:
        try:
            return _NoGlobals(f).load() == torch.serialization.MAGIC_NUMBER
        except Exception:
            return False
