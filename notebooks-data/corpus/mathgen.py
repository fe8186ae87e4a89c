"""mathgen.py - deterministic arithmetic and algebra problems with worked answers.

Each family is a function f(rng) -> (question, worked_solution, group_key). Problem i of a
family is drawn from random.Random("<seed>:math:<family>:<i>"), so it does not depend on how
many problems are generated. A document is prompt = question + "\\nSolution:", response =
" " + worked solution, whose last line is "Answer: ...". Every number in a solution is
computed here (exact arithmetic with int and Fraction) and re-checked by self_check().
Checked by check.py (format) and by `python3 mathgen.py --self-test`.
"""
import random
import sys
from fractions import Fraction
from math import gcd

from common import Doc

NAMES = ["Ana", "Ben", "Chen", "Dara", "Elif", "Femi", "Gita", "Hugo", "Ines", "Jonas", "Kofi",
         "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma",
         "Vera", "Wei", "Yusuf", "Zoe"]
ITEMS = [("notebook", "notebooks"), ("pencil", "pencils"), ("ticket", "tickets"),
         ("apple", "apples"), ("book", "books"), ("mug", "mugs"), ("stamp", "stamps"),
         ("loaf of bread", "loaves of bread"), ("bottle of water", "bottles of water"),
         ("plant", "plants"), ("towel", "towels"), ("battery", "batteries")]


