"""Text for a terminal: names from the data (column names, keys, file names) may hold control
characters, and an ANSI escape sequence printed raw recolours, moves or clears the user's terminal
(or hides text in a log). Everything this program prints passes through `printable`."""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

# Invisible characters that reorder what follows them on screen (the "Trojan Source" characters).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` with control characters (C0 and C1 but newline and tab, DEL, bidi controls) written
    as Python escapes: '\\x1b[31m' stays visible as those 7 characters instead of turning text red."""
    if text.isprintable() and not _BIDI_CONTROLS.intersection(text):
        return text
    return "".join(_escaped(c) for c in text)


def _escaped(char: str) -> str:
    if char in "\n\t" or (unicodedata.category(char) != "Cc" and char not in _BIDI_CONTROLS):
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
