"""The ``plugins`` section: which installed framework plugins ``install()`` leaves off."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from toolkit.settings._section import Section

PLUGIN_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
"""What a plugin's name (its entry point's name) is made of."""


def check_plugin_name(value: str) -> str:
    if not value or not set(value) <= PLUGIN_NAME_CHARACTERS:
        raise ValueError(
            f"{value!r} is not a plugin name; use lower-case letters, digits and -_., "
            "e.g. 'pydantic-ai'"
        )
    return value


PluginName = Annotated[str, AfterValidator(check_plugin_name)]


class PluginsSettings(Section):
    """Framework plugins: the installed distributions registered in the ``toolkit.plugins``
    entry-point group, each applied by ``install()`` unless switched off here."""

    disabled: list[PluginName] = Field(
        default_factory=list,
        max_length=100,
        description="Installed plugins install() leaves off, by name; a name that no "
        "installed plugin has fails the startup, naming the installed ones.",
        examples=['["pydantic-ai"]'],
    )
