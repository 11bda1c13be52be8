"""Reading what comes from elsewhere: YAML without aliases, capped sizes, masked credentials, safe names.

Files from elsewhere (search spaces, exported configs, stores, student files) are untrusted
(DESIGN.md, "Principles"). This module holds the few primitives every layer uses on them:

- :func:`load_yaml_file` / :func:`load_yaml_text`: YAML with the size of the file capped
  (:data:`MAX_YAML_BYTES`), aliases refused (a "billion laughs" document of a few hundred bytes
  expands to gigabytes once printed), mapping keys that repeat refused, nesting capped
  (:data:`MAX_YAML_DEPTH`); every failure is one :class:`~trainables.errors.ConfigError` line.
- :func:`mask_credentials`: ``scheme://user:secret@host`` -> ``scheme://user:***@host`` (and
  ``password=``-style query values), for every URI that is printed, logged or stored in a tag.
- :func:`safe_name`: a name (an MLflow experiment) as one path component, for folders derived from it.
- :func:`check_output_folder`: a folder that will be written, checked before anything is.

Example:
    >>> mask_credentials("postgresql://fw:hunter2@db:5432/mlflow")
    'postgresql://fw:***@db:5432/mlflow'
    >>> safe_name("../../x")
    'x'
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from trainables.errors import ConfigError

__all__ = ["MAX_NAME_BYTES", "MAX_PATH_BYTES", "MAX_YAML_BYTES", "MAX_YAML_DEPTH", "check_location",
           "check_output_folder", "expand_path", "load_yaml_file", "load_yaml_text", "mask_credentials", "safe_name",
           "short"]

#: Largest YAML file read (bytes). Search spaces and exported configs are a few kilobytes.
MAX_YAML_BYTES = 256 * 1024
#: Deepest nesting of sequences and mappings accepted in a YAML document.
MAX_YAML_DEPTH = 64
#: Longest file name and path accepted (bytes; Linux's NAME_MAX and PATH_MAX - 1).
MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4095


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases, repeated mapping keys and deep nesting."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"found the alias *{event.anchor}; YAML aliases are not "
                                                          f"allowed here (write the value out)", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<': merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeConstructor says so
                break
            if repeated:
                raise yaml.constructor.ConstructorError(None, None, f"the key {short(key)} is given twice",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (``...`` marks a cut), for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_yaml_text(text: str, where: str) -> Any:
    """Parse one YAML document with :class:`yaml.SafeLoader` rules, minus aliases and repeated keys.

    Args:
        text: the document (at most :data:`MAX_YAML_BYTES` bytes as UTF-8 is the caller's cap).
        where: the file or option named in errors.

    Raises:
        ConfigError: invalid YAML, an alias, a key given twice, nesting deeper than
            :data:`MAX_YAML_DEPTH`, or a scalar Python cannot hold (an integer of thousands of digits).
    """
    loader = None
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters here already
        return loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}".splitlines()[0][:300]) from None
    except (ValueError, OverflowError, RecursionError, TypeError) as e:  # int('9' * 5000), a key that is a list...
        raise ConfigError(f"{where}: invalid YAML ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
                          ) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: str | Path, what: str = "YAML file", max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Read and parse a YAML file from elsewhere (see :func:`load_yaml_text`).

    Args:
        path: the file.
        what: what the file is, for messages (``"search space file"``).
        max_bytes: largest size accepted (bytes); the file is not read when it is larger.

    Raises:
        ConfigError: missing or unreadable file, a file above ``max_bytes``, not UTF-8, or
            any error of :func:`load_yaml_text`.
    """
    path = expand_path(path, what)
    try:
        if not path.is_file():
            raise ConfigError(f"{what} {short(str(path))} does not exist")
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError(f"{what} {str(path)!r} cannot be read ({e.strerror or type(e).__name__})") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"{path}: {what} is larger than {max_bytes // 1024} KiB; this is not one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None
    return load_yaml_text(text, str(path))


# scheme://user:password@ -- the password runs to the last '@' of the URI (it may hold '/' or '@' unescaped)
_AUTHORITY = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/?#\s:@]*)(:\S*)?@")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|"
                           r"secret_key|access_key|sig|signature)=)[^&;#\s]*")


def _mask_userinfo(match: re.Match) -> str:
    return f"{match[1]}{match[2]}:***@" if match[3] is not None else match[0]


def mask_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URI replaced by ``***``,
    and the values of ``password=``, ``token=``, ``secret=``-style query parameters too.

    A password is masked up to the last ``@`` of its URI (so one holding ``/`` or ``@`` unescaped
    is masked whole; a URI with ``@`` in its path loses a little more than its password).
    """
    if not isinstance(text, str):
        text = str(text)
    return _SECRET_QUERY.sub(r"\1***", _AUTHORITY.sub(_mask_userinfo, text))


def safe_name(name: str, limit: int = 100) -> str:
    """``name`` as one harmless path component: characters other than letters, digits, ``.``,
    ``-`` and ``_`` become ``_``, leading dots and underscores go, at most ``limit`` characters;
    ``"experiment"`` when nothing is left. ``"../../x"`` -> ``"x"``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")[:limit].rstrip("._-")
    return slug or "experiment"


def expand_path(path: str | Path, option: str) -> Path:
    """``Path(path).expanduser()``, checked: what it cannot expand (``~nosuchuser``, no home
    folder), a NUL character, or a name the file system refuses as too long (which makes even
    ``Path.exists`` raise) is a ConfigError naming ``option``."""
    text = str(path)
    if "\x00" in text:
        raise ConfigError(f"{option} {short(text)} holds a NUL character")
    try:
        expanded = Path(text).expanduser()
    except RuntimeError:
        raise ConfigError(f"{option} {short(text)}: cannot expand {short(text.split('/', 1)[0], 40)} (no such user "
                          f"or no home folder)") from None
    if len(str(expanded).encode()) > MAX_PATH_BYTES or any(len(p.encode()) > MAX_NAME_BYTES for p in expanded.parts):
        raise ConfigError(f"{option} {short(text)} is too long for a path ({MAX_NAME_BYTES} bytes a name, "
                          f"{MAX_PATH_BYTES} in all)")
    return expanded


def check_location(value: str, option: str) -> str:
    """``value``, a folder or a URI such as ``s3://bucket/dir`` given on the command line, checked
    as :func:`expand_path` does and parsed as a URI.

    Raises:
        ConfigError: see :func:`expand_path`, or a URI ``urllib`` cannot parse (``s3://[x``).
    """
    expand_path(value, option)
    try:
        urllib.parse.urlsplit(value).port  # noqa: B018 -- a malformed host or port raises ValueError
    except ValueError as e:
        raise ConfigError(f"{option} {mask_credentials(short(value))} is malformed ({e})") from None
    return value


def check_output_folder(path: str | Path, option: str) -> Path:
    """The folder ``path`` (made absolute), checked before anything is written to it.

    Raises:
        ConfigError: ``path`` is empty, an existing file, or its nearest existing parent is
            not a writable folder (the message names ``option``).
    """
    text = str(path)
    if not text.strip():
        raise ConfigError(f"{option} is empty; pass a folder")
    folder = expand_path(text, option).absolute()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {text!r} is a file; pass a folder")
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {text!r} cannot be created: {str(parent)!r} is not a writable folder")
    return folder
