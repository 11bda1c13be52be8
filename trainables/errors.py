"""The one user-facing error of featherweight.

Every layer raises :class:`ConfigError` for bad input; ``run_search.py`` prints its one-line
message as ``error: ...`` and exits with code 2.

Example:
    >>> from trainables.errors import ConfigError
    >>> str(ConfigError("spaces/x.yaml: 'lr' must be a number"))
    "spaces/x.yaml: 'lr' must be a number"
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """Bad user input (space file, CLI value, config key or value, missing or malformed file).

    The message is one line that names what to fix; the CLI prints it and exits with code 2.
    """
