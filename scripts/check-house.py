#!/usr/bin/env python3
"""The house rules, checked from the source alone (CI runs this):

- no import cycle between the crate's top-level modules (`crate::a` naming `crate::b` is an edge a -> b);
- no source file over 500 lines;
- no trait in src/ with more than 20 methods.

Prints what it found and exits 1 when a rule is broken.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")
MAX_LINES = 500
MAX_TRAIT_METHODS = 20


def rust_files():
    for d, _, files in os.walk(SRC):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def top_module(path):
    rel = os.path.relpath(path, SRC).split(os.sep)
    return rel[0][:-3] if len(rel) == 1 else rel[0]


def code_only(text):
    """The text without comments, string literals and `#[cfg(test)]` modules (tests may reach anywhere)."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def edges():
    graph = {}
    for path in rust_files():
        m = top_module(path)
        if m in ("main", "lib"):
            continue
        text = code_only(open(path, encoding="utf-8").read())
        names = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        # `use crate::{a, b::c}` groups
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            names.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
        graph.setdefault(m, set()).update(n for n in names if n != m)
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def traits():
    for path in rust_files():
        text = open(path, encoding="utf-8").read()
        for m in re.finditer(r"\n\s*pub(?:\([^)]*\))?\s+trait\s+(\w+)[^{]*\{|\n\s*trait\s+(\w+)[^{]*\{", text):
            name = m.group(1) or m.group(2)
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            body = text[m.end() : i]
            n = len(re.findall(r"\bfn\s+\w+", body))
            yield os.path.relpath(path, ROOT), name, n


def main():
    failed = False
    sys.setrecursionlimit(10000)
    found = cycles(edges())
    if found:
        failed = True
        for c in found:
            print("import cycle between modules: " + " <-> ".join(c))
    else:
        print(f"no import cycle between the {len(edges())} top-level modules")
    long_files = []
    for path in rust_files():
        n = sum(1 for _ in open(path, encoding="utf-8"))
        if n > MAX_LINES:
            long_files.append((os.path.relpath(path, ROOT), n))
    for f, n in long_files:
        print(f"{f}: {n} lines (at most {MAX_LINES})")
    failed |= bool(long_files)
    if not long_files:
        print(f"no file in src/ over {MAX_LINES} lines")
    widest = sorted(traits(), key=lambda t: -t[2])
    for f, name, n in widest:
        if n > MAX_TRAIT_METHODS:
            failed = True
            print(f"{f}: trait {name} has {n} methods (at most {MAX_TRAIT_METHODS})")
    if widest and widest[0][2] <= MAX_TRAIT_METHODS:
        f, name, n = widest[0]
        print(f"no trait over {MAX_TRAIT_METHODS} methods (widest: {name}, {n}, in {f})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
