"""The filter language of ``--where``: a small, safe expression language over a table's columns.

A filter is data, never code. The text is parsed with :mod:`ast` and only a fixed set of node kinds is
accepted; everything is then compiled to a :mod:`pyarrow.compute` expression and evaluated by Arrow. No
Python is ever evaluated, no name outside the table's columns resolves, and no attribute, subscript, lambda,
comprehension or call other than the functions below exists in the language.

What it accepts::

    column names             richness, source, gsd_m        (unknown names are an error that lists the columns)
    literals                 12, 0.5, 1e5, 'dota', "dior", True, False, None
    comparisons              ==  !=  <  <=  >  >=  (chains such as 10 < richness <= 50 too)
    membership               source in ['dota', 'dior']     source not in ('xview',)
    null tests               gsd_m is None   gsd_m is not None   isnull(gsd_m)   notnull(gsd_m)
    boolean logic            and  or  not   (and the pandas spellings &  |  ~)
    arithmetic               +  -  *  /  (``/`` is true division)   abs(x)
    string functions         lower(s)  upper(s)  startswith(s, 'P0')  endswith(s, '.png')  contains(s, 'val')
                             length(s)

Comparisons with a null value are null, and a row whose condition is null is not selected (SQL semantics).
Limits: 2,000 characters, 200 syntax nodes, string literals of 1,000 characters, integers within int64.
Every problem is one :class:`~rs4m.errors.ConfigError` line that names the filter and what to change.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rs4m.errors import ConfigError

MAX_CHARS = 2000
MAX_NODES = 200
MAX_STRING = 1000
INT64 = 2**63

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: pc.add_checked, ast.Sub: pc.subtract_checked, ast.Mult: pc.multiply_checked,
    ast.Div: lambda a, b: pc.divide(a.cast(pa.float64()), _as_expression(b).cast(pa.float64())),
}
_LOGIC: dict[type, Callable[[Any, Any], Any]] = {
    ast.And: lambda a, b: a & b, ast.BitAnd: lambda a, b: a & b,
    ast.Or: lambda a, b: a | b, ast.BitOr: lambda a, b: a | b,
}
#: name → (number of arguments, builder); string arguments after the first must be literals
_FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "isnull": (1, lambda a: a.is_null()),
    "notnull": (1, lambda a: ~a.is_null()),
    "abs": (1, pc.abs_checked),
    "lower": (1, pc.utf8_lower),
    "upper": (1, pc.utf8_upper),
    "length": (1, pc.utf8_length),
    "startswith": (2, lambda a, p: pc.starts_with(a, pattern=p)),
    "endswith": (2, lambda a, p: pc.ends_with(a, pattern=p)),
    "contains": (2, lambda a, p: pc.match_substring(a, pattern=p)),
}


@dataclass(frozen=True)
class Where:
    """A parsed filter: its text, the Arrow expression it compiles to and the columns it names."""

    text: str
    expression: pc.Expression
    columns: tuple[str, ...]

    def filter(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` for which this filter is true, in their order (parse once, apply per batch)."""
        try:
            return table.filter(self.expression)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
            detail = " ".join(str(err).split()).split(". ")[0]
            raise ConfigError(f"--where {self.text!r} cannot be evaluated on these columns: {detail}") from None


