"""The filters of a link's config: one model per filter type, and the checks a link's list must pass."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from ddc.config.values import Section, Size, name_or_pattern, regular_expression

FilterName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]


class FilterBase(Section):
    name: FilterName | None = None
    on_error: Literal["drop", "keep"] = "drop"
    #: Whether the filter reads a record's topic and headers, which only Kafka handlers' records have.
    needs_topics: ClassVar[bool] = False


class MaxSizeFilterConfig(FilterBase):
    type: Literal["max_size"]
    max_bytes: Annotated[Size, Field(ge=0)]


class KeywordFilterConfig(FilterBase):
    type: Literal["keyword"]
    keywords: list[Annotated[str, Field(min_length=1)]] = []
    hex_patterns: list[Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{2})+$")]] = []
    case_insensitive: bool = False

    @model_validator(mode="after")
    def has_patterns(self):
        if not self.keywords and not self.hex_patterns:
            raise ValueError("a keyword filter needs at least one entry in keywords or hex_patterns")
        return self


class RegexFilterConfig(FilterBase):
    type: Literal["regex"]
    pattern: Annotated[str, regular_expression("pattern")]
    action: Literal["deny", "allow"] = "deny"
    case_insensitive: bool = False


class JsonSchemaFilterConfig(FilterBase):
    type: Literal["json_schema"]
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    schema_file: str | None = None

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True, defer_build=True)

    @model_validator(mode="after")
    def one_schema_that_compiles(self):
        if (self.json_schema is None) == (self.schema_file is None):
            raise ValueError("a json_schema filter needs exactly one of schema (an inline table) or schema_file")
        from ddc.filters.builtin import JsonSchemaFilter
        try:
            JsonSchemaFilter(self)
        except OSError as error:
            raise ValueError(f"cannot read schema_file {self.schema_file!r}: {error.strerror}") from None
        except Exception as error:
            raise ValueError(f"the JSON schema is not usable: {error}") from None
        return self


NameOrPattern = Annotated[str, Field(min_length=1), name_or_pattern("name pattern")]


class NameListFilterBase(FilterBase):
    allow: list[NameOrPattern] = []
    deny: list[NameOrPattern] = []
    needs_topics = True

    @model_validator(mode="after")
    def has_names(self):
        if not self.allow and not self.deny:
            raise ValueError(f"a {self.type} filter needs allow or deny (or both)")
        return self


class TopicFilterConfig(NameListFilterBase):
    type: Literal["topic"]


class HeaderFilterConfig(NameListFilterBase):
    type: Literal["header"]


class PluginFilterConfig(FilterBase):
    type: Literal["plugin"]
    entry_point: Annotated[str, Field(min_length=1)]
    options: dict[str, Any] = {}


FilterConfig = Annotated[MaxSizeFilterConfig | KeywordFilterConfig | RegexFilterConfig | JsonSchemaFilterConfig
                         | TopicFilterConfig | HeaderFilterConfig | PluginFilterConfig, Field(discriminator="type")]


def check_filters(filters: list, handler) -> None:
    """Raises ValueError for a link's filter list that cannot work: a name used twice, or a filter that reads
    what the link's records (those of handler, its source or sink config) do not have."""
    names = [config.name for config in filters if config.name]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"filter name {name!r} is used twice; each filter of a link needs its own name")
    for config in filters:
        if config.needs_topics and not handler.records_have_topics:
            raise ValueError(f"a {config.type} filter needs Kafka records; this link's records come from a "
                             f"{handler.type} handler")
