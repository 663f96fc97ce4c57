"""The one exception type for problems the user can fix, and the exit statuses of `nnc`.

Every tool raises NncError (or a subclass) for a user mistake; the one place that turns errors
into exit statuses is nnc.cli.main (see EXIT_* below): no tool prints and returns a status itself.
"""

# NNC_DEBUG=1 (or --debug on the command line): tracebacks of internal errors, and the whole chain
# of the user's calls in an import error instead of the innermost line.
DEBUG_ENV = "NNC_DEBUG"

EXIT_OK = 0
EXIT_FAILED = 1        # the command ran, and what it checked did not hold (a mismatch, a device error)
EXIT_USER = 2          # a user mistake: bad option, missing or malformed file, unsupported model
EXIT_INTERNAL = 3      # a bug in nnc: an unexpected exception (rerun with --debug for the traceback)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); other signals give 128 + their number


class NncError(Exception):
    """A problem the user can fix: says what is wrong, where, and how to fix it.

    str() is the message without the leading "error: "; format() is what the command line prints.
    """

    exit_status = EXIT_USER

    def __init__(self, what: str, where: str = "", fix: str = ""):
        self.what, self.where, self.fix = str(what), where, fix
        super().__init__(self.what)

    def __str__(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix:   {self.fix}")
        return "\n".join(lines)

    def format(self) -> str:
        return f"error: {self}"


class DeviceError(NncError):
    """A board, an emulator or a native process answered wrongly or with an error: the command
    ran and the check failed (exit status 1), which is not a usage error."""

    exit_status = EXIT_FAILED


class Interrupted(BaseException):
    """A signal (SIGTERM, SIGHUP, SIGINT) asked a command to stop; raised by a handler that a
    long-running command (serial) installs so that it can stop its child processes on the way
    out. BaseException like KeyboardInterrupt: `except Exception` must not swallow it."""

    def __init__(self, signum: int):
        import signal
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def user_line_of(exc: BaseException) -> str:
    """The innermost line of an exception's traceback that is the user's code, not torch's,
    torchao's or nnc's ('File "net.py", line 14, in forward: x = ...'), or '': an error raised
    deep inside torch then points at the user's own line."""
    import os
    import traceback
    nnc_dir = os.path.dirname(os.path.abspath(__file__))
    libs = (f"{os.sep}torch{os.sep}", f"{os.sep}torchao{os.sep}", f"{os.sep}site-packages{os.sep}")
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.abspath(frame.filename)
        if frame.filename.startswith("<") or path.startswith(nnc_dir + os.sep) or any(s in path for s in libs):
            continue
        return f'File "{frame.filename}", line {frame.lineno}, in {frame.name}' + \
            (f": {frame.line.strip()}" if frame.line else "")
    return ""


def first_line(exc: BaseException) -> str:
    """An exception as one line (torch's messages run over many)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
