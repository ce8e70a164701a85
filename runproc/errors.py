"""The one exception type that carries a user-facing error message."""


class RunprocError(Exception):
    """An error whose message is shown to the user as it is, on one line.

    Raised anywhere; the CLI turns it into a stderr line, a log record and exit 1.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ContainerNotFound(RunprocError):
    """The container id has no state record (containerd matches "does not exist")."""

    def __init__(self) -> None:
        super().__init__("container does not exist")
