"""Output file templates: ``{dataset_dir}/{nickname}_export.h5``, placeholders and extensions.

Placeholders: ``{dataset_dir}``, ``{nickname}``, ``{result_type}``, ``{roi}``, ``{<axis>_start}`` /
``{<axis>_stop}`` for each source axis, ``{slice_index}`` (sequence formats only, where it
is required) and ``{region}`` (exports of several regions: filled in before the plan, see
:mod:`lazyexport.regions`). ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence

from . import location
from .errors import TemplateError
from .storage.paths import written_location

FIXED = ("dataset_dir", "nickname", "result_type", "roi", "slice_index")
DEFAULT = "{dataset_dir}/{nickname}_export"
DEFAULT_WITH_RESULT_TYPE = "{dataset_dir}/{nickname}_{result_type}"
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")
_FORMATTER = string.Formatter()


def default_template(result_type: bool, sequence: bool, region: bool = False) -> str:
    """The output template when the settings give none: ``{dataset_dir}/{nickname}_export``
    (``_{result_type}`` with a result type), then ``_{region}`` for one of several regions and
    ``_{slice_index}`` for a sequence format."""
    template = DEFAULT_WITH_RESULT_TYPE if result_type else DEFAULT
    return template + ("_{region}" if region else "") + ("_{slice_index}" if sequence else "")


def known_placeholders(axes: Iterable[str]) -> list[str]:
    return list(FIXED) + [f"{a}_{edge}" for a in axes for edge in ("start", "stop")]


def _parse(template: str) -> list[tuple[str, str | None, str | None]]:
    try:
        return [(literal, field, spec) for literal, field, spec, _ in _FORMATTER.parse(template)]
    except ValueError as exc:
        raise TemplateError(
            f"cannot read output template {template!r}: {exc} (write {{{{ and }}}} for literal "
            "braces)"
        ) from None


def placeholders(template: str) -> list[str]:
    return [field for _, field, _ in _parse(template) if field is not None]


def check(template: str, axes: Sequence[str], is_sequence: bool) -> None:
    """Refuse unknown placeholders, and a missing (sequence) or stray (other formats)
    {slice_index}."""
    known = known_placeholders(axes)
    used = placeholders(template)
    if "region" in used:
        raise TemplateError(
            f"{{region}} in the output template {template!r} names one of several regions: give "
            "them (regions=, --roi more than once, or --regions FILE)"
        )
    for field in used:
        if field not in known:
            shown = field or "{}"
            raise TemplateError(
                f"unknown placeholder {{{shown}}} in output template {template!r}; "
                f"known: {', '.join('{' + k + '}' for k in known)}"
            )
    if is_sequence and "slice_index" not in used:
        raise TemplateError(
            f"a sequence format needs {{slice_index}} in the output template {template!r}"
        )
    if not is_sequence and "slice_index" in used:
        raise TemplateError(
            f"{{slice_index}} is only for sequence formats (tiff-sequence, png-sequence); "
            f"remove it from {template!r}"
        )


def fill_region(template: str, name: str) -> str:
    """``template`` with ``{region}`` replaced by ``name`` (other placeholders and literal braces
    kept as they are)."""
    out = []
    for literal, field, spec in _parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field == "region":
            out.append(name)
        elif field is not None:
            out.append("{" + field + (f":{spec}" if spec else "") + "}")
    return "".join(out)


def literal_text(template: str) -> str:
    """The template with its placeholders removed (what the user typed literally)."""
    return "".join(literal for literal, _, _ in _parse(template))


def named_extension(template: str, extensions: Sequence[str]) -> str | None:
    """The longest of ``extensions`` that a component of the template ends with (its literal
    text), looking from the last component back; None if none does."""
    for part in reversed(template.replace("\\", "/").split("/")):
        text = literal_text(part).lower()
        found = [e for e in extensions if text.endswith(e.lower())]
        if found:
            return max(found, key=len)
    return None


def has_extension(template: str, extensions: Sequence[str]) -> bool:
    """True if a component of the template ends with one of the format's ``extensions``, or the
    last component ends (after its last placeholder) with a literal extension of the user's own."""
    parts = template.replace("\\", "/").split("/")
    wanted = tuple(e.lower() for e in extensions)
    if any(literal_text(part).lower().endswith(wanted) for part in parts):
        return True
    last = _parse(parts[-1])
    tail = last[-1][0] if last and last[-1][1] is None else ""
    return bool(_EXTENSION.search(tail))


class SliceIndex(int):
    """An int that formats zero-padded to ``width`` when the template gives no format spec."""

    width: int = 1

    def __new__(cls, value: int, width: int):
        obj = super().__new__(cls, value)
        obj.width = width
        return obj

    def __format__(self, spec: str) -> str:
        return format(int(self), spec or f"0{self.width}d")


class _AnyIndex:
    """Fills ``{slice_index}`` with "\0" (whatever its format spec): the template of every
    slice file, as :func:`lazyexport.formats.sequence.template_files` matches it."""

    def __format__(self, spec: str) -> str:
        return "\0"


ANY_INDEX = _AnyIndex()


def render(template: str, values: Mapping[str, object]) -> str:
    try:
        return _FORMATTER.vformat(template, (), dict(values))
    except (ValueError, KeyError, IndexError) as exc:
        raise TemplateError(f"cannot fill output template {template!r}: {exc}") from None


def values_for(
    *,
    dataset_dir: str,
    nickname: str,
    result_type: str | None,
    roi: Mapping[str, tuple[int, int]],
    roi_text: str,
) -> dict[str, object]:
    values: dict[str, object] = {
        "dataset_dir": dataset_dir,
        "nickname": nickname,
        "result_type": result_type or "",
        "roi": roi_text,
    }
    for axis, (start, stop) in roi.items():
        values[f"{axis}_start"] = start
        values[f"{axis}_stop"] = stop
    return values


def split_container(path: str, extensions: Sequence[str]) -> tuple[str, str]:
    """Split ``out.h5/group/data`` at the last component ending in one of ``extensions`` (a URL
    too: ``s3://bucket/out.zarr/export``). The path inside comes back in one spelling (``a//b``,
    ``x/../b``; a ``..`` above the container is refused); a ``file://`` URL is a local path."""
    whole = written_location(path)  # refuses a scheme lazyexport does not write to
    parts = whole.parts
    for i in range(len(parts), 0, -1):
        if parts[i - 1].lower().endswith(tuple(extensions)):
            container = whole.parents[len(parts) - i - 1] if i < len(parts) else whole
            inner = "/".join(parts[i:])
            return str(container), location.internal_path(inner, container)
    return str(whole), ""
