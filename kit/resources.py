"""Where the kit's shipped files live, in a wheel and in a source checkout alike."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def contract_template_dir() -> Path:
    """`contract_template/`: inside the package in a wheel, at the repo top in a checkout."""
    packaged = _PACKAGE / "contract_template"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "contract_template"


def templates_dir() -> Path:
    """`kit/templates/`: the project scaffold and the mech tool templates."""
    return _PACKAGE / "templates"
