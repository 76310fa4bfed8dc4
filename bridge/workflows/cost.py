"""A manifest's `cost` as arithmetic over its number parameters: what one job of the workflow costs, for the
request cost bound (BRIDGE_MAX_REQUEST_COST).

A list of names is their product (pixels x steps x images); a text is a formula for work a product cannot say:
two passes (`width * height * steps + hr_width * hr_height * hr_steps`), or tiles that overlap
(`ceil((upscale_width - overlap) / (width - overlap)) * ...`). A formula has numbers, parameter names, `+ - * /
//`, parentheses and `ceil`, `floor`, `min`, `max`; it is read once, when the manifest loads, and evaluated in exact
fractions, so no request can make it slow or round it down. A division by zero has no cost: such a request asks for
endless work (a tile no wider than its overlap) and is refused, naming the divisor's parameters. `image.width` and
`image.height` read the size of an image parameter (`image`), for work that grows with the picture a request sends
(`sd_upscale` tiles the image itself with `upscaler: none`).
"""
from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from fractions import Fraction
from functools import lru_cache

FUNCTIONS = {"ceil": math.ceil, "floor": math.floor, "min": min, "max": max}
_OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
              ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b}
# a formula is a manifest author's text: its size and nesting bound the work of reading and evaluating it
MAX_FORMULA = 1000
MAX_DEPTH = 32


# what a formula may read of an image parameter: `image.width`, `image.height`
IMAGE_SIZES = ("width", "height")


def split_name(name: str) -> tuple[str, str]:
    """The parameter a formula's name reads, and which side of it for an image's size (`image.width`: ("image",
    "width"); a number parameter: (name, ""))."""
    param, _, side = name.partition(".")
    return param, side


def _name(node: ast.AST) -> str | None:
    """The name a formula reads at `node` (`steps`, `image.width`), or None where it reads none."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr in IMAGE_SIZES:
        return f"{node.value.id}.{node.attr}"
    return None


class Endless(ArithmeticError):
    """A formula divided by zero: the request asks for endless work. `names`: the parameters of the divisor."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self.names = names


_COMPARISONS = {ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b,
                ast.GtE: lambda a, b: a >= b, ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}


class Formula:
    """A cost formula, checked: `names` are the parameters it reads, in order of first use. With `rule`, one
    comparison of two formulas (`2 * overlap <= width`), which a manifest's `checks` require of a request."""

    def __init__(self, text: str, rule: bool = False) -> None:
        if len(text) > MAX_FORMULA:
            raise ValueError(f"is longer than {MAX_FORMULA} characters")
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ValueError(f"is not a formula ({exc.msg})") from None
        self.text = text.strip()
        self.names: list[str] = []
        self._compare = None
        if rule:
            if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1 and type(tree.ops[0]) in _COMPARISONS):
                raise ValueError("must compare two formulas with one of < <= > >= == !=")
            self._compare = _COMPARISONS[type(tree.ops[0])]
            self._sides = (tree.left, tree.comparators[0])
            for side in self._sides:
                self._check(side, 0)
            return
        self._tree = tree
        self._check(tree, 0)

    def holds(self, values: Mapping[str, int | float]) -> bool:
        """A rule's comparison for `values`; a side that divides by zero raises Endless."""
        assert self._compare is not None
        return bool(self._compare(*(self._eval(side, values) for side in self._sides)))

    def _check(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            self._check(node.left, depth + 1)
            self._check(node.right, depth + 1)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            self._check(node.operand, depth + 1)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            if not math.isfinite(node.value):  # 1e400 reads as infinity, which no fraction holds
                raise ValueError(f"has a number out of range: {ast.unparse(node)}")
        elif _name(node) is not None:
            if _name(node) not in self.names:
                self.names.append(_name(node))  # type: ignore[arg-type]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
              and not node.keywords and node.args and (len(node.args) == 1) == (node.func.id in ("ceil", "floor"))):
            for arg in node.args:
                self._check(arg, depth + 1)
        else:
            raise ValueError(f"may hold numbers, parameter names, an image's width and height, + - * / //, "
                             f"parentheses and {', '.join(FUNCTIONS)}; not {ast.unparse(node)!r}")

    def __call__(self, values: Mapping[str, int | float]) -> Fraction:
        """The cost for `values` (every name the formula reads); raises Endless where it divides by zero."""
        return self._eval(self._tree, values)

    def _eval(self, node: ast.AST, values: Mapping[str, int | float]) -> Fraction:
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, values), self._eval(node.right, values)
            if right == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv)):
                raise Endless(list(dict.fromkeys(_name(n) for n in ast.walk(node.right)  # type: ignore[misc]
                                                 if _name(n) in self.names)))
            return Fraction(_OPERATORS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, values)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Constant):
            return Fraction(node.value)
        name = _name(node)
        if name is not None:
            return Fraction(values[name])
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return Fraction(FUNCTIONS[node.func.id](*(self._eval(a, values) for a in node.args)))


def formula(text: str, rule: bool = False) -> Formula:
    """`Formula(text, rule)`, read once: the manifest's check and the loaded workflow share it (a formula is not
    changed after it is read)."""
    return _read(text, bool(rule))  # one key however it is called: lru_cache keys f(t) and f(t, False) apart


@lru_cache(maxsize=256)
def _read(text: str, rule: bool) -> Formula:
    return Formula(text, rule)
