"""A base for closed choices: ``str`` enums whose ``from_str`` names what is allowed.

A leaf module (it imports only the exception family), so every package may use it.
"""

from __future__ import annotations

import enum

from sn40l.errors import ConfigError


class Choice(str, enum.Enum):
    """A closed choice whose ``str`` is its lowercase value."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_str(cls, name):
        """The member named ``name`` (case-insensitive); an unknown name lists the allowed."""
        if isinstance(name, cls):
            return name
        try:
            return cls(str(name).lower())
        except ValueError:
            raise ConfigError(f"unknown {cls.__name__} {name!r}; allowed: "
                              f"{', '.join(c.value for c in cls)}") from None
