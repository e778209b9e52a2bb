"""query.frames.parse_layout: where each frame is, for every way encapsulated pixel data is laid out."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from query.frames import _cut, layout_of_bytes
from query.pixel_layout import FrameError, NoSuchFrame

from tests.helpers.dicom_factory import encode, pydicom_file


def frames_of(name: str) -> tuple[object, list[bytes]]:
    ds = dcmread(pydicom_file(name))
    return ds, list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


@pytest.mark.parametrize(
    "layout", ["basic_offset_table", "no_table_two_fragments_per_frame", "extended_table"]
)
def test_frames_found_whatever_the_offset_table(layout: str) -> None:
    # GIVEN a 30-frame JPEG instance re-encapsulated each way PS3.5 A.4 allows
    ds, frames = frames_of("examples_ybr_color.dcm")
    if layout == "basic_offset_table":
        ds.PixelData = encapsulate(frames, has_bot=True)
    elif layout == "no_table_two_fragments_per_frame":
        ds.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=False)
    else:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    data = encode(ds)  # type: ignore[arg-type]
    # WHEN the layout is parsed
    found = layout_of_bytes(data)
    # THEN every frame is exactly the codestream, and out-of-range numbers are refused
    assert found.number_of_frames == 30 and found.encapsulated
    assert [_cut(found, data, n, 0) for n in range(1, 31)] == frames
    with pytest.raises(NoSuchFrame):
        found.frame_span(31)


def test_no_pixel_data_is_a_frame_error() -> None:
    ds = dcmread(pydicom_file("CT_small.dcm"))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(FrameError):
        layout_of_bytes(buffer.getvalue())
