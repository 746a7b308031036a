"""The one exception root of streamrec.

    StreamrecError
    ├── ConfigError          bad or unknown config key; names the key and the file
    ├── ServiceUnavailable   Kafka, Redis or Maven cannot be reached; says how to start it
    ├── StackError           the local stack failed to start or stop a process
    ├── InputError           a source file (MovieLens, delimited) cannot be read as such
    └── ModelStoreError      no model, or a model version that cannot be loaded

Invalid *events* are not exceptions: they are data, routed to the dead-letter topic with a reason.
"""

from __future__ import annotations


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose."""


class ConfigError(StreamrecError):
    """The config file has an unknown key or a bad value."""


class ServiceUnavailable(StreamrecError):
    """A service the job needs does not answer."""


class StackError(StreamrecError):
    """The local stack could not start or stop one of its processes."""


class InputError(StreamrecError):
    """An input file cannot be read in the format asked for."""


class ModelStoreError(StreamrecError):
    """The model store has no usable model."""
