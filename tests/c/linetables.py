"""Prints a C table: a real code object's location table and the line of every code unit."""
import sys


def sample(items, limit=3):
    total = 0
    for i, x in enumerate(items):   # a loop, a branch, a call over lines
        if x is None:
            continue
        try:
            total += int(x) * (
                2 if i % 2 else
                3)
        except ValueError:
            total -= 1
        if i > limit:
            break
    return [y
            for y in range(total)
            if y % 7 == 0]


code = sample.__code__
table = code.co_linetable
units = []
for start, end, line in code.co_lines():
    units += [-1 if line is None else line] * ((end - start) // 2)
name = "v{}{}".format(*sys.version_info[:2])
print(f"/* Python {sys.version.split()[0]}: sample() of tests/c/linetables.py, first line "
      f"{code.co_firstlineno}. */")
print(f"static const uint8_t {name}_table[] = {{" + ", ".join(str(b) for b in table) + "};")
print(f"static const int {name}_lines[] = {{" + ", ".join(str(u) for u in units) + "};")
print(f"static const uint32_t {name}_first = {code.co_firstlineno};")
