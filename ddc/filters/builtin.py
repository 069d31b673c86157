"""The filters DDC ships. Each judges one record's value (and, for Kafka, its topic and headers) and says
whether it may cross: accepts(value, view) -> bool.

The keyword filter builds one regular expression from a trie of its patterns
instead of an alternation of them: Python's `re` tries alternatives one by one
at every position, while the trie's shared prefixes let it reject most
positions on the first byte. That keeps thousands of keywords cheap without a
compiled Aho-Corasick dependency (pyahocorasick has no bytes mode in its
default build).
"""

import json
import re
from pathlib import Path

import fastjsonschema


def trie_pattern(words: list[bytes]) -> bytes:
    """A regular expression matching exactly the given byte strings, factored by common prefixes."""
    trie: dict = {}
    for word in words:
        node = trie
        for byte in word:
            node = node.setdefault(byte, {})
        node[None] = {}

    def render(node: dict) -> bytes:
        ending = None in node
        branches = [re.escape(bytes([byte])) + render(child) for byte, child in sorted(
            (key, value) for key, value in node.items() if key is not None)]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        if ending:
            return b"(?:" + body + b")?"
        return body

    return render(trie)


class MaxSizeFilter:
    def __init__(self, config):
        self.max_bytes = config.max_bytes

    def accepts(self, value: bytes, view) -> bool:
        return len(value) <= self.max_bytes


class KeywordFilter:
    """Drops records whose value contains any keyword or byte pattern."""

    def __init__(self, config):
        words = [keyword.encode("utf-8") for keyword in config.keywords]
        words += [bytes.fromhex(pattern) for pattern in config.hex_patterns]
        self.pattern = re.compile(trie_pattern(sorted(set(words))),
                                  re.IGNORECASE if config.case_insensitive else 0)

    def accepts(self, value: bytes, view) -> bool:
        return self.pattern.search(value) is None


class RegexFilter:
    """Drops records that match (action deny) or that do not match (action allow)."""

    def __init__(self, config):
        self.pattern = re.compile(config.pattern.encode("utf-8"), re.IGNORECASE if config.case_insensitive else 0)
        self.deny = config.action == "deny"

    def accepts(self, value: bytes, view) -> bool:
        return (self.pattern.search(value) is None) == self.deny


def load_schema(config) -> dict:
    if config.schema_file is not None:
        return json.loads(Path(config.schema_file).read_text())
    return config.json_schema


class JsonSchemaFilter:
    """Drops records whose value is not JSON valid against the schema (compiled once by fastjsonschema)."""

    def __init__(self, config):
        self.validate = fastjsonschema.compile(load_schema(config))

    def accepts(self, value: bytes, view) -> bool:
        try:
            self.validate(json.loads(value))
        except (ValueError, fastjsonschema.JsonSchemaValueException):
            return False
        return True


def name_matcher(names: list[str]):
    """Exact names, or regular expressions where an entry starts with ^."""
    exact = {name for name in names if not name.startswith("^")}
    patterns = [re.compile(name) for name in names if name.startswith("^")]
    return lambda name: name in exact or any(pattern.match(name) for pattern in patterns)


class TopicFilter:
    """Kafka: drops records of topics not allowed (when allow is set) or denied."""

    def __init__(self, config):
        self.allowed = name_matcher(config.allow) if config.allow else None
        self.denied = name_matcher(config.deny)

    def accepts(self, value: bytes, view) -> bool:
        topic = view.topic or ""
        return (self.allowed is None or self.allowed(topic)) and not self.denied(topic)


class HeaderFilter:
    """Kafka: drops records carrying a denied header, or (when allow is set) a header not allowed."""

    def __init__(self, config):
        self.allowed = name_matcher(config.allow) if config.allow else None
        self.denied = name_matcher(config.deny)

    def accepts(self, value: bytes, view) -> bool:
        for name, _ in view.headers:
            if self.denied(name) or (self.allowed is not None and not self.allowed(name)):
                return False
        return True


BUILTIN_FILTERS = {"max_size": MaxSizeFilter, "keyword": KeywordFilter, "regex": RegexFilter,
                   "json_schema": JsonSchemaFilter, "topic": TopicFilter, "header": HeaderFilter}
