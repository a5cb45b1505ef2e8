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
