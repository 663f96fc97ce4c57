"""The one exception type for user mistakes. CLIs print it without a traceback and exit 2."""


class NncError(Exception):
    """A problem the user can fix: says what is wrong, where, and how to fix it."""

    def __init__(self, what: str, where: str = "", fix: str = ""):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.format())

    def format(self) -> str:
        lines = [f"error: {self.what}"]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix:   {self.fix}")
        return "\n".join(lines)
