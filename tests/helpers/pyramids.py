"""What an OME-Zarr export's pyramid did, recorded."""

from __future__ import annotations

from lazyexport.formats.ome_zarr import OmeZarrTarget


def built_from(monkeypatch) -> list[str]:
    """The levels :meth:`OmeZarrTarget.build_level` reads back after the blocks (their paths),
    recorded as the export runs."""
    sources: list[str] = []
    real = OmeZarrTarget.build_level

    def recording(self, src, dst, factors):
        sources.append(src.path)
        return real(self, src, dst, factors)

    monkeypatch.setattr(OmeZarrTarget, "build_level", recording)
    return sources
