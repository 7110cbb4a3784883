"""The repository's params.yaml as tests start from it: its values, with the few a test changes.

The dataclasses of captioning/params.py have no defaults, so a test that needs params takes the rest from here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from captioning.params import Section, parse_section

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


def repo_document(changes: dict | None = None) -> dict:
    """The whole params.yaml as a mapping, each section updated with `changes[section]`."""
    document = yaml.safe_load(PARAMS_YAML.read_text(encoding="utf-8"))
    for section, values in (changes or {}).items():
        document[section] = {**document.get(section, {}), **values}
    return document


def repo_section(section: str, **changes) -> dict:
    """The raw mapping of one section, with `changes`, as parse_section takes it."""
    return repo_document({section: changes})[section]


def repo_params(section: str, **changes) -> Section:
    """One section's validated dataclass: the repository's values, with `changes`."""
    return parse_section(section, repo_section(section, **changes))
