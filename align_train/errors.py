"""User-facing errors: the CLI prints these as one clear message, without a traceback."""


class AlignTrainError(Exception):
    """A problem the user can fix (config, data, paths); the message says what and where."""


class ConfigError(AlignTrainError):
    """A config key has a wrong value or an impossible combination; the message names the key."""


class DataError(AlignTrainError):
    """A data source is missing, malformed or unsuitable; the message names the file and rows."""
