"""Where a plan's output goes: the slices of a sequence, the paths the template renders, and
the refusals of outputs that cannot be written.

An output is refused before anything is written when it would replace or lie inside its source
(compared in one canonical form, :mod:`lazyexport.location`), names a bucket or a directory
rather than an output, is at a read-only (HTTP) URL, or is a directory format at a URL. Each
step returns the (frozen) plan with its decisions added.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from . import location
from . import template as tpl
from .axes import names
from .errors import FormatError, TemplateError
from .formats import Writer, format_for
from .formats.sequence import template_files
from .remote import as_path
from .roi import roi_text
from .settings import check_nickname
from .sources.facts import source_facts
from .storage.capabilities import bucket_root, can_rename, read_only

# A lazyexport.plan.ExportPlan (not imported: lazyexport.plan imports this module).
Plan = Any


def plan_slices(plan: Plan) -> Plan:
    """Sequences run along the outermost non-channel axis; each slice must be 2-D (+ channel)."""
    sizes = plan.result.sizes
    spatial = [a for a in plan.axes if a != "c"]
    if len(spatial) < 3:  # a 2-D result would be cut into 1-D rows
        order = next(a for a in "zt" + "abdefghijklmnopqrsuvw" if a not in plan.axes) + "".join(
            plan.axes
        )
        raise FormatError(
            f"{plan.writer.name} writes one 2-D image per slice, but the result (axes "
            f"{''.join(plan.axes)!r}) has no axis to slice along besides its plane; export it as "
            f"one tiff, or add one with the axis order {order!r}"
        )
    slice_axis, plane = spatial[0], spatial[1:]
    extra = [f"{a!r} (length {sizes[a]})" for a in plane[:-2] if sizes[a] != 1]
    if extra:
        suggestion = "".join(a for a in plan.axes if a == "c" or sizes[a] != 1 or a in plane[-2:])
        raise FormatError(
            f"{plan.writer.name} writes 2-D slices along {slice_axis!r}, but {', '.join(extra)} "
            "would make "
            "each slice more than 2-D; cut it to length 1 with the ROI or choose an axis order "
            f"like {suggestion!r}"
        )
    return dataclasses.replace(
        plan, slice_axis=slice_axis, slice_start=plan.roi.get(slice_axis, (0, 0))[0]
    )


def plan_outputs(plan: Plan) -> Plan:
    """The output paths the template renders (every slice's for sequences), after the refusals
    of a template or output that cannot be written; the writer's notes on the output added."""
    settings, writer, src = plan.settings, plan.writer, plan.source
    template = settings.output
    if template is None:
        template = tpl.default_template(bool(settings.result_type), writer.capabilities.sequence)
    tpl.check(template, names(src), writer.capabilities.sequence)
    _refuse_unnamed(template, writer)
    named = format_for(template)
    if (
        named not in (None, writer.name)
        and tpl.named_extension(template, writer.extensions) is None
    ):
        raise TemplateError(
            f"output {template!r} has the extension of format {named}, but the format is "
            f"{writer.name}: give the format {named} (--format {named}), or another name"
        )
    if not tpl.has_extension(template, writer.extensions):
        template += writer.extensions[0]
    if "nickname" in tpl.placeholders(template):  # it goes into a file name (napari's not)
        check_nickname(plan.nickname)
    values = tpl.values_for(
        dataset_dir=str(src.attrs.get("dataset_dir", os.getcwd())),
        nickname=plan.nickname,
        result_type=settings.result_type,
        roi=plan.roi,
        roi_text=roi_text(plan.roi, [a for a in plan.axes if a in plan.roi]),
    )
    if writer.capabilities.sequence:
        count = plan.result.sizes[plan.slice_axis]
        width = len(str(plan.slice_start + count - 1))
        paths = []
        for i in range(plan.slice_start, plan.slice_start + count):
            paths.append(
                as_path(tpl.render(template, {**values, "slice_index": tpl.SliceIndex(i, width)}))
            )
        if len(set(paths)) != len(paths):
            raise TemplateError(
                f"output template {template!r} gives several slices the same file name"
            )
        any_slice = str(as_path(tpl.render(template, {**values, "slice_index": tpl.ANY_INDEX})))
        plan = dataclasses.replace(
            plan, paths=tuple(paths), output=paths[0], slice_template=any_slice
        )
    else:
        rendered = tpl.render(template, values)
        file, internal = tpl.split_container(rendered, writer.extensions)
        output = as_path(file)
        plan = dataclasses.replace(plan, output=output, internal=internal, paths=(output,))
    _refuse_url_output(plan)
    _refuse_source_as_output(plan)
    return dataclasses.replace(plan, notes=plan.notes + tuple(writer.check(plan.spec)))


def _refuse_unnamed(template: str, writer: Writer) -> None:
    """An output template ending in '/' without an extension names a directory, not an output
    (it would write a file named only by its extension, ``.zarr``); a URL needs a key."""
    root = bucket_root(template)
    if root is not None:
        raise TemplateError(
            f"output {template!r} names a bucket, not an output in it; write to "
            f"{root}/name{writer.extensions[0]}"
        )
    if template.rstrip().endswith("/") and not tpl.has_extension(template, writer.extensions):
        raise TemplateError(
            f"output {template!r} ends with '/': name the output in it, e.g. "
            f"{template.rstrip()}out{writer.extensions[0]}"
        )


def _refuse_url_output(plan: Plan) -> None:
    """Outputs at URLs: below a bucket (not the bucket itself), not HTTP(S), of a format that
    writes objects."""
    writer, root = plan.writer, bucket_root(plan.output)
    if read_only(plan.output):
        raise TemplateError(
            f"{plan.output}: HTTP(S) URLs are read-only; write to s3://, gs://, az:// or a path"
        )
    if root is not None:
        raise TemplateError(
            f"output {plan.output} names a bucket, not an output in it; write to "
            f"{root}/name{writer.extensions[0]}"
        )
    # a directory of files is written under a temporary name and renamed into place
    if (
        not can_rename(plan.output)
        and not writer.capabilities.object_store
        and hasattr(writer, "layout")
    ):
        raise FormatError(
            f"{writer.name} outputs (a directory of files) cannot be written to a URL; export "
            "to zarr or ome-zarr there, or to a local path"
        )


def output_chunks(plan: Plan, writer: Writer) -> tuple[int, ...]:
    """The chunk shape of the output, in output axes (blocks are whole multiples of it): about
    the writer's ``chunk_bytes``; sequences: one slice deep."""
    # one slice per file (staging, if needed, is the cost model's choice)
    if writer.capabilities.sequence:
        return tuple(1 if a == plan.slice_axis else s for a, s in zip(plan.axes, plan.shape))
    return plan.default_chunks(writer.chunk_bytes)


def _refuse_source_as_output(plan: Plan) -> None:
    """The output must neither be the source nor hold it (replacing it would delete the source),
    nor lie inside it: compared as nodes, a file or store plus the path inside it, in one
    canonical form (:mod:`lazyexport.location`: every spelling of a location is the same)."""
    source = plan.source.attrs.get("source")
    if not source or source.startswith("<"):
        return
    files = [as_path(p) for p in source_facts(plan.source).identity_paths or ()]
    # whole files: e.g. a glob's slice, and every file of a sequence's template (all of them are
    # the output, replaced with it: a source slice numbered with other digits is one of them)
    wholes = [] if plan.writer.dataset(plan.spec) else [*plan.paths]
    wholes += [] if not wholes else template_files(plan.spec.slice_template, plan.paths)
    for path in wholes:
        if any(location.same(path, f) for f in files):
            raise TemplateError(
                f"the output {path} is a file of the source {source}; choose another output "
                "template"
            )
    internal = str(plan.source.attrs.get("internal_path", "")).strip("/")
    src = location.node(as_path(source), internal)
    source = f"{source}/{internal}" if internal else source
    for path in plan.paths:
        out = location.node(path, plan.internal)
        shown = location.shown(path, plan.internal)
        if location.is_same_node(out, src):
            raise TemplateError(
                f"the output {shown} is the source itself; choose another output template"
            )
        if location.inside(src, out):
            raise TemplateError(
                f"the output {shown} holds the source {source}, which writing it would replace; "
                "choose another output template"
            )
        if location.inside(out, src):
            raise TemplateError(
                f"the output {shown} lies inside the source {source}; choose another output "
                "template"
            )
