"""User-facing errors: each is reported as one line and exit status 2, never a traceback."""


class EsmetaError(Exception):
    """Bad input from the user (config, data, overrides); the message says what and how to fix it."""


class ConfigError(EsmetaError):
    """An invalid or inconsistent configuration value."""


class DataError(EsmetaError):
    """Missing, unreadable or corrupt data files."""


class NeedsAcceleratorError(ConfigError):
    """A configuration too large for the chosen scale (`scale.max_population`): a multirun records the job as
    skipped, a single run is refused."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class RunStopped(BaseException):  # noqa: N818 (a stop, like KeyboardInterrupt, not an error)
    """A run stopped before its end with a checkpoint to continue from (a signal, the allocation's end).

    A BaseException, as KeyboardInterrupt is, so that a multirun stops instead of starting its next job;
    `esmeta.run` reports it in one line with the command that continues it, and exits with `exit_status`.
    """

    def __init__(self, why: str, exit_status: int, where: str = ""):
        super().__init__(why)
        self.why = why  # what stopped it: "SIGTERM", "train.allocation_minutes=170 reached", ...
        self.exit_status = exit_status
        self.where = where  # the episode reached and the checkpoint, where training had begun
