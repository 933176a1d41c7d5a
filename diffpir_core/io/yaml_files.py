"""Job files read with bounds: a small YAML file cannot expand into gigabytes ("billion laughs").

YAML aliases (``*a``) repeat a node without copying it; nine levels of ten aliases make a 10-line file describe
10⁹ strings. ``yaml.safe_load`` builds them as shared references in milliseconds, but anything that walks the data
(validation, its error message, a JSON round trip) expands them. Job files are small, so :func:`load_bounded_yaml`
refuses, before building any Python object, a file over :data:`MAX_BYTES`, nesting deeper than :data:`MAX_DEPTH`, or
more than :data:`MAX_NODES` nodes once every alias is expanded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20
"""1 MiB: a job file with a hundred variants is a few kB."""
MAX_DEPTH = 64
MAX_NODES = 100_000
"""Nodes (scalars, lists, mappings) after alias expansion; a large job file has a few hundred."""


class YamlLimitError(ValueError):
    """A YAML text over the bounds of job files (size, nesting, nodes after alias expansion)."""


def read_bounded_yaml(path: Path, name: str) -> Any:
    """:func:`load_bounded_yaml` of the file ``path``, its size checked before it is read."""
    _check_size(path.stat().st_size, name)
    return load_bounded_yaml(path.read_text(), name)


def _check_size(size: int, name: str) -> None:
    if size > MAX_BYTES:
        raise YamlLimitError(
            f"{name} is {size:,} bytes; a job file is at most {MAX_BYTES:,} bytes: is it the right file?"
        )


def load_bounded_yaml(text: str, name: str) -> Any:
    """The data of the YAML ``text`` (``yaml.safe_load`` semantics; None when empty); :class:`YamlLimitError`
    naming ``name`` and the bound when the text is too large, too deep or expands to too many nodes, and
    ``yaml.YAMLError`` when it is not valid YAML."""
    _check_size(len(text.encode("utf-8", "surrogatepass")), name)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, name)
        return loader.construct_document(node)
    except RecursionError:  # the parser's own recursion, on brackets nested thousands deep
        raise YamlLimitError(f"{name} nests more than {MAX_DEPTH} levels deep; a job file needs a few") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, name: str) -> None:
    """Raise :class:`YamlLimitError` when ``root`` nests deeper than :data:`MAX_DEPTH` or counts more than
    :data:`MAX_NODES` nodes with its aliases expanded (a node reached by several aliases counts each time; each
    distinct node is sized once, so the check itself stays linear in the file)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise YamlLimitError(f"{name} nests more than {MAX_DEPTH} levels deep; a job file needs a few")
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = MAX_NODES + 1  # a node that contains itself (a recursive alias) is unbounded
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(key, depth + 1) + size(value, depth + 1) for key, value in node.value)
        else:
            total = 1
        if total > MAX_NODES:
            raise YamlLimitError(
                f"{name} expands to more than {MAX_NODES:,} values once its YAML aliases (*name) are expanded "
                "(a 'billion laughs' file?); write the job out without nested aliases"
            )
        sizes[id(node)] = total
        return total

    size(root, 0)
