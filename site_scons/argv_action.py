"""SCons actions that run a program with an argument list, never through a shell, and the early
check of the options whose values end up in such argument lists.

SCons's own command actions, given as a string or as a list, are joined into one `sh -c` string;
only arguments with spaces get quoted (in double quotes, where `$(...)` and backquotes still run).
An option value such as `deploy=/x;touch F` or a clone path with a space would run or break
commands. Every action whose arguments carry an option value or a path is built here instead:
the arguments go to the program exactly as given.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

from SCons.Script import Action, Dir, Exit

# Options whose values become arguments of the tools the build runs.
TEXT_OPTIONS = ("port", "deploy", "RIOTBASE", "tests", "model", "calibration", "cache", "jobs", "models")

# An action's signature (what SCons compares to decide a rebuild, and the key of a shared build
# cache, cache=DIR) must not depend on where the checkout is: the same build in another clone
# or on another machine has the same signature. The argument list is therefore recorded with the
# checkout's folder and the Python running SCons written as these markers (a control character:
# no option value has one, check_option_values) and turned back into paths when the action runs.
_TOP, _PYTHON = "\x00top", "\x00python"


def _portable(arg: str) -> str:
    if arg == sys.executable:
        return _PYTHON
    # the checkout's folder, also inside an argument (--out=/path/to/clone/build/...)
    return re.sub(re.escape(Dir("#").abspath) + r"(?=/|$)", lambda _: _TOP, arg)


def _local(arg: str) -> str:
    return sys.executable if arg == _PYTHON else arg.replace(_TOP, Dir("#").abspath)


def argv_action(argv, cwd: str | None = None, env_vars: dict | None = None):
    """An action running `argv` (strings, or SCons nodes: their absolute paths) in `cwd` with the
    construction environment's ENV plus `env_vars`. The command is printed shell-quoted; its
    arguments are part of the action's signature (a changed argument rebuilds the target), with
    the checkout's own location left out (see _portable)."""
    # Only `call` is captured by run(): SCons makes the signature of a function action from its
    # code and the values it captures.
    call = (tuple(_portable(a.abspath if hasattr(a, "abspath") else str(a)) for a in argv),
            None if cwd is None else _portable(cwd), tuple(sorted((env_vars or {}).items())))

    def run(target, source, env):
        args, where, extra = call
        args = [_local(a) for a in args]
        proc_env = {k: str(v) for k, v in env["ENV"].items()}
        proc_env.update(extra)
        try:
            return subprocess.run(args, cwd=None if where is None else _local(where), env=proc_env).returncode
        except OSError as e:
            print(f"error: cannot run {args[0]}: {e.strerror}")
            return 127

    def show(target, source, env):
        return shlex.join(_local(a) for a in call[0])

    return Action(run, strfunction=show)


def check_option_values(env) -> None:
    """Stops the build (exit 2) before anything runs when an option value holds a control character
    (a pasted newline, NUL): no path, port or expression has one. (RIOTBASE itself is checked by
    firmware_riot.check_riotbase.)"""
    for name in TEXT_OPTIONS:
        value = env.get(name) or ""
        bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
        if bad is not None:
            print(f"error: option {name}= contains the control character {bad!r} at position "
                  f"{value.index(bad)}: {value!r}\n  fix: give the value without it (quote the whole "
                  f"option for the shell: {name}='...')")
            Exit(2)
