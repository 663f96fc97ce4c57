"""SCons actions that run a program with an argument list, never through a shell, and the early
check of the options whose values end up in such argument lists.

SCons's own command actions, given as a string or as a list, are joined into one `sh -c` string;
only arguments with spaces get quoted (in double quotes, where `$(...)` and backquotes still run).
An option value such as `deploy=/x;touch F` or a clone path with a space would run or break
commands. Every action whose arguments carry an option value or a path is built here instead:
the arguments go to the program exactly as given.
"""
from __future__ import annotations

import shlex
import subprocess

from SCons.Script import Action, Exit

# Options whose values become arguments of the tools the build runs.
TEXT_OPTIONS = ("port", "deploy", "RIOTBASE", "tests", "model", "calibration")


def argv_action(argv, cwd: str | None = None, env_vars: dict | None = None):
    """An action running `argv` (strings, or SCons nodes: their absolute paths) in `cwd` with the
    construction environment's ENV plus `env_vars`. The command is printed shell-quoted; its
    arguments are part of the action's signature (a changed argument rebuilds the target)."""
    argv = [a.abspath if hasattr(a, "abspath") else str(a) for a in argv]
    env_vars = dict(env_vars or {})

    def run(target, source, env):
        proc_env = {k: str(v) for k, v in env["ENV"].items()}
        proc_env.update(env_vars)
        try:
            return subprocess.run(argv, cwd=cwd, env=proc_env).returncode
        except OSError as e:
            print(f"error: cannot run {argv[0]}: {e.strerror}")
            return 127

    def show(target, source, env):
        return shlex.join(argv)

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
