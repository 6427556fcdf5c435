"""Is Tune's stored experiment state something a ``run --resume`` can continue? (DESIGN.md §4)

Checked before a cluster starts, so that a state Tune cannot use gets one message naming the
file instead of Tune's traceback after the cluster is up:

* *damaged*: the newest file of each kind cut short (a disk that filled, a copy that stopped).
  Tune meets a damaged experiment state by *starting the experiment again*, every trial anew
  beside the stored rows; a damaged pickle ends in its unpickling traceback.
* *written by other code*: the Tuner pickle names the objects it was built from (the driver's
  progress callbacks, Ray's config classes) by module and qualified name. After an upgrade that
  moved one of them, unpickling fails with ModuleNotFoundError or AttributeError.

The pickles — the two files, and the cloudpickles Tune embeds, hex-encoded, in the experiment
state JSON (each trial's storage context, name creators, placement-group factory, ...) — are read
opcode by opcode (:mod:`pickletools`), which builds no object; the names they refer to are then
looked up by importing their modules, as Tune's unpickling would a moment later — never by
running the pickle. Not seen this way, so still Tune's traceback: a module that a cloudpickled
function imports when it is *called* or rebuilt (``subimport``), and the copyreg extension
codes (EXT1/2/4), which Ray does not write.
"""

from __future__ import annotations

import _compat_pickle
import fnmatch
import glob
import importlib
import json
import os
import pickletools
import posixpath
import re
import tempfile
from dataclasses import dataclass

from ..storage.errors import StorageError
from ..storage.fs import Root

#: What a resume reads from Tune's experiment folder, newest file of each pattern: the
#: experiment state (JSON, one file per driver start; TuneController.CKPT_FILE_TMPL, checked
#: against Ray's template by a test), the Tuner itself and the grid's search state (pickles;
#: BasicVariantGenerator.CKPT_FILE_TMPL, a pickle despite its .json name).
TUNE_STATE = "experiment_state-*.json"
TUNE_PICKLES = ("tuner.pkl", "basic-variant-state-*.json")

# Opcodes that push a string a later STACK_GLOBAL may take as a module or a name.
_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                      "STRING", "BINSTRING", "SHORT_BINSTRING"})
#: Ray's marker for an object its experiment-state JSON holds as a hex cloudpickle
#: (ray.tune.utils.serialization).
_EMBEDDED = "CLOUDPICKLE_FALLBACK"
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


def unreadable(data: bytes, pickled: bool) -> str | None:
    """Why ``data`` is not a whole JSON document or pickle; None when it is."""
    try:
        if pickled:
            for _ in pickletools.genops(data):
                pass
        else:
            json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        return f"{type(exc).__name__}: {exc}"
    return None


def pickle_protocol(data: bytes) -> int:
    """The protocol a pickle was written with (its PROTO opcode; 0 or 1 without one)."""
    for op, arg, _ in pickletools.genops(data):
        return int(arg) if op.name == "PROTO" else 0
    return 0


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """The (module, qualified name) pairs a whole pickle looks up, in order, read off its opcodes:
    the arguments unpickling passes to ``find_class``.

    GLOBAL and INST carry both in their argument. STACK_GLOBAL (protocol ≥ 4, what cloudpickle
    writes) takes them from the stack, where the pickler pushed them as two strings just before,
    each either literal or fetched from the memo; a small model of the stack's top and of the
    memo recovers them. FRAME and PROTO push nothing (a frame can begin between the two
    strings); anything else that pushes counts as "not a string", so a pair is only reported
    when both are known strings."""
    memo: dict[int, object] = {}
    pushed: list[object] = []  # what each opcode left on top; only strings matter
    found: list[tuple[str, str]] = []
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in ("FRAME", "PROTO"):
            continue
        if name in ("GLOBAL", "INST"):
            module, _, qualname = str(arg).partition(" ")
            found.append((module, qualname))
            pushed.append(None)
        elif name in _STRINGS:
            pushed.append(arg if isinstance(arg, str) else None)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(arg)))
        elif name == "STACK_GLOBAL":
            if len(pushed) >= 2 and isinstance(pushed[-2], str) and isinstance(pushed[-1], str):
                found.append((pushed[-2], pushed[-1]))
            pushed.append(None)
        else:
            pushed.append(None)
    return found


