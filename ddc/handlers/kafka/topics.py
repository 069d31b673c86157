"""Which destination topic a source topic's records go to.

An exact rename wins, then the first regular-expression rewrite that matches,
then the prefix (Confluent's connector uses "dest_"); with none configured a
topic keeps its name. Results are cached: the mapping runs once per record.
"""

import re

TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


class TopicMapping:
    def __init__(self, prefix: str = "", rename: dict | None = None, rewrite: list | None = None):
        self.prefix = prefix
        self.rename = dict(rename or {})
        self.rewrite = [(re.compile(rule.pattern), rule.replacement) for rule in rewrite or []]
        self._cache: dict[str, str] = {}

    def destination(self, source_topic: str) -> str:
        """The destination topic; ValueError (naming both topics) if the result is not a valid topic name."""
        cached = self._cache.get(source_topic)
        if cached is not None:
            return cached
        name = self._map(source_topic)
        if not TOPIC_NAME.fullmatch(name):
            raise ValueError(f"topic {source_topic!r} maps to {name!r}, which is not a valid Kafka topic name "
                             "(letters, digits, '.', '_', '-', at most 249); fix topic_rename or topic_rewrite")
        self._cache[source_topic] = name
        return name

    def _map(self, source_topic: str) -> str:
        if source_topic in self.rename:
            return self.rename[source_topic]
        for pattern, replacement in self.rewrite:
            if pattern.fullmatch(source_topic):
                return pattern.sub(replacement, source_topic, count=1)
        return self.prefix + source_topic
