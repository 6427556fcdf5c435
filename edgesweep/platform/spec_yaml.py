"""Reading a sweep YAML safely: numbers as users write them, line numbers, bounded aliases.

PyYAML implements YAML 1.1, where ``1e-3`` (no dot) is a *string*: a learning rate written that
way would reach the trainer as text. The loader here resolves every float spelling of YAML 1.2
(``1e-3``, ``-2E+5``, ``.5``). It also keeps the line of every key (errors name it), refuses
duplicate keys (PyYAML silently keeps the last one — a typo must never fall back to a value
silently), and refuses documents whose aliases expand beyond :data:`MAX_NODES` nodes (a
"billion laughs" document is a few hundred bytes and gigabytes once expanded).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_NODES = 200_000  # a 10,000-trial grid spec is a few hundred nodes; this is generous

_FLOAT = re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$
                       |^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$""", re.X)


class SpecLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (the int resolver still wins for plain integers)."""


SpecLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _ch in "-+0123456789.":
    SpecLoader.yaml_implicit_resolvers[_ch] = [
        (tag, rx) for tag, rx in SpecLoader.yaml_implicit_resolvers.get(_ch, [])
        if tag != "tag:yaml.org,2002:float"]
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class YamlProblem(ValueError):
    """A document that is not acceptable YAML for a spec; ``line`` where the parser knows it."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def _expanded_size(node: yaml.Node, memo: dict[int, int], limit: int) -> int:
    """Nodes the document has once every alias is expanded (memoised on shared nodes)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = limit + 1  # a cycle counts as unbounded
    if isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, memo, limit) + _expanded_size(v, memo, limit) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(v, memo, limit) for v in node.value)
    else:
        n = 1
    memo[key] = min(n, limit + 1)
    return memo[key]


_NO_VALUE = object()


def _key_value(key: yaml.Node) -> Any:
    """A scalar key as the document holds it (``1``, ``True``, ``None``), where validation
    errors name it; ``_NO_VALUE`` for a string or a non-scalar (its text is the name then)."""
    if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:str":
        return _NO_VALUE
    loader = SpecLoader("")
    try:
        value = loader.construct_object(key)
        hash(value)
        return value
    except (yaml.YAMLError, TypeError):
        return _NO_VALUE
    finally:
        loader.dispose()


def _key_lines(node: yaml.Node, path: tuple, out: dict[tuple, int]) -> None:
    """{key path: 1-based line} for every mapping key and sequence item; duplicate keys fail.
    A key that is not a string (``1: a``, ``null: b``) is entered under its text and under its
    value, so an error about it finds its line either way."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            if name in seen:
                where = ".".join(map(str, path + (name,)))
                raise YamlProblem(f"{where}: duplicate key (line {k.start_mark.line + 1})", k.start_mark.line + 1)
            seen.add(name)
            out[path + (name,)] = k.start_mark.line + 1
            if (value := _key_value(k)) is not _NO_VALUE:
                # pydantic locates such a key by its value, or by str() of one it cannot (None)
                out.setdefault(path + (value,), k.start_mark.line + 1)
                out.setdefault(path + (str(value),), k.start_mark.line + 1)
            _key_lines(v, path + (name,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[path + (i,)] = v.start_mark.line + 1
            _key_lines(v, path + (i,), out)


def load_yaml(text: str, max_nodes: int = MAX_NODES) -> tuple[Any, dict[tuple, int]]:
    """(document, key-path → line). Raises :class:`YamlProblem` for bad YAML, duplicate keys
    and alias expansion beyond ``max_nodes``."""
    try:
        node = yaml.compose(text, Loader=SpecLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise YamlProblem(f"not valid YAML: {' '.join(str(exc).split())}", line) from None
    if node is None:
        return None, {}
    if _expanded_size(node, {}, max_nodes) > max_nodes:
        raise YamlProblem(f"the document expands to more than {max_nodes:,} nodes (YAML aliases); "
                          "a sweep spec never needs that many")
    lines: dict[tuple, int] = {}
    _key_lines(node, (), lines)
    loader = SpecLoader("")
    try:
        return loader.construct_document(node), lines
    except yaml.YAMLError as exc:
        raise YamlProblem(f"not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
