"""Errors a user can cause: the CLI prints their message on one line and exits with code 2."""


class PotlutError(Exception):
    """Base of every error caused by bad input (arguments, data, files); never a bug."""


class PotlutDataError(PotlutError):
    """A data set is missing, malformed or not in the expected on-disk format."""


class PotlutConfigError(PotlutError):
    """An option is out of range or names something that does not exist."""


class PotlutCheckpointError(PotlutError):
    """A checkpoint cannot be read or does not belong to this run."""


class PotlutFormatError(PotlutError):
    """A .potlut file is truncated, corrupted, foreign or from a future format version."""
