"""The collection filter language: small, safe, evaluated in Python (no SQL passes through).

    expr   := term ('or' term)*
    term   := factor ('and' factor)*
    factor := 'not' factor | '(' expr ')' | test
    test   := FIELD [OP VALUE]

Fields: tlp and severity (ordered), cvss and epss (numbers), medical and kev (booleans; bare or = true/false),
tag and source (= or !=). Values are words, numbers or quoted strings.
    medical and tlp <= GREEN
    (severity >= high or cvss >= 7.0) and not tag = noise
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ceptoar.core.errors import CeptoarError
from ceptoar.core.model import TLP_ORDER, tlp_name

SEVERITIES = ["low", "medium", "high", "critical"]
MAX_DEPTH = 50  # parentheses and `not`s nested deeper than this are refused, not recursed into
MAX_LENGTH = 2000
OPS = ("<=", ">=", "!=", "=", "<", ">")
FIELDS = {"tlp", "severity", "cvss", "epss", "medical", "kev", "tag", "source"}
_TOKEN = re.compile(r"\s*(?:(?P<op><=|>=|!=|=|<|>)|(?P<paren>[()])|\"(?P<q>[^\"]*)\"|'(?P<sq>[^']*)'"
                    r"|(?P<word>[A-Za-z0-9_.:+\-#]+))")


class FilterError(CeptoarError, ValueError):
    pass


@dataclass
class Token:
    kind: str  # op | paren | word | str
    text: str
    pos: int


def tokenize(src: str) -> list[Token]:
    tokens, i = [], 0
    while i < len(src):
        if src[i:].strip() == "":
            break
        m = _TOKEN.match(src, i)
        if not m or m.end() == i:
            j = len(src) - len(src[i:].lstrip())
            raise FilterError(f"filter error at position {j + 1}: unexpected {src[j]!r}")
        start = m.start(m.lastgroup)
        if m.group("op"):
            tokens.append(Token("op", m.group("op"), start))
        elif m.group("paren"):
            tokens.append(Token("paren", m.group("paren"), start))
        elif m.group("q") is not None or m.group("sq") is not None:
            tokens.append(Token("str", m.group("q") if m.group("q") is not None else m.group("sq"), start - 1))
        else:
            tokens.append(Token("word", m.group("word"), start))
        i = m.end()
    return tokens


Predicate = Callable[[dict], bool]


class _Parser:
    def __init__(self, src: str):
        if len(src) > MAX_LENGTH:
            raise FilterError(f"filter error: longer than {MAX_LENGTH} characters")
        self.src = src
        self.tokens = tokenize(src)
        self.i = 0
        self.depth = 0

    def nested(self, tok: Token | None):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", tok)

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def error(self, message: str, tok: Token | None = None) -> FilterError:
        pos = tok.pos + 1 if tok else len(self.src) + 1
        return FilterError(f"filter error at position {pos}: {message}")

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok.kind == "word" and tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Predicate:
        if not self.tokens:
            raise self.error("empty filter")
        pred = self.expr()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek().text!r}", self.peek())
        return pred

    def expr(self) -> Predicate:
        parts = [self.term()]
        while self.keyword("or"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda row, ps=parts: any(p(row) for p in ps))

    def term(self) -> Predicate:
        parts = [self.factor()]
        while self.keyword("and"):
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda row, ps=parts: all(p(row) for p in ps))

    def factor(self) -> Predicate:
        tok = self.peek()
        if self.keyword("not"):
            self.nested(tok)
            inner = self.factor()
            self.depth -= 1
            return lambda row: not inner(row)
        if tok is None:
            raise self.error("expected a field, 'not' or '('")
        if tok.kind == "paren" and tok.text == "(":
            self.nested(tok)
            self.i += 1
            inner = self.expr()
            close = self.peek()
            if close is None or close.text != ")":
                raise self.error("expected ')'", close)
            self.i += 1
            self.depth -= 1
            return inner
        return self.test()

    def test(self) -> Predicate:
        tok = self.peek()
        if tok.kind != "word" or tok.text.lower() not in FIELDS:
            raise self.error(f"unknown field {tok.text!r} (fields: {', '.join(sorted(FIELDS))})", tok)
        self.i += 1
        field = tok.text.lower()
        op_tok = self.peek()
        if op_tok is None or op_tok.kind != "op":
            if field in ("medical", "kev"):
                return lambda row: bool(row.get(field))
            raise self.error(f"expected a comparison after {field!r}", op_tok)
        self.i += 1
        val_tok = self.peek()
        if val_tok is None or val_tok.kind not in ("word", "str"):
            raise self.error(f"expected a value after {field} {op_tok.text}", val_tok)
        self.i += 1
        return self.compare(field, op_tok, val_tok)

    def compare(self, field: str, op_tok: Token, val_tok: Token) -> Predicate:
        op, raw = op_tok.text, val_tok.text
        if field in ("tag", "source"):
            if op not in ("=", "!="):
                raise self.error(f"{field} takes = or !=", op_tok)
            if field == "tag":
                return (lambda row: raw in row.get("tags", [])) if op == "=" else (
                    lambda row: raw not in row.get("tags", []))
            return (lambda row: row.get("source") == raw) if op == "=" else (lambda row: row.get("source") != raw)
        if field in ("medical", "kev"):
            if op not in ("=", "!=") or raw.lower() not in ("true", "false", "yes", "no"):
                raise self.error(f"{field} is true or false", val_tok)
            want = raw.lower() in ("true", "yes")
            return (lambda row: bool(row.get(field)) == want) if op == "=" else (
                lambda row: bool(row.get(field)) != want)
        if field == "tlp":
            try:
                rank = TLP_ORDER.index(tlp_name(raw))
            except ValueError:
                raise self.error(f"unknown TLP {raw!r} (use {', '.join(TLP_ORDER)})", val_tok) from None
            return _ordered(lambda row: TLP_ORDER.index(row["tlp"]) if row.get("tlp") in TLP_ORDER else None, op, rank)
        if field == "severity":
            if raw.lower() not in SEVERITIES:
                raise self.error(f"unknown severity {raw!r} (use {', '.join(SEVERITIES)})", val_tok)
            rank = SEVERITIES.index(raw.lower())
            return _ordered(lambda row: SEVERITIES.index(row["severity"]) if row.get("severity") in SEVERITIES
                            else None, op, rank)
        try:
            number = float(raw)
        except ValueError:
            raise self.error(f"{field} needs a number, not {raw!r}", val_tok) from None
        if field == "epss":  # the highest probability of exploitation over the advisory's CVEs, 0 to 1
            return _ordered(lambda row: row.get("epss"), op, number)
        return _ordered(lambda row: row.get("max_cvss"), op, number)


def _ordered(get: Callable[[dict], float | None], op: str, ref: float) -> Predicate:
    compare = {"=": lambda a: a == ref, "!=": lambda a: a != ref, "<": lambda a: a < ref,
               "<=": lambda a: a <= ref, ">": lambda a: a > ref, ">=": lambda a: a >= ref}[op]

    def pred(row: dict) -> bool:
        value = get(row)
        return value is not None and compare(value)
    return pred


def compile_filter(src: str) -> Predicate:
    """A predicate over advisory rows, or FilterError naming the position of the mistake."""
    return _Parser(src).parse()