def n2s(x):
    """Exact number to text: integers plainly, terminating decimals as decimals, otherwise a
    fraction a/b (negative numbers with a leading '-')."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:
        sign = "-" if x < 0 else ""
        a = abs(x)
        k = 0
        while (a * 10 ** k).denominator != 1:
            k += 1
        digits = str((a * 10 ** k).numerator).rjust(k + 1, "0")
        return f"{sign}{digits[:-k]}.{digits[-k:]}"
    return f"{x.numerator}/{x.denominator}"


def dec_k(x, k):
    """Exact decimal text of x with exactly k decimal places (x must have at most k)."""
    x = Fraction(x)
    v = x * 10 ** k
    assert v.denominator == 1
    sign = "-" if v < 0 else ""
    digits = str(abs(v.numerator)).rjust(k + 1, "0")
    return sign + (digits[:-k] + "." + digits[-k:] if k else digits)


def frac_s(x):
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def money(x):
    return "$" + f"{Fraction(x).numerator / Fraction(x).denominator:.2f}"


def signed_term(c, var="", first=False):
    """Render a coefficient times var inside a sum: '3x', '- 3x', '+ 5'."""
    mag = abs(c)
    body = (("" if mag == 1 and var else str(mag)) + var) if var else str(mag)
    if first:
        return ("-" if c < 0 else "") + body
    return ("- " if c < 0 else "+ ") + body


def ndigits(rng, lo, hi):
    """A random integer with between lo and hi digits."""
    k = rng.randint(lo, hi)
    return rng.randint(10 ** (k - 1), 10 ** k - 1)


def _syms(rng):
    return rng.choice([("×", "÷"), ("*", "/")])


# --- families -----------------------------------------------------------------------------

def fam_addition(rng):
    if rng.random() < 0.7:
        a, b = ndigits(rng, 3, 6), ndigits(rng, 2, 6)
        q = rng.choice([f"What is {a} + {b}?", f"Add {a} and {b}.", f"Compute {a} + {b}.",
                        f"Find the sum of {a} and {b}.", f"Calculate {a} plus {b}."])
        da, db = str(a)[::-1], str(b)[::-1]
        steps = ["Add column by column, starting with the ones."]
        carry, place = 0, ["ones", "tens", "hundreds", "thousands", "ten thousands",
                           "hundred thousands", "millions"]
        for i in range(max(len(da), len(db))):
            x = int(da[i]) if i < len(da) else 0
            y = int(db[i]) if i < len(db) else 0
            s = x + y + carry
            expr = f"{x} + {y}" + (f" + {carry}" if carry else "")
            if s >= 10:
                steps.append(f"{place[i].capitalize()}: {expr} = {s}, write {s % 10} and carry 1.")
            else:
                steps.append(f"{place[i].capitalize()}: {expr} = {s}, write {s}.")
            carry = s // 10
        if carry:
            steps.append("Write the final carry 1 in front.")
        steps.append(f"So {a} + {b} = {a + b}.")
        ans = a + b
        key = f"add:{min(a, b)}:{max(a, b)}"
    else:
        xs = [rng.randint(10, 9999) for _ in range(rng.randint(3, 4))]
        q = rng.choice(["What is " + " + ".join(map(str, xs)) + "?",
                        "Add the numbers " + ", ".join(map(str, xs[:-1])) + f" and {xs[-1]}.",
                        "Find the total of " + ", ".join(map(str, xs)) + "."])
        steps, acc = [], xs[0]
        for x in xs[1:]:
            steps.append(f"{acc} + {x} = {acc + x}")
            acc += x
        steps.append(f"The sum is {acc}.")
        ans = acc
        key = "add:" + ":".join(map(str, sorted(xs)))
    return q, "\n".join(steps) + f"\nAnswer: {ans}", key


def fam_subtraction(rng):
    a, b = ndigits(rng, 3, 6), ndigits(rng, 2, 5)
    q = rng.choice([f"What is {a} - {b}?", f"Subtract {b} from {a}.", f"Compute {a} - {b}.",
                    f"Find the difference {a} - {b}.", f"Calculate {a} minus {b}."])
    place = ["ones", "tens", "hundreds", "thousands", "ten thousands", "hundred thousands"]
    big, small = (a, b) if a >= b else (b, a)
    steps = []
    if a < b:
        steps.append(f"{b} is larger than {a}, so compute {b} - {a} and make the result negative.")
    steps.append("Subtract column by column, starting with the ones.")
    dg, ds = [int(c) for c in str(big)[::-1]], [int(c) for c in str(small)[::-1]]
    borrow = 0
    for i in range(len(dg)):
        x, y = dg[i] - borrow, ds[i] if i < len(ds) else 0
        if i >= len(ds) and borrow == 0:
            if i < len(dg) - 1 or x:
                steps.append(f"{place[i].capitalize()}: bring down {x}.")
            continue
        pre = f"{place[i].capitalize()}: "
        if borrow:
            pre += f"{dg[i]} minus the borrowed 1 is {x}; "
        if x < y:
            steps.append(pre + f"{x} is less than {y}, so borrow 1: {x + 10} - {y} = {x + 10 - y}.")
            borrow = 1
        else:
            steps.append(pre + f"{x} - {y} = {x - y}.")
            borrow = 0
    steps.append(f"So {big} - {small} = {big - small}.")
    if a < b:
        steps.append(f"Therefore {a} - {b} = {a - b}.")
    return q, "\n".join(steps) + f"\nAnswer: {a - b}", f"sub:{a}:{b}"


def fam_multiplication(rng):
    a, b = ndigits(rng, 2, 4), ndigits(rng, 2, 3)
    m, _ = _syms(rng)
    q = rng.choice([f"What is {a} {m} {b}?", f"Multiply {a} by {b}.", f"Compute {a} {m} {b}.",
                    f"Find the product of {a} and {b}."])
    parts = []
    s = str(b)
    for i, c in enumerate(s):
        v = int(c) * 10 ** (len(s) - 1 - i)
        if v:
            parts.append(v)
    steps = []
    if len(parts) > 1:
        steps.append(f"Split {b} into " + " + ".join(map(str, parts)) + ".")
        for v in parts:
            steps.append(f"{a} {m} {v} = {a * v}")
        steps.append(" + ".join(str(a * v) for v in parts) + f" = {a * b}")
    else:
        steps.append(f"{a} {m} {b} = {a * b}")
    return q, "\n".join(steps) + f"\nAnswer: {a * b}", f"mul:{min(a, b)}:{max(a, b)}"


def fam_division(rng):
    d = rng.randint(3, 99 if rng.random() < 0.6 else 19)
    qt = rng.randint(12, 9999)
    r = 0 if rng.random() < 0.5 else rng.randint(1, d - 1)
    n = d * qt + r
    _, dv = _syms(rng)
    q = rng.choice([f"What is {n} {dv} {d}?", f"Divide {n} by {d}.", f"Compute {n} {dv} {d}.",
                    f"Find the quotient and remainder when {n} is divided by {d}."])
    steps = ["Use long division."]
    digits = str(n)
    cur, i, qdigits = 0, 0, ""
    while i < len(digits) and cur * 10 + int(digits[i]) < d:
        cur = cur * 10 + int(digits[i])
        i += 1
    first = True
    while i < len(digits):
        cur = cur * 10 + int(digits[i])
        i += 1
        k = cur // d
        qdigits += str(k)
        if first:
            steps.append(f"{cur} {dv} {d} = {k}, {k} {'×' if dv == '÷' else '*'} {d} = {k * d}, "
                         f"{cur} - {k * d} = {cur - k * d}.")
            first = False
        else:
            steps.append(f"Bring down the next digit: {cur}. {cur} {dv} {d} = {k}, "
                         f"{cur} - {k * d} = {cur - k * d}.")
        cur -= k * d
    assert int(qdigits) == qt and cur == r
    if r:
        steps.append(f"The quotient is {qt} and the remainder is {r}, since "
                     f"{d} {'×' if dv == '÷' else '*'} {qt} + {r} = {n}.")
        ans = f"{qt} remainder {r}"
    else:
        steps.append(f"The division is exact: {d} {'×' if dv == '÷' else '*'} {qt} = {n}.")
        ans = str(qt)
    return q, "\n".join(steps) + f"\nAnswer: {ans}", f"div:{n}:{d}"


# order of operations: expressions as token lists of ints, operators and parentheses

def _gen_expr(rng, depth=0):
    n = rng.randint(2, 3 if depth else 4)
    toks = [rng.randint(1, 20)]
    for _ in range(n - 1):
        op = rng.choice("+-*/")
        if depth == 0 and rng.random() < 0.3:
            toks += [op, "("] + _gen_expr(rng, 1) + [")"]
        else:
            toks += [op, rng.randint(1, 20)]
    return toks


def _reduce_once(toks):
    """One evaluation step by the usual rules; returns new tokens or None if the division is
    not exact."""
    # innermost parenthesis
    if "(" in toks:
        close = toks.index(")")
        open_ = max(i for i in range(close) if toks[i] == "(")
        inner = toks[open_ + 1:close]
        if len(inner) == 1:
            return toks[:open_] + inner + toks[close + 1:]
        new = _reduce_once(inner)
        if new is None:
            return None
        if len(new) == 1:
            return toks[:open_] + new + toks[close + 1:]
        return toks[:open_ + 1] + new + toks[close:]
    for ops in ("*/", "+-"):
        for i, t in enumerate(toks):
            if isinstance(t, str) and t in ops:
                a, b = toks[i - 1], toks[i + 1]
                if t == "*":
                    v = a * b
                elif t == "/":
                    if b == 0 or a % b:
                        return None
                    v = a // b
                elif t == "+":
                    v = a + b
                else:
                    v = a - b
                return toks[:i - 1] + [v] + toks[i + 2:]
    return toks


def _render(toks, m, dv):
    out = []
    for t in toks:
        if t == "(":
            out.append("(")
        elif t == ")":
            out.append(")")
        elif isinstance(t, str):
            out.append({"*": m, "/": dv}.get(t, t))
        else:
            out.append(f"({t})" if t < 0 else str(t))
    s = " ".join(out)
    return s.replace("( ", "(").replace(" )", ")")


def fam_order_of_operations(rng):
    m, dv = _syms(rng)
    while True:
        toks = _gen_expr(rng)
        steps, cur, ok = [], toks, True
        while len(cur) > 1:
            nxt = _reduce_once(cur)
            if nxt is None or any(isinstance(x, int) and abs(x) > 10 ** 6 for x in nxt):
                ok = False
                break
            cur = nxt
            steps.append("= " + _render(cur, m, dv))
        if ok and len(steps) >= 2:
            break
    e = _render(toks, m, dv)
    q = rng.choice([f"Evaluate {e}.", f"What is {e}?", f"Compute {e} using the order of operations.",
                    f"Simplify {e}."])
    sol = (["Work inside parentheses first, then multiplication and division from left to right, "
            "then addition and subtraction from left to right.", e] + steps)
    return q, "\n".join(sol) + f"\nAnswer: {cur[0]}", "ops:" + _render(toks, "*", "/")


def _lin(a, b, var):
    """'a·var + b' rendered."""
    s = signed_term(a, var, first=True)
    if b:
        s += " " + signed_term(b)
    return s


def fam_linear_equation(rng):
    var = rng.choice("xxxynkt")
    x = rng.randint(-20, 20)
    a = rng.choice([i for i in range(-12, 13) if i not in (0, 1)])
    b = rng.randint(-50, 50)
    c = a * x + b
    eq = f"{_lin(a, b, var)} = {c}"
    q = rng.choice([f"Solve for {var}: {eq}.", f"Solve {eq}.", f"Find {var} if {eq}.",
                    f"What value of {var} satisfies {eq}?"])
    steps = []
    if b:
        op = f"Subtract {b}" if b > 0 else f"Add {-b}"
        steps.append(f"{op} on both sides: {signed_term(a, var, first=True)} = {c - b}.")
    steps.append(f"Divide both sides by {a}: {var} = {c - b} / {a} = {x}.")
    steps.append(f"Check: {a} * {x}" + (f" {'+' if b > 0 else '-'} {abs(b)}" if b else "")
                 + f" = {c}.")
    return q, "\n".join(steps) + f"\nAnswer: {var} = {x}", f"lin:{a}:{b}:{c}"


def fam_linear_equation_both_sides(rng):
    var = rng.choice("xxxynkt")
    x = rng.randint(-15, 15)
    if rng.random() < 0.5:
        a, c = rng.sample([i for i in range(-9, 10) if i != 0], 2)
        b = rng.randint(-30, 30)
        d = (a - c) * x + b
        eq = f"{_lin(a, b, var)} = {_lin(c, d, var)}"
        steps = [f"Subtract {signed_term(c, var, first=True)} from both sides: "
                 f"{_lin(a - c, b, var)} = {d}."]
        k, rhs = a - c, d - b
        if b:
            steps.append(f"{'Subtract' if b > 0 else 'Add'} {abs(b)} on both sides: "
                         f"{signed_term(k, var, first=True)} = {rhs}.")
        key = f"lin2:{a}:{b}:{c}:{d}"
    else:
        a = rng.choice([i for i in range(-9, 10) if i not in (0, 1)])
        b = rng.randint(-12, 12) or 3
        c = a * (x + b)
        eq = f"{a}({_lin(1, b, var)}) = {c}"
        steps = [f"Expand the left side: {_lin(a, a * b, var)} = {c}."]
        k, rhs = a, c - a * b
        steps.append(f"{'Subtract' if a * b > 0 else 'Add'} {abs(a * b)} on both sides: "
                     f"{signed_term(k, var, first=True)} = {rhs}.")
        key = f"lin3:{a}:{b}:{c}"
    steps.append(f"Divide both sides by {k}: {var} = {rhs} / {k} = {x}.")
    q = rng.choice([f"Solve for {var}: {eq}.", f"Solve the equation {eq}.",
                    f"Find {var} such that {eq}."])
    return q, "\n".join(steps) + f"\nAnswer: {var} = {x}", key


def fam_system(rng):
    x, y = rng.randint(-10, 10), rng.randint(-10, 10)
    while True:
        a1, b1, a2, b2 = (rng.choice([i for i in range(-6, 7) if i]) for _ in range(4))
        if a1 * b2 - a2 * b1 != 0 and abs(a1) != abs(a2):
            break
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    e1 = f"{signed_term(a1, 'x', True)} {signed_term(b1, 'y')} = {c1}"
    e2 = f"{signed_term(a2, 'x', True)} {signed_term(b2, 'y')} = {c2}"
    q = rng.choice([f"Solve the system: {e1} and {e2}.",
                    f"Find x and y if {e1} and {e2}.",
                    f"Solve the simultaneous equations {e1}, {e2}."])
    l1, l2 = a2, a1
    steps = []
    if l1 != 1:
        steps.append(f"Multiply the first equation by {l1}: "
                     f"{signed_term(a1 * l1, 'x', True)} {signed_term(b1 * l1, 'y')} = {c1 * l1}.")
    if l2 != 1:
        steps.append(f"Multiply the second equation by {l2}: "
                     f"{signed_term(a2 * l2, 'x', True)} {signed_term(b2 * l2, 'y')} = {c2 * l2}.")
    ky, ry = b1 * l1 - b2 * l2, c1 * l1 - c2 * l2
    steps.append(f"Subtract the second from the first: {signed_term(ky, 'y', True)} = {ry}.")
    if ky != 1:
        steps.append(f"So y = {ry} / {ky} = {y}.")
    sub = f"{signed_term(a1, 'x', True)}" + (f" {signed_term(b1 * y, '')}" if b1 * y else "")
    steps.append(f"Substitute y = {y} into the first equation: {sub} = {c1}, so "
                 f"{signed_term(a1, 'x', True)} = {c1 - b1 * y}.")
    if a1 != 1:
        steps.append(f"x = {c1 - b1 * y} / {a1} = {x}.")
    return q, "\n".join(steps) + f"\nAnswer: x = {x}, y = {y}", f"sys:{a1}:{b1}:{c1}:{a2}:{b2}:{c2}"


def fam_fractions(rng):
    kind = rng.choice(["add", "sub", "mul", "div", "simplify"])
    if kind == "simplify":
        g = rng.randint(2, 12)
        n, d = rng.randint(1, 15), rng.randint(2, 16)
        while gcd(n, d) != 1 or n == d:
            n, d = rng.randint(1, 15), rng.randint(2, 16)
        N, D = n * g, d * g
        q = rng.choice([f"Simplify {N}/{D}.", f"Write {N}/{D} in lowest terms.",
                        f"Reduce the fraction {N}/{D}."])
        steps = [f"The greatest common divisor of {N} and {D} is {g}.",
                 f"Divide numerator and denominator by {g}: {N}/{D} = {n}/{d}."]
        return q, "\n".join(steps) + f"\nAnswer: {n}/{d}", f"fsimp:{N}:{D}"
    a, b = rng.randint(1, 11), rng.randint(2, 12)
    c, d = rng.randint(1, 11), rng.randint(2, 12)
    x, y = Fraction(a, b), Fraction(c, d)
    sym = {"add": "+", "sub": "-", "mul": "×", "div": "÷"}[kind]
    q = rng.choice([f"Compute {a}/{b} {sym} {c}/{d}.", f"What is {a}/{b} {sym} {c}/{d}?",
                    f"Calculate {a}/{b} {sym} {c}/{d} and simplify."])
    steps = []
    if kind in ("add", "sub"):
        l = b * d // gcd(b, d)
        steps.append(f"The least common denominator of {b} and {d} is {l}.")
        steps.append(f"{a}/{b} = {a * l // b}/{l} and {c}/{d} = {c * l // d}/{l}.")
        num = a * l // b + (c * l // d if kind == "add" else -(c * l // d))
        steps.append(f"{a * l // b}/{l} {sym} {c * l // d}/{l} = {num}/{l}.")
        res = x + y if kind == "add" else x - y
        assert Fraction(num, l) == res
        if res.denominator != l and num != 0:
            g = gcd(abs(num), l)
            steps.append(f"Divide numerator and denominator by {g}: {num}/{l} = {frac_s(res)}.")
    elif kind == "mul":
        res = x * y
        steps.append(f"Multiply the numerators and the denominators: ({a} × {c})/({b} × {d}) "
                     f"= {a * c}/{b * d}.")
        if (res.numerator, res.denominator) != (a * c, b * d):
            steps.append(f"Simplify: {a * c}/{b * d} = {frac_s(res)}.")
    else:
        res = x / y
        steps.append(f"Dividing by {c}/{d} is multiplying by its reciprocal {d}/{c}.")
        steps.append(f"{a}/{b} × {d}/{c} = {a * d}/{b * c}.")
        if (res.numerator, res.denominator) != (a * d, b * c):
            steps.append(f"Simplify: {a * d}/{b * c} = {frac_s(res)}.")
    if res.denominator != 1 and abs(res) > 1:
        w = abs(res.numerator) // res.denominator
        rem = abs(res.numerator) % res.denominator
        steps.append(f"As a mixed number: {'-' if res < 0 else ''}{w} {rem}/{res.denominator}.")
    return q, "\n".join(steps) + f"\nAnswer: {frac_s(res)}", f"frac:{kind}:{a}:{b}:{c}:{d}"


def fam_percentages(rng):
    kind = rng.choice(["of", "what", "change", "change"])
    if kind == "of":
        p = rng.choice([5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50, 60, 75, 80, 90, 120, 150])
        n = rng.randint(2, 400) * rng.choice([1, 2, 4, 5, 10])
        r = Fraction(p, 100) * n
        q = rng.choice([f"What is {p}% of {n}?", f"Find {p}% of {n}.", f"Calculate {p} percent of {n}."])
        steps = [f"{p}% means {p}/100 = {n2s(Fraction(p, 100))}.",
                 f"{n2s(Fraction(p, 100))} × {n} = {n2s(r)}."]
        return q, "\n".join(steps) + f"\nAnswer: {n2s(r)}", f"pct:{p}:{n}"
    if kind == "what":
        b = rng.randint(2, 80) * rng.choice([5, 10, 20, 25])
        p = rng.choice([1, 2, 4, 5, 10, 20, 25, 40, 50, 60, 75, 80])
        a = Fraction(p, 100) * b
        if a.denominator != 1:
            a, p = Fraction(b, 4), 25
        q = rng.choice([f"What percent of {b} is {n2s(a)}?", f"{n2s(a)} is what percentage of {b}?",
                        f"Express {n2s(a)} out of {b} as a percentage."])
        steps = [f"Divide the part by the whole: {n2s(a)} / {b} = {n2s(a / b)}.",
                 f"Multiply by 100: {n2s(a / b)} × 100 = {n2s(a / b * 100)}%."]
        return q, "\n".join(steps) + f"\nAnswer: {n2s(a / b * 100)}%", f"pctw:{n2s(a)}:{b}"
    p = rng.choice([5, 10, 15, 20, 25, 30, 40, 50])
    n = rng.randint(2, 300) * rng.choice([2, 4, 10, 20])
    up = rng.random() < 0.5
    ch = Fraction(p, 100) * n
    res = n + ch if up else n - ch
    what = rng.choice(["price", "population", "salary", "rent", "membership"])
    q = (f"A {what} of {n} is {'increased' if up else 'decreased'} by {p}%. What is the new "
         f"{what}?" if what not in ("price", "salary", "rent") else
         f"A {what} of {money(n)} is {'raised' if up else 'reduced'} by {p}%. What is the new {what}?")
    fmt = money if what in ("price", "salary", "rent") else n2s
    steps = [f"{p}% of {fmt(n)} is {p}/100 × {n} = {fmt(ch)}.",
             f"{fmt(n)} {'+' if up else '-'} {fmt(ch)} = {fmt(res)}."]
    return q, "\n".join(steps) + f"\nAnswer: {fmt(res)}", f"pctc:{p}:{n}:{up}"


def fam_decimals(rng):
    kind = rng.choice(["add", "sub", "mul"])
    a = Fraction(rng.randint(1, 99999), 10 ** rng.randint(1, 3))
    b = Fraction(rng.randint(1, 9999), 10 ** rng.randint(1, 2))
    if kind == "add":
        r, sym = a + b, "+"
    elif kind == "sub":
        if a < b:
            a, b = b, a
        r, sym = a - b, "-"
    else:
        b = Fraction(rng.randint(2, 99), 10 ** rng.randint(0, 1))
        r, sym = a * b, "×"
    q = rng.choice([f"What is {n2s(a)} {sym} {n2s(b)}?", f"Compute {n2s(a)} {sym} {n2s(b)}."])
    if kind in ("add", "sub"):
        k = max(len(n2s(a).partition(".")[2]), len(n2s(b).partition(".")[2]))
        pa, pb = dec_k(a, k), dec_k(b, k)
        steps = [f"Line up the decimal points: {pa} {sym} {pb}.",
                 f"{pa} {sym} {pb} = {dec_k(r, k)}."]
    else:
        ka = len(n2s(a).partition(".")[2])
        kb = len(n2s(b).partition(".")[2])
        ia, ib = int(a * 10 ** ka), int(b * 10 ** kb)
        steps = [f"Multiply without the decimal points: {ia} × {ib} = {ia * ib}.",
                 f"There are {ka} + {kb} = {ka + kb} decimal place{'s' if ka + kb != 1 else ''} "
                 f"in the factors, so the product is {dec_k(r, ka + kb)}"
                 + (f" = {n2s(r)}." if dec_k(r, ka + kb) != n2s(r) else ".")]
    return q, "\n".join(steps) + f"\nAnswer: {n2s(r)}", f"dec:{kind}:{a}:{b}"


def fam_gcd_lcm(rng):
    g = rng.randint(2, 30)
    a, b = g * rng.randint(2, 40), g * rng.randint(2, 40)
    if a == b:
        b += g
    if a < b:
        a, b = b, a
    want_lcm = rng.random() < 0.4
    steps = ["Use the Euclidean algorithm."]
    x, y = a, b
    while y:
        steps.append(f"{x} = {x // y} × {y} + {x % y}")
        x, y = y, x % y
    steps.append(f"The greatest common divisor is {x}.")
    if want_lcm:
        l = a * b // x
        steps.append(f"lcm({a}, {b}) = {a} × {b} / {x} = {l}.")
        q = rng.choice([f"Find the least common multiple of {a} and {b}.",
                        f"What is lcm({a}, {b})?"])
        return q, "\n".join(steps) + f"\nAnswer: {l}", f"lcm:{a}:{b}"
    q = rng.choice([f"Find the greatest common divisor of {a} and {b}.", f"What is gcd({a}, {b})?",
                    f"What is the largest number that divides both {a} and {b}?"])
    return q, "\n".join(steps) + f"\nAnswer: {x}", f"gcd:{a}:{b}"


def fam_powers_roots(rng):
    kind = rng.choice(["pow", "pow", "sqrt", "sci"])
    if kind == "pow":
        b, e = rng.randint(2, 15), rng.randint(2, 5)
        if b > 9:
            e = min(e, 3)
        q = rng.choice([f"What is {b}^{e}?", f"Compute {b} to the power of {e}.",
                        f"Evaluate {b}^{e}."])
        steps, acc = [], b
        for _ in range(e - 1):
            steps.append(f"{acc} × {b} = {acc * b}")
            acc *= b
        return (q, f"{b}^{e} = " + " × ".join([str(b)] * e) + ".\n" + "\n".join(steps)
                + f"\nAnswer: {acc}", f"pow:{b}:{e}")
    if kind == "sqrt":
        r = rng.randint(4, 99)
        q = rng.choice([f"What is the square root of {r * r}?", f"Find √{r * r}.",
                        f"Compute sqrt({r * r})."])
        lo = (r // 10) * 10
        steps = [f"{lo} × {lo} = {lo * lo} and {lo + 10} × {lo + 10} = {(lo + 10) ** 2}, so the "
                 f"root is between {lo} and {lo + 10}." if lo else
                 f"{r * r} is less than 100, so the root is less than 10.",
                 f"{r} × {r} = {r * r}."]
        return q, "\n".join(steps) + f"\nAnswer: {r}", f"sqrt:{r}"
    m = rng.randint(101, 9999)
    e = rng.randint(2, 8)
    n = m * 10 ** e
    digits = str(m)
    mant = digits[0] + ("." + digits[1:].rstrip("0") if digits[1:].rstrip("0") else "")
    exp = len(str(n)) - 1
    q = rng.choice([f"Write {n} in scientific notation.", f"Express {n} in scientific notation."])
    steps = [f"Move the decimal point {exp} places to the left: {n} = {mant} × 10^{exp}."]
    return q, "\n".join(steps) + f"\nAnswer: {mant} × 10^{exp}", f"sci:{n}"


def fam_mean(rng):
    k = rng.randint(3, 7)
    xs = [rng.randint(1, 100) for _ in range(k)]
    while (Fraction(sum(xs), k)).denominator not in (1, 2, 4, 5):
        xs[-1] += 1
    s = sum(xs)
    mean = Fraction(s, k)
    lst = ", ".join(map(str, xs))
    q = rng.choice([f"Find the mean of {lst}.", f"What is the average of {lst}?",
                    f"Compute the arithmetic mean of the numbers {lst}."])
    steps = ["Sum: " + " + ".join(map(str, xs)) + f" = {s}.",
             f"There are {k} numbers, so the mean is {s} / {k} = {n2s(mean)}."]
    if rng.random() < 0.4:
        ys = sorted(xs)
        med = Fraction(ys[k // 2]) if k % 2 else Fraction(ys[k // 2 - 1] + ys[k // 2], 2)
        q = rng.choice([f"Find the mean and the median of {lst}.",
                        f"What are the mean and the median of {lst}?"])
        steps.append("Sorted: " + ", ".join(map(str, ys)) + f"; the median is {n2s(med)}.")
        return q, "\n".join(steps) + f"\nAnswer: mean {n2s(mean)}, median {n2s(med)}", \
            "mean:" + ":".join(map(str, xs)) + ":med"
    return q, "\n".join(steps) + f"\nAnswer: {n2s(mean)}", "mean:" + ":".join(map(str, xs))


def fam_word_problems(rng):
    kind = rng.choice(["change", "speed", "share", "rate", "ages", "rectangle", "time", "convert"])
    name = rng.choice(NAMES)
    if kind == "change":
        item, items = rng.choice(ITEMS)
        n, cents = rng.randint(2, 12), rng.randint(25, 1500)
        price = Fraction(cents, 100)
        cost = n * price
        bill = next(b for b in (5, 10, 20, 50, 100, 200) if b >= cost)
        q = (f"{name} buys {n} {items} at {money(price)} each and pays with a {money(bill)} note. "
             f"How much change does {name} get?")
        steps = [f"Cost: {n} × {money(price)} = {money(cost)}.",
                 f"Change: {money(bill)} - {money(cost)} = {money(bill - cost)}."]
        return q, "\n".join(steps) + f"\nAnswer: {money(bill - cost)}", f"wchange:{n}:{cents}"
    if kind == "speed":
        v, t = rng.randint(4, 120), rng.randint(2, 9)
        veh = rng.choice(["train", "car", "cyclist", "bus", "boat", "runner"])
        q = f"A {veh} travels {v * t} km in {t} hours at a steady speed. What is its speed?"
        steps = ["Speed = distance / time.", f"{v * t} km / {t} h = {v} km/h."]
        if rng.random() < 0.5:
            t2 = rng.randint(2, 12)
            q = q[:-1] + f" How far does it go in {t2} hours at the same speed?"
            steps.append(f"Distance = speed × time = {v} × {t2} = {v * t2} km.")
            return q, "\n".join(steps) + f"\nAnswer: {v * t2} km", f"wspeed:{v}:{t}:{t2}"
        return q, "\n".join(steps) + f"\nAnswer: {v} km/h", f"wspeed:{v}:{t}"
    if kind == "share":
        k = rng.randint(3, 12)
        total = rng.randint(k * 2, k * 40)
        item, items = rng.choice(ITEMS)
        q = (f"{name} shares {total} {items} equally among {k} people. How many does each person "
             f"get, and how many are left over?")
        steps = [f"{total} ÷ {k} = {total // k} remainder {total % k}, because "
                 f"{k} × {total // k} = {k * (total // k)}."]
        return (q, "\n".join(steps) + f"\nAnswer: {total // k} each, {total % k} left over",
                f"wshare:{total}:{k}")
    if kind == "rate":
        r, h = rng.randint(12, 400), rng.randint(2, 16)
        thing = rng.choice(["A machine makes", "A printer prints", "A pump moves", "A bakery bakes"])
        unit = {"A machine makes": "parts", "A printer prints": "pages",
                "A pump moves": "litres of water", "A bakery bakes": "rolls"}[thing]
        q = f"{thing} {r} {unit} per hour. How many {unit} is that in {h} hours?"
        steps = [f"{r} × {h} = {r * h}."]
        if rng.random() < 0.5:
            target = r * rng.randint(h + 1, h + 30)
            q = f"{thing} {r} {unit} per hour. How many hours does it take to reach {target} {unit}?"
            steps = [f"Hours = total / rate = {target} / {r} = {target // r}."]
            return q, "\n".join(steps) + f"\nAnswer: {target // r} hours", f"wrate:{r}:{target}"
        return q, "\n".join(steps) + f"\nAnswer: {r * h} {unit}", f"wrate:{r}:{h}"
    if kind == "ages":
        other = rng.choice([n for n in NAMES if n != name])
        y, d = rng.randint(3, 60), rng.randint(1, 30)
        s = 2 * y + d
        q = (f"{name} is {d} years older than {other}. Together their ages add up to {s}. "
             f"How old is each of them?")
        steps = [f"Let {other}'s age be a. Then {name}'s age is a + {d}.",
                 f"a + (a + {d}) = {s}, so 2a = {s - d} and a = {y}.",
                 f"{name} is {y} + {d} = {y + d}."]
        return (q, "\n".join(steps) + f"\nAnswer: {name} is {y + d}, {other} is {y}",
                f"wages:{d}:{s}")
    if kind == "rectangle":
        l, w = rng.randint(2, 60), rng.randint(2, 60)
        unit = rng.choice(["m", "cm", "ft"])
        q = rng.choice([f"A rectangle is {l} {unit} long and {w} {unit} wide. Find its area and perimeter.",
                        f"A garden measures {l} {unit} by {w} {unit}. What are its area and perimeter?"])
        steps = [f"Area = length × width = {l} × {w} = {l * w} square {unit}.",
                 f"Perimeter = 2 × (length + width) = 2 × ({l} + {w}) = {2 * (l + w)} {unit}."]
        return (q, "\n".join(steps) + f"\nAnswer: area {l * w} square {unit}, perimeter "
                f"{2 * (l + w)} {unit}", f"wrect:{min(l, w)}:{max(l, w)}")
    if kind == "time":
        h, mnt = rng.randint(6, 20), rng.choice(range(0, 60, 5))
        dh, dm = rng.randint(1, 3), rng.choice(range(5, 60, 5))
        event = rng.choice(["film", "train journey", "concert", "meeting", "lesson"])
        end = h * 60 + mnt + dh * 60 + dm
        q = (f"A {event} starts at {h:02d}:{mnt:02d} and lasts {dh} hour{'s' if dh != 1 else ''} "
             f"and {dm} minutes. When does it end?")
        steps = [f"{h:02d}:{mnt:02d} + {dh} h = {h + dh:02d}:{mnt:02d}.",
                 f"{h + dh:02d}:{mnt:02d} + {dm} min = {(end // 60) % 24:02d}:{end % 60:02d}."]
        return (q, "\n".join(steps) + f"\nAnswer: {(end // 60) % 24:02d}:{end % 60:02d}",
                f"wtime:{h}:{mnt}:{dh}:{dm}")
    conv = rng.choice([("kilometres", "metres", 1000), ("metres", "centimetres", 100),
                       ("kilograms", "grams", 1000), ("hours", "minutes", 60),
                       ("minutes", "seconds", 60), ("litres", "millilitres", 1000),
                       ("days", "hours", 24), ("weeks", "days", 7)])
    big, small, f = conv
    v = Fraction(rng.randint(2, 400), rng.choice([1, 1, 2, 4, 10]))
    if rng.random() < 0.5:
        q = f"How many {small} are in {n2s(v)} {big}?"
        steps = [f"1 {big[:-1] if big.endswith('s') else big} = {f} {small}.",
                 f"{n2s(v)} × {f} = {n2s(v * f)}."]
        return q, "\n".join(steps) + f"\nAnswer: {n2s(v * f)} {small}", f"wconv:{big}:{v}"
    w = v * f
    w = Fraction(int(w)) if w.denominator != 1 else w
    q = f"Convert {n2s(w)} {small} to {big}."
    steps = [f"1 {big[:-1] if big.endswith('s') else big} = {f} {small}.",
             f"{n2s(w)} / {f} = {n2s(w / f)}."]
    return q, "\n".join(steps) + f"\nAnswer: {n2s(w / f)} {big}", f"wconvb:{small}:{w}"


FAMILIES = [
    ("addition", fam_addition), ("subtraction", fam_subtraction),
    ("multiplication", fam_multiplication), ("division", fam_division),
    ("order-of-operations", fam_order_of_operations), ("linear-equations", fam_linear_equation),
    ("linear-equations-2", fam_linear_equation_both_sides), ("linear-systems", fam_system),
    ("fractions", fam_fractions), ("percentages", fam_percentages), ("decimals", fam_decimals),
    ("gcd-lcm", fam_gcd_lcm), ("powers-roots", fam_powers_roots), ("mean-median", fam_mean),
    ("word-problems", fam_word_problems),
]


def generate(seed, per_family):
    docs = []
    for name, fam in FAMILIES:
        for i in range(per_family):
            rng = random.Random(f"{seed}:math:{name}:{i}")
            q, sol, key = fam(rng)
            prompt = q + "\nSolution:"
            response = " " + sol
            docs.append(Doc(text=prompt + response, prompt=prompt, response=response,
                            source="math-" + name, group="math:" + key))
    return docs


def self_check(docs):
    """Re-derive the answer of the problems whose answer is one plain number from the question
    text with Python arithmetic and compare; returns the number of problems checked."""
    import re
    checked = 0
    for d in docs:
        fam = d.source[5:]
        ans = d.response.rsplit("\nAnswer: ", 1)[1]
        q = d.prompt
        if fam in ("multiplication", "subtraction", "addition") and re.fullmatch(r"-?\d+", ans):
            nums = [int(x) for x in re.findall(r"\d+", q.split("\n")[0])]
            if fam == "addition":
                ok = sum(nums) == int(ans)
            elif fam == "subtraction":
                a, b = (nums[1], nums[0]) if q.startswith("Subtract") else (nums[0], nums[1])
                ok = a - b == int(ans)
            else:
                ok = nums[0] * nums[1] == int(ans)
            if not ok:
                raise AssertionError(f"wrong answer: {d.text!r}")
            checked += 1
        if fam == "order-of-operations":
            expr = q.split("\n")[0]
            expr = re.sub(r"^(Evaluate|What is|Compute|Simplify) ", "", expr)
            expr = re.sub(r"( using the order of operations)?[.?]$", "", expr)
            expr = expr.replace("×", "*").replace("÷", "/")
            if not re.fullmatch(r"[0-9+\-*/() ]+", expr):
                raise AssertionError(f"unexpected expression: {expr!r}")
            if Fraction(eval(expr)).limit_denominator() != Fraction(int(ans)):
                raise AssertionError(f"wrong answer: {d.text!r}")
            checked += 1
        if fam in ("linear-equations", "linear-equations-2"):
            eq = re.sub(r"^(Solve for \w:|Solve the equation|Solve|Find \w if|Find \w such that|"
                        r"What value of \w satisfies) ", "", q.split("\n")[0]).rstrip(".?")
            var, val = ans.split(" = ")
            lhs, rhs = (_py(side, {var: int(val)}) for side in eq.split(" = "))
            if lhs != rhs:
                raise AssertionError(f"wrong answer: {d.text!r}")
            checked += 1
        if fam == "linear-systems":
            eqs = re.findall(r"(-?\d*x [+-] \d*y = -?\d+)", q)
            vals = dict(kv.split(" = ") for kv in ans.split(", "))
            vals = {k: int(v) for k, v in vals.items()}
            for e in eqs:
                lhs, rhs = (_py(side, vals) for side in e.split(" = "))
                if lhs != rhs:
                    raise AssertionError(f"wrong answer: {d.text!r}")
            checked += 1
        if fam == "fractions" and "/" in q and not q.startswith(("Simplify", "Write", "Reduce")):
            m = re.search(r"(\d+)/(\d+) (.) (\d+)/(\d+)", q)
            a, b, op, c, e = m.groups()
            x, y = Fraction(int(a), int(b)), Fraction(int(c), int(e))
            r = {"+": x + y, "-": x - y, "×": x * y, "÷": x / y}[op]
            if Fraction(ans) != r:
                raise AssertionError(f"wrong answer: {d.text!r}")
            checked += 1
    return checked


def _py(expr, env):
    """Evaluate a linear expression such as '-4(y + 3)' or '3x - 5' with exact arithmetic."""
    import re
    e = expr.replace(" ", "")
    for var, v in env.items():
        e = re.sub(rf"(\d)({var})", r"\1*\2", e)
        e = re.sub(rf"(?<![\w)])-({var})", r"-1*\1", e)
        e = e.replace(var, f"({v})")
    e = re.sub(r"(\d)\(", r"\1*(", e)
    e = re.sub(r"^-\(", "-1*(", e)
    if not re.fullmatch(r"[0-9+\-*/()]+", e):
        raise AssertionError(f"cannot evaluate {expr!r}")
    return Fraction(eval(e))


if __name__ == "__main__":
    if "--self-test" in sys.argv:
        ds = generate(1234, 300)
        n = self_check(ds)
        print(f"PASS mathgen self-test: {n} answers re-derived, {len(ds)} problems generated")
    else:
        for d in generate(int(sys.argv[1]) if len(sys.argv) > 1 else 1234, 2):
            print(d.text)
            print("-" * 40)