class _Compiler:
    """Turns an accepted :mod:`ast` tree into a pyarrow expression; anything else is a ConfigError."""

    def __init__(self, text: str, columns: Collection[str] | None) -> None:
        self.text = text
        self.known = None if columns is None else list(columns)
        self.used: list[str] = []

    def fail(self, why: str) -> ConfigError:
        return ConfigError(f"--where {self.text!r}: {why}")

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise self.fail(f"{_describe(node)} is not part of the filter language "
                            "(columns, literals, comparisons, and/or/not, in, arithmetic, isnull/lower/...)")
        return method(node)

    def visit_Expression(self, node: ast.Expression) -> Any:
        return self.visit(node.body)

    def visit_Name(self, node: ast.Name) -> pc.Expression:
        if self.known is not None and node.id not in self.known:
            raise self.fail(f"no column {node.id!r}; columns: {', '.join(self.known)}")
        if node.id not in self.used:
            self.used.append(node.id)
        return pc.field(node.id)

    def visit_Constant(self, node: ast.Constant) -> Any:
        value = node.value
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            if not -INT64 <= value < INT64:
                raise self.fail(f"the integer {str(value)[:20]}... is out of range")
            return value
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise self.fail(f"a string literal longer than {MAX_STRING} characters")
            return value
        raise self.fail(f"the literal {value!r:.40} is not a number, string, True, False or None")

    def literal_list(self, node: ast.AST) -> list[Any]:
        if not isinstance(node, ast.List | ast.Tuple | ast.Set):
            raise self.fail("'in' takes a list of literals, e.g. source in ['dota', 'dior']")
        values = [self.visit(e) for e in node.elts]
        if any(isinstance(v, pc.Expression) for v in values):
            raise self.fail("'in' takes a list of literals, not of columns")
        return values

    def visit_Compare(self, node: ast.Compare) -> pc.Expression:
        result = None
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            part = self.compare(left, op, right)
            result = part if result is None else result & part
            left = right
        return result

    def compare(self, left: ast.AST, op: ast.cmpop, right: ast.AST) -> pc.Expression:
        if isinstance(op, ast.In | ast.NotIn):
            values = self.literal_list(right)
            expr = _as_expression(self.visit(left)).isin(values)
            return ~expr if isinstance(op, ast.NotIn) else expr
        if isinstance(op, ast.Is | ast.IsNot):
            if not (isinstance(right, ast.Constant) and right.value is None):
                raise self.fail("'is' only tests for None (gsd_m is None / gsd_m is not None)")
            expr = _as_expression(self.visit(left)).is_null()
            return ~expr if isinstance(op, ast.IsNot) else expr
        a, b = self.visit(left), self.visit(right)
        if a is None or b is None:
            raise self.fail("compare with None using 'is None' / 'is not None'")
        if not (isinstance(a, pc.Expression) or isinstance(b, pc.Expression)):
            raise self.fail("a comparison needs a column on one side")
        return _COMPARE[type(op)](_as_expression(a), b)

    def visit_BoolOp(self, node: ast.BoolOp) -> pc.Expression:
        parts = [_as_expression(self.visit(v)) for v in node.values]
        combine = _LOGIC[type(node.op)]
        result = parts[0]
        for part in parts[1:]:
            result = combine(result, part)
        return result

    def visit_BinOp(self, node: ast.BinOp) -> pc.Expression:
        kind = type(node.op)
        if kind in (ast.BitAnd, ast.BitOr):
            return _LOGIC[kind](_as_expression(self.visit(node.left)), _as_expression(self.visit(node.right)))
        if kind not in _ARITH:
            raise self.fail(f"the operator {_describe(node.op)} is not supported (use + - * /)")
        return _ARITH[kind](_as_expression(self.visit(node.left)), self.visit(node.right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not | ast.Invert):
            return ~_as_expression(operand)
        if isinstance(node.op, ast.USub):
            return -operand if not isinstance(operand, pc.Expression) else pc.negate_checked(operand)
        return operand

    def visit_Call(self, node: ast.Call) -> pc.Expression:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS or node.keywords:
            raise self.fail(f"{_describe(node.func)} is not a filter function; functions: {', '.join(_FUNCTIONS)}")
        arity, build = _FUNCTIONS[name]
        if len(node.args) != arity:
            raise self.fail(f"{name}() takes {arity} argument{'s' if arity > 1 else ''}")
        first = _as_expression(self.visit(node.args[0]))
        rest = [self.visit(a) for a in node.args[1:]]
        if any(not isinstance(r, str) for r in rest):
            raise self.fail(f"the second argument of {name}() must be a string literal")
        return build(first, *rest)


def _as_expression(value: Any) -> pc.Expression:
    return value if isinstance(value, pc.Expression) else pc.scalar(value)


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"attribute access '.{node.attr}'"
    if isinstance(node, ast.Name):
        return f"'{node.id}'"
    return f"'{type(node).__name__}'"


def _parse(text: str) -> ast.Expression:
    if len(text) > MAX_CHARS:
        raise ConfigError(f"--where is {len(text)} characters long; the limit is {MAX_CHARS}")
    if "@" in text or "`" in text:
        raise ConfigError(f"--where {text!r}: '@' names and `backticks` are not part of the filter language")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        why = getattr(err, "msg", None) or type(err).__name__
        raise ConfigError(f"--where {text!r} is not a valid filter: {why}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ConfigError(f"--where {text!r:.60} has more than {MAX_NODES} parts; simplify it")
    return tree


def parse_where(text: str, columns: Collection[str] | None = None) -> Where:
    """Parse and compile ``text``; with ``columns`` given, every name must be one of them.

    Raises:
        ConfigError: one line naming the filter and what is wrong (syntax, unknown column, forbidden construct).
    """
    compiler = _Compiler(text, columns)
    try:
        expression = compiler.visit(_parse(text))
    except RecursionError:
        raise ConfigError(f"--where {text!r:.60} is nested too deeply") from None
    except (TypeError, pa.ArrowException) as err:  # an operand Arrow cannot take (e.g. a list in arithmetic)
        raise ConfigError(f"--where {text!r:.60} cannot be compiled: {' '.join(str(err).split())[:120]}") from None
    if not isinstance(expression, pc.Expression):
        raise ConfigError(f"--where {text!r} does not name a column; write a condition such as 'richness > 20'")
    return Where(text, expression, tuple(compiler.used))


def referenced_columns(text: str, columns: Collection[str]) -> list[str]:
    """The columns of ``columns`` that ``text`` names, in the order of ``columns`` (to read only those)."""
    used = set(parse_where(text, columns).columns)
    return [c for c in columns if c in used]


def filter_table(table: pa.Table, text: str) -> pa.Table:
    """The rows of ``table`` for which the filter ``text`` is true, in their order."""
    return parse_where(text, table.column_names).filter(table)


def filter_frame(frame: pd.DataFrame, text: str) -> pd.DataFrame:
    """The rows of ``frame`` for which the filter ``text`` is true, in their order, index kept."""
    where = parse_where(text, [str(c) for c in frame.columns])
    table = pa.Table.from_pandas(frame[list(where.columns)], preserve_index=False)
    table = table.append_column("__row__", pa.array(np.arange(len(frame), dtype=np.int64)))
    rows = where.filter(table).column("__row__").to_numpy()
    return frame.iloc[rows]
