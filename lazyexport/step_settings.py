"""The steps an export's settings ask for beyond ilastik's three (binning, smoothing,
segmentation, ...): which settings name them, in which order they apply, and how each becomes a
:class:`~lazyexport.steps.Step`.

Each such step is one :class:`StepSetting` in :data:`STEP_SETTINGS`, defined in its own module:
the :class:`~lazyexport.settings.ExportSettings` fields it reads (the first names it: the step
applies where that field is not None; the command line's ``--NAME`` option gives it, its
text read by :attr:`StepSetting.parse` into those fields), a check run when the settings are
made (normalizing and refusing bad values with one :class:`~lazyexport.errors.SettingsError`
line), and a builder that
makes the step from the settings and the pipeline so far (its axes, shape and dtype after the
cutout and the steps before it) and the source (for physical pixel sizes).

Invariants: the steps apply after the cutout and before renormalize, conversion and transpose,
in ``settings.step_order`` (the order the command line gave them), else in
:data:`DEFAULT_ORDER`; a step named in ``step_order`` must be given, and each at most once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import SettingsError

ExportSettings = Any  # (lazyexport.settings imports this module: its checks run them)

if TYPE_CHECKING:
    import xarray as xr

    from .steps import Pipeline, Step


@dataclasses.dataclass(frozen=True)
class StepSetting:
    """One step the settings can ask for (see the module's docstring)."""

    fields: tuple[str, ...]
    check: Callable[[ExportSettings], None]
    build: Callable[[ExportSettings, Pipeline, xr.DataArray], Step]
    parse: Callable[[str], dict[str, Any]]  # the option's text -> values of ``fields``
    metavar: str
    help: str

    @property
    def name(self) -> str:
        return self.fields[0]


STEP_SETTINGS: dict[str, StepSetting] = {}
DEFAULT_ORDER: tuple[str, ...] = ("bin", "smooth", "threshold", "segment")


def given_steps(settings: ExportSettings, default: bool = False) -> list[str]:
    """The names of the steps ``settings`` ask for, in the order they apply (``default``: in
    their default order)."""
    asked = [n for n, s in STEP_SETTINGS.items() if getattr(settings, s.name, None) is not None]
    order = [] if default else list(settings.step_order or ())
    rest = [n for n in DEFAULT_ORDER if n not in order] + [n for n in asked if n not in order]
    return [n for n in dict.fromkeys(order + rest) if n in asked]


def check_steps(settings: ExportSettings) -> tuple[str, ...] | None:
    """Check the step settings (the order, then each step's own check); return the order to
    keep: None where it is the default one."""
    order = tuple(settings.step_order or ())
    for name in order:
        if name not in STEP_SETTINGS:
            known = ", ".join(STEP_SETTINGS) or "none"
            raise SettingsError(f"step_order names {name!r}, not a step (steps: {known})")
        if order.count(name) > 1:
            raise SettingsError(f"step_order names {name!r} twice: each step applies once")
        if getattr(settings, STEP_SETTINGS[name].name) is None:
            raise SettingsError(f"step_order names {name!r}, but the settings do not give {name}")
    for step in STEP_SETTINGS.values():
        step.check(settings)
    if given_steps(settings) == given_steps(settings, default=True):
        return None
    return order


def option_fields(options: dict[str, str | None]) -> dict[str, Any]:
    """The settings fields of the command line's step options (``{name: text or None}``)."""
    fields: dict[str, Any] = {}
    for name, text in options.items():
        if text is not None:
            fields.update(STEP_SETTINGS[name].parse(text))
    return fields


def settings_steps(settings: ExportSettings, found: Pipeline, src: xr.DataArray) -> list[Any]:
    """Add the steps ``settings`` ask for to ``found`` (the pipeline after the cutout), in
    their order; return them."""
    added = []
    for name in given_steps(settings):
        step = STEP_SETTINGS[name].build(settings, found, src)
        found.add(step)
        added.append(step)
    return added


# each step's module (it cannot import this one: no import cycles) gives its StepSetting's fields
from .step_bin import BIN  # noqa: E402

STEP_SETTINGS["bin"] = StepSetting(**BIN)

from .step_smooth import SMOOTH  # noqa: E402

STEP_SETTINGS["smooth"] = StepSetting(**SMOOTH)

from .step_segment import SEGMENT, THRESHOLD  # noqa: E402

STEP_SETTINGS["segment"] = StepSetting(**SEGMENT)
STEP_SETTINGS["threshold"] = StepSetting(**THRESHOLD)
