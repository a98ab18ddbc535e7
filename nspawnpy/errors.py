"""The one exception type for failures a user should see as a single line.

Runs in: every process; PID 1 reports its UserErrors to the supervisor as text.
"""


class UserError(Exception):
    """A failure reported as one line on stderr, then exit with `status`."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class WordedValueError(ValueError):
    """A bad option value whose message is nspawn's own sentence, printed as it is."""
