"""Text cleaning applied to every document before tokenization (and tokenizer training)."""

import re
import sys
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # keeps \t and \n
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def clean(text: str) -> str:
    """NFC-normalises unicode, unifies line endings, drops control characters, trailing
    spaces and runs of blank lines, and strips the ends. May return an empty string."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip()


def decode_utf8(data) -> str:
    """Decodes UTF-8 (tfds returns text as bytes), replacing invalid bytes with U+FFFD
    rather than failing half-way through a corpus."""
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)


def split_paragraphs(text: str) -> list[str]:
    return [p for p in (q.strip() for q in _PARAGRAPH_BREAK.split(text)) if p]


def split_long_line(line: str, limit: int) -> list[str]:
    """`line` in pieces of at most `limit` characters, each cut after its last space or newline
    where there is one (text with neither is cut anywhere)."""
    pieces, start = [], 0
    while len(line) - start > limit:
        end = start + limit
        cut = max(line.rfind(" ", start, end), line.rfind("\n", start, end)) + 1 or end
        pieces.append(line[start:cut])
        start = cut
    return pieces + [line[start:]] if start < len(line) else pieces


def warn(message: str) -> None:
    """A warning about the data, on stderr, where the run's own log lines go too."""
    print(f"WARNING: {message}", file=sys.stderr, flush=True)
