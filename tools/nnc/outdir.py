"""Where nnc writes: output folders it owns, and single files, each written all or nothing.

One rule for every writer (export, deploy, the IMX681 and DIANA compilers, the build glue):

* An output folder is filled in a temporary sibling and only then put in place, so a failure
  leaves no half-written output and the previous output intact (`output_dir`).
* Every output folder gets a marker file (`MARKER`). An existing folder is replaced only when it
  carries the marker or holds no files; anything else is refused: nnc never deletes what it did
  not make.
* The current directory or a folder containing it, the repository, $HOME and `/` are never an
  output folder, marker or not.
* Files get the modes the user's umask gives, not the private 0600/0700 of `tempfile`.
* A run that writes what the folder already holds, byte for byte, leaves the folder as it is:
  a build that repeats an export (a second SCons process whose signature database is behind, a
  shared cache) must not make the files vanish, even for an instant, under a compiler or a test
  reading them, nor make everything after them rebuild.

Problems the user can fix are `NncError`s saying what, where (the option or configuration key)
and how to fix it.
"""
from __future__ import annotations

import filecmp
import json
import os
import shutil
import tempfile
from contextlib import contextmanager

from .errors import NncError

MARKER = ".nnc-output"
MARKER_TEXT = ("This folder was made by nnc, which replaces it as a whole on its next run into it.\n"
               "Keep no files of your own here.\n")
# Markers of earlier versions, still recognised (they were written by this project too).
OLD_MARKERS = (".diana_build",)
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(path: str, data) -> str:
    """Write `data` (str or bytes) to `path` atomically: readers see the old file or the new one,
    never half of one; a failure leaves no temporary file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path


def json_text(data) -> str:
    """The JSON of every file nnc writes: sorted keys, one-space indent, a final newline."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_json(path: str, data) -> str:
    return write_file(path, json_text(data))


def _holds_files(path: str) -> bool:
    """Whether a folder holds any file (build tools pre-create empty target folders)."""
    return any(files for _, _, files in os.walk(path))


def is_ours(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, m)) for m in (MARKER,) + OLD_MARKERS)


def _contains(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _protected(path: str) -> str | None:
    """Why `path` (a real path) must never be replaced, or None."""
    home = os.path.realpath(os.path.expanduser("~"))
    if path == os.path.dirname(path):
        return "the root of the file system"
    if _contains(path, os.path.realpath(os.getcwd())):
        return "the current directory" if path == os.path.realpath(os.getcwd()) else \
            "a folder that contains the current directory"
    if _contains(path, REPOSITORY):
        return "the nnc repository" if path == REPOSITORY else "a folder that contains the nnc repository"
    if _contains(path, home):
        return "your home folder" if path == home else "a folder that contains your home folder"
    return None


def check_target(path: str, where: str) -> str:
    """The real path of output folder `path`, or an NncError if nnc may not (re)create it there.
    `where` names the option or configuration key the path came from."""
    if not path or "\0" in path:
        raise NncError(f"output folder {path!r} is not a valid path", where, "give a folder path")
    real = os.path.realpath(path)
    reason = _protected(real)
    if reason:
        raise NncError(f"output folder {path} is {reason}; nnc replaces its output folder as a whole",
                       where, "give a new folder for the output, e.g. a subfolder such as "
                              f"{os.path.join(path, 'out')}")
    if os.path.lexists(real) and not os.path.isdir(real):
        raise NncError(f"output folder {path} exists and is not a folder", where,
                       "give the path of a folder (new, empty, or made by nnc before)")
    if os.path.isdir(real) and not is_ours(real) and _holds_files(real):
        fix = "give a new or empty folder, or delete this one yourself if nothing in it is needed"
        if _looks_like_old_output(real):
            fix = ("it looks like the output of an nnc from before output folders carried the marker "
                   "(e.g. an old build/ tree): delete it once, or give a new or empty folder")
        raise NncError(f"output folder {path} exists, holds files, and was not made by nnc "
                       f"(it has no {MARKER} marker); nnc replaces only folders it made itself", where,
                       fix)
    return real


def _looks_like_old_output(path: str) -> bool:
    """Names nnc writes, only for a better hint: such a folder is refused like any other."""
    names = os.listdir(path)
    return any(n.startswith("tvmgen_") or n in ("model.json", "manifest.json", "deploy.cfg") for n in names)


def _write_error(path: str, where: str, err: OSError) -> NncError:
    return NncError(f"cannot write output folder {path}: {err.strerror or err}", where,
                    "choose a folder you can write to (check its permissions and free space)")


@contextmanager
def output_dir(path: str, where: str):
    """Fill a new version of output folder `path` and put it in place:

        with output_dir(out, "--out") as tmp:
            ... write files into tmp ...

    On success `path` holds exactly what was written into `tmp`, plus the marker (or, when it
    already held all of that byte for byte, is left as it was); on any error the previous `path`
    is untouched and nothing new remains. Refuses what `check_target` refuses.
    """
    real = check_target(path, where)
    parent = os.path.dirname(real)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(real)}.tmp-", dir=parent)
    except OSError as e:
        raise _write_error(path, where, e) from None
    try:
        os.chmod(staging, 0o777 & ~current_umask())      # mkdtemp makes it private
        try:
            yield staging
            write_file(os.path.join(staging, MARKER), MARKER_TEXT)
        except OSError as e:   # a write into the staging folder failed: the user's disk or rights
            if e.filename and _contains(staging, os.path.abspath(str(e.filename))):
                raise _write_error(path, where, e) from None
            raise
        check_target(path, where)          # still ours: nothing appeared meanwhile
        if _already_holds(real, staging):
            return
        try:
            _put_in_place(staging, real)
        except OSError as e:
            raise _write_error(path, where, e) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _files_below(folder: str) -> set:
    return {os.path.relpath(os.path.join(dirpath, name), folder)
            for dirpath, _, names in os.walk(folder) for name in names}


def _is_build_file(relpath: str) -> bool:
    """A file the build puts into an output folder next to what nnc wrote: an object file of the
    generated C, or a hidden record (the build's export signatures)."""
    name = os.path.basename(relpath)
    return name.startswith(".") or name.endswith((".o", ".os"))


def _already_holds(real: str, staging: str) -> bool:
    """Whether the output folder `real` (ours) holds exactly the files of `staging`, byte for byte,
    apart from the build's own files (_is_build_file), which then stay."""
    if not (os.path.isdir(real) and is_ours(real)):
        return False
    new_files, old_files = _files_below(staging), _files_below(real)
    if not new_files <= old_files or any(not _is_build_file(f) for f in old_files - new_files):
        return False
    return all(not os.path.islink(os.path.join(real, f))
               and filecmp.cmp(os.path.join(real, f), os.path.join(staging, f), shallow=False)
               for f in new_files)


def _put_in_place(staging: str, real: str) -> None:
    if os.path.isdir(real):
        if not is_ours(real):              # holds no files (check_target): empty folders only
            shutil.rmtree(real)
        else:
            aside = tempfile.mkdtemp(prefix=f".{os.path.basename(real)}.old-", dir=os.path.dirname(real))
            os.replace(real, aside)        # replaces the empty folder mkdtemp made
            try:
                os.replace(staging, real)
            except BaseException:
                os.replace(aside, real)    # the previous output comes back
                raise
            shutil.rmtree(aside, ignore_errors=True)
            return
    os.replace(staging, real)