def missing_global(module: str, qualname: str, protocol: int = 5) -> str | None:
    """Why ``module.qualname`` cannot be looked up here (None when it can), the way pickle's
    ``find_class`` does it: below protocol 3, Python 2 names first mapped to Python 3's
    (``__builtin__.set`` → ``builtins.set``); then an import, and one attribute per dotted part
    from protocol 4 on (the whole name as one attribute below it)."""
    if protocol < 3:
        if (module, qualname) in _compat_pickle.NAME_MAPPING:
            module, qualname = _compat_pickle.NAME_MAPPING[(module, qualname)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        return f"module {exc.name or module!r} is not installed"
    except Exception as exc:  # a module that fails to import is the same dead end for Tune
        return f"module {module!r} fails to import ({type(exc).__name__}: {exc})"
    for part in (qualname.split(".") if protocol >= 4 else [qualname]):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            return f"{module} has no {qualname!r}"
    return None


def embedded_pickles(state: object) -> list[bytes]:
    """The cloudpickles Tune embeds, hex-encoded, in its experiment state JSON, inside the JSON
    strings that hold each trial (``trial_data``: [state JSON, run metadata JSON] per trial):
    ``{"_type": "CLOUDPICKLE_FALLBACK", "value": hex}`` objects (what JSON cannot hold: the
    trial's storage context, its name creators), and the fields ``Trial.__getstate__`` writes
    as bare hex (``Trial._nonjson_fields``: its placement-group factory, resources, results).
    A bare string counts when it is hex that decodes to a whole pickle (protocol ≥ 2 starts
    with the PROTO byte 0x80), so no field list of Ray's is copied here.

    The file as a whole parsed, so it is not cut short; a part in a shape this does not know (a
    trial string that is not JSON, a payload that is not a whole pickle) is left to Tune rather
    than refused: Ray's internal format may grow.
    """
    found: list[bytes] = []

    def add(text: str) -> None:
        try:
            payload = bytes.fromhex(text)
        except ValueError:
            return
        if unreadable(payload, True) is None:
            found.append(payload)

    def walk(x: object, strings_are_json: bool, in_trial: bool) -> None:
        if isinstance(x, dict):
            if x.get("_type") == _EMBEDDED and isinstance(x.get("value"), str):
                add(x["value"])
                return
            for k, v in x.items():
                walk(v, k == "trial_data", in_trial)
        elif isinstance(x, list):
            for v in x:
                walk(v, strings_are_json, in_trial)
        elif isinstance(x, str) and strings_are_json:
            try:
                walk(json.loads(x), False, True)
            except ValueError:
                return
        elif isinstance(x, str) and in_trial and x[:2] == "80" and _HEX.fullmatch(x):
            add(x)

    walk(state, False, False)
    return found


def newest_state_files(root: Root, exp_path: str) -> dict[str, str]:
    """{pattern: path of its newest file} for the state files of Tune's experiment folder
    (:data:`TUNE_STATE`, :data:`TUNE_PICKLES`) that are there: the ones a resume restores
    from. Listed one level deep, not through every trial's checkpoint folder."""
    names = sorted(i.base_name for i in root.list_files(exp_path, recursive=False))
    newest = {}
    for pattern in (TUNE_STATE, *TUNE_PICKLES):
        matching = [n for n in names if fnmatch.fnmatch(n, pattern)]
        if matching:  # the timestamp in the name sorts them
            newest[pattern] = posixpath.join(exp_path, matching[-1])
    return newest


def has_experiment_state(root: Root, exp_path: str) -> bool:
    """Whether Tune saved an experiment state into its folder. It writes ``tuner.pkl`` first and
    the state seconds later: a driver stopped in between leaves a folder Tune "can restore" and
    then fails on (KeyError 'trial'), with nothing in it to resume."""
    return TUNE_STATE in newest_state_files(root, exp_path)


@dataclass(frozen=True)
class StateProblem:
    """Why a resume cannot use ``path``: ``why`` completes "Tune's state PATH …"; ``foreign``
    when the file is whole but was written by other code (the remedy is that code)."""

    path: str
    why: str
    foreign: bool


def _pickle_problem(data: bytes) -> str | None:
    """Why unpickling ``data`` here would fail on a name it needs; None when every name exists."""
    protocol = pickle_protocol(data)
    for module, qualname in dict.fromkeys(pickle_globals(data)):
        if (problem := missing_global(module, qualname, protocol)) is not None:
            return (f"was written by other code: it needs {module}.{qualname}, and here {problem} "
                    "(edgesweep or Ray changed since the sweep started?)")
    return None


def tune_state_problem(root: Root, exp_path: str) -> StateProblem | None:
    """The first newest state file a resume cannot use; None when all can. (An older state
    file is no way back either: it names checkpoints Tune has since deleted (num_to_keep), and
    its unfinished trials fail on them (tried).) A missing kind of file is not a problem here:
    whether there is anything to resume is the caller's ``Tuner.can_restore`` check."""
    for pattern, path in newest_state_files(root, exp_path).items():
        pickled = pattern in TUNE_PICKLES
        data = root.read_bytes(path)
        if (problem := unreadable(data, pickled)) is not None:
            return StateProblem(path, f"is damaged ({problem})", foreign=False)
        for payload in dict.fromkeys([data] if pickled else embedded_pickles(json.loads(data))):
            if (problem := _pickle_problem(payload)) is not None:
                return StateProblem(path, problem, foreign=True)
    return None


def local_state_copies(name: str) -> list[str]:
    """Intact copies of Tune's experiment state ``name`` on this machine, newest first.

    Tune writes its experiment state into the driver's Ray session folder and then copies it
    into storage, in place: a disk that fills during the copy leaves the stored file cut short
    while the session folder's copy is whole (seen on a full tmpfs; copying it back let the
    resume finish). Session folders live under ``$RAY_TMPDIR/ray`` or the temp dir's ``ray/``;
    a head started with ``ray start --temp-dir X`` keeps them in X, which is not searched."""
    bases = dict.fromkeys(os.path.join(d, "ray") for d in (os.environ.get("RAY_TMPDIR"), tempfile.gettempdir(), "/tmp")
                          if d)
    found = [p for b in bases for p in glob.glob(os.path.join(glob.escape(b), "session_*", "artifacts", "*", "*",
                                                              "driver_artifacts", glob.escape(name)))]
    intact = []
    for path in found:
        try:
            with open(path, "rb") as f:
                if unreadable(f.read(), pickled=False) is None:
                    intact.append((os.path.getmtime(path), path))
        except OSError:
            continue  # gone meanwhile, or not readable
    return [path for _, path in sorted(intact, reverse=True)]


def trial_errors_from_tune(root: Root, exp_path: str, trial_ids: list[str]) -> dict[str, str]:
    """{trial_id: the error Tune wrote for it} from ``<exp>/<trial_id>/error.txt``, for when
    Tune's result grid cannot be built; an unreadable or empty file counts as no error. Tune
    appends to that file on every failure and never removes it: a trial that failed once and
    then finished on a retry has one too, so the caller must skip the trials storage records
    as finished."""
    out = {}
    for tid in trial_ids:
        try:
            raw = root.read_bytes(posixpath.join(exp_path, tid, "error.txt"))
        except (OSError, StorageError):
            continue
        if raw and raw.strip():
            out[tid] = raw.decode("utf-8", "replace")
    return out
