"""Text on its way to the terminal: made harmless, and quiet when the reader has gone.

`clean()` escapes control characters (ESC and the escape sequences it starts, carriage returns,
backspaces, bell, C1 controls) and the invisible characters that reorder text (bidirectional
overrides), so a project file or a server message can neither drive the terminal nor disguise a line:
ESC becomes the four visible characters `\\x1b`. Newlines and tabs are kept unless `one_line` is asked
for. `Console` wraps stdout for the run: every write is cleaned, and when the reader has gone (`| head -1`)
output stops quietly instead of raising."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
from typing import IO, Any

_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), *_BIDI]


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TABLE = {code: _escape(code) for code in _CONTROLS if code not in (0x09, 0x0A)}
_TABLE_ONE_LINE = {**_TABLE, 0x0A: "\\n"}
_ANY = re.compile("[" + "".join(re.escape(chr(c)) for c in _CONTROLS if c not in (0x09, 0x0A)) + "]")


def clean(text: str, *, one_line: bool = False) -> str:
    """`text` with every control character escaped (newlines kept unless `one_line`)."""
    if one_line:
        return text.translate(_TABLE_ONE_LINE) if ("\n" in text or _ANY.search(text)) else text
    return text.translate(_TABLE) if _ANY.search(text) else text


def clean_data(value: Any, *, markup: bool = False) -> Any:
    """Every string inside lists and dicts cleaned, for tables and Markdown built from a bundle (`markup`:
    also escape rich markup such as `[link=...]`, for text printed through rich)."""
    if isinstance(value, str):
        text = clean(value, one_line=True)
        if markup:
            from rich.markup import escape

            text = escape(text)
        return text
    if isinstance(value, list):
        return [clean_data(v, markup=markup) for v in value]
    if isinstance(value, dict):
        return {k: clean_data(v, markup=markup) for k, v in value.items()}
    return value


def is_closed_pipe(exc: BaseException) -> bool:
    """Whether an error means the reader of our output has gone (`| head`)."""
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


def silence(stream: IO[str]) -> None:
    """Point a closed standard stream at /dev/null, so the interpreter's last flush does not complain."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fileno = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fileno)
        os.close(devnull)


def echo(text: str, *, err: bool = False) -> None:
    """`typer.echo` of cleaned text that stops quietly when the reader has gone."""
    import typer

    try:
        typer.echo(clean(text), err=err)
    except OSError as exc:
        if not is_closed_pipe(exc):
            raise
        silence(sys.stderr if err else sys.stdout)


class Console:
    """A text stream for the run's console output: cleaned, and quiet once the reader has gone."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.closed = False

    def write(self, text: str) -> int:
        """Write cleaned text; a closed pipe silences this console for good."""
        if not self.closed:
            try:
                self.stream.write(clean(text))
            except OSError as exc:
                self._closed(exc)
        return len(text)

    def flush(self) -> None:
        """Flush; a closed pipe silences this console for good."""
        if not self.closed:
            try:
                self.stream.flush()
            except OSError as exc:
                self._closed(exc)

    def isatty(self) -> bool:
        """Whether the wrapped stream is a terminal."""
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def _closed(self, exc: OSError) -> None:
        if not is_closed_pipe(exc):
            raise exc
        self.closed = True
        silence(self.stream)


__all__ = ["Console", "clean", "clean_data", "echo", "is_closed_pipe", "silence"]


ECHO_LIMIT = 200  # characters of a value an error message repeats


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` cut to `limit` characters, saying how long it was: a value echoed in an error message."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 check`, `2 checks` (`many` for an irregular plural)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"
