"""A lexer for ClickHouse SQL, following ClickHouse's own ``Lexer``: string literals, quoted
identifiers, heredocs, nested ``/* */`` comments, ``--`` and ``# `` comments.

The endpoint's policy reads keywords and setting names from these tokens, never from the raw
text, and checks what it reads against the engine's own parse tree (see ``policy``).
"""

from __future__ import annotations

from dataclasses import dataclass

WORD = "word"  # bare identifier or keyword
QUOTED = "quoted"  # `identifier` or "identifier", unescaped
STRING = "string"  # 'literal' or $tag$heredoc$tag$, unescaped
NUMBER = "number"
SYMBOL = "symbol"

_WORD_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_WORD_PART = _WORD_START | frozenset("0123456789$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "b": "\b", "f": "\f", "a": "\a", "v": "\v"}


class LexError(ValueError):
    """The text does not lex as ClickHouse SQL (unterminated quote or comment)."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  # unescaped value for QUOTED and STRING
    offset: int

    def is_word(self, *words: str) -> bool:
        return self.kind == WORD and self.text.upper() in words


def _quoted(sql: str, start: int) -> tuple[str, int]:
    """The unescaped body of the quoted token at ``start`` and the offset after it."""
    quote = sql[start]
    out: list[str] = []
    i, n = start + 1, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "\\" and i + 1 < n:
            out.append(_ESCAPES.get(sql[i + 1], sql[i + 1]))
            i += 2
        elif ch == quote:
            if i + 1 < n and sql[i + 1] == quote:  # a doubled quote stands for itself
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise LexError(f"unterminated {quote} quote starting at position {start + 1}")


def _comment_end(sql: str, start: int) -> int:
    """The offset after the (nested) ``/* ... */`` comment starting at ``start``."""
    depth, i, n = 0, start, len(sql)
    while i < n - 1:
        pair = sql[i : i + 2]
        if pair == "/*":
            depth += 1
            i += 2
        elif pair == "*/":
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise LexError(f"unterminated comment starting at position {start + 1}")


def _heredoc(sql: str, start: int) -> tuple[str, int] | None:
    """A ``$tag$ ... $tag$`` literal at ``start``, or None when ``$`` starts something else."""
    close = sql.find("$", start + 1)
    if close < 0:
        return None
    tag = sql[start : close + 1]
    if not all(ch in _WORD_PART for ch in tag[1:-1]):
        return None
    end = sql.find(tag, close + 1)
    if end < 0:
        raise LexError(f"unterminated heredoc {tag} starting at position {start + 1}")
    return sql[close + 1 : end], end + len(tag)


def tokenize(sql: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i) or (ch == "#" and sql[i + 1 : i + 2] in (" ", "!")):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            i = _comment_end(sql, i)
        elif ch in "'\"`":
            text, end = _quoted(sql, i)
            tokens.append(Token(STRING if ch == "'" else QUOTED, text, i))
            i = end
        elif ch == "$" and (heredoc := _heredoc(sql, i)) is not None:
            tokens.append(Token(STRING, heredoc[0], i))
            i = heredoc[1]
        elif ch in _WORD_START:
            end = i + 1
            while end < n and sql[end] in _WORD_PART:
                end += 1
            tokens.append(Token(WORD, sql[i:end], i))
            i = end
        elif ch.isdigit() or (ch == "." and sql[i + 1 : i + 2].isdigit()):
            end = i + 1
            while end < n and (sql[end].isalnum() or sql[end] in "._"):
                end += 1
            tokens.append(Token(NUMBER, sql[i:end], i))
            i = end
        else:
            tokens.append(Token(SYMBOL, ch, i))
            i += 1
    return tokens
