"""What every spec dataclass shares: how pydantic converts and checks it."""

from pydantic import ConfigDict


class Section:
    """The base of every spec dataclass. pydantic checks the types of a spec read from JSON or built in an
    experiment file: an unknown field is an error, nothing is coerced ("1e-3" is not a float, 1 is not a
    bool; an int is a float), and a dataclass built in Python is checked field by field too."""

    __pydantic_config__ = ConfigDict(extra="forbid", strict=True, revalidate_instances="always")


class SpecError(ValueError):
    """An invalid spec; the message starts with the field (or file) at fault."""
