"""query.rendering: DICOM bytes -> PNG/JPEG, checked on pydicom's own test files."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut
from query import rendering
from query.rendering import JPEG, PNG, RenderError, Window, choose_media_type, render

from tests.helpers.dicom_factory import encode, pydicom_dataset, pydicom_file


def file_bytes(name: str) -> bytes:
    return pydicom_file(name).read_bytes()


def pixels(picture: rendering.Picture) -> np.ndarray[Any, Any]:
    return np.asarray(Image.open(io.BytesIO(picture.body)))


def image_format(picture: rendering.Picture) -> str:
    return str(Image.open(io.BytesIO(picture.body)).format)


def test_ct_renders_as_png_of_its_size_with_brightness_ordered_like_the_values() -> None:
    # GIVEN pydicom's 128x128 CT (no window in its header)
    ds = pydicom_dataset("CT_small.dcm")
    hu = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)

    # WHEN it is rendered
    picture = render(file_bytes("CT_small.dcm"))

    # THEN it is an 8-bit grayscale PNG of Columns x Rows, spanning the full range
    shown = pixels(picture)
    assert image_format(picture) == "PNG"
    assert (picture.columns, picture.rows) == (ds.Columns, ds.Rows) == (128, 128)
    assert shown.shape == (128, 128) and shown.dtype == np.uint8
    assert shown.flat[np.argmin(hu)] == 0 and shown.flat[np.argmax(hu)] == 255
    # AND a brighter pixel never has a lower value than a darker one (no wrap-around, no flip)
    order = np.argsort(hu, axis=None, kind="stable")
    assert np.all(np.diff(shown.flat[order].astype(int)) >= 0)


def test_window_parameter_clips_below_and_above_and_is_linear_between() -> None:
    # GIVEN the CT and a soft-tissue window (PS3.18 window=center,width,linear)
    ds = pydicom_dataset("CT_small.dcm")
    hu = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    window = Window.parse("40,400,linear")

    # WHEN rendered with it
    shown = pixels(render(file_bytes("CT_small.dcm"), window=window)).astype(int)

    # THEN values below c - w/2 are black, above c + w/2 white, the centre mid-grey
    assert np.all(shown[hu <= 40 - 0.5 - 399 / 2] == 0)
    assert np.all(shown[hu > 40 - 0.5 + 399 / 2] == 255)
    assert (hu <= -160).any() and (hu > 240).any()
    expected = np.rint(np.clip((hu - 39.5) / 399 + 0.5, 0, 1) * 255)
    assert np.array_equal(shown, expected)


def test_header_window_is_used_when_no_window_is_given() -> None:
    # GIVEN pydicom's MR, whose header has WindowCenter/WindowWidth
    ds = pydicom_dataset("MR_small.dcm")
    header = Window(float(ds.WindowCenter), float(ds.WindowWidth))

    # WHEN rendered without and with the same window given explicitly, and with another window
    default = pixels(render(file_bytes("MR_small.dcm")))
    explicit = pixels(render(file_bytes("MR_small.dcm"), window=header))
    other = pixels(render(file_bytes("MR_small.dcm"), window=Window(header.center, header.width / 4)))

    # THEN the header's window is the default one
    assert default.shape == (64, 64)
    assert np.array_equal(default, explicit)
    assert not np.array_equal(default, other)


def test_monochrome1_is_inverted() -> None:
    # GIVEN the CT pixels labelled MONOCHROME1 (high values shown dark)
    ds = pydicom_dataset("CT_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    window = Window(40, 400)

    # WHEN both are rendered with the same window
    mono2 = pixels(render(file_bytes("CT_small.dcm"), window=window)).astype(int)
    mono1 = pixels(render(encode(ds), window=window)).astype(int)

    # THEN the MONOCHROME1 picture is the negative of the MONOCHROME2 one
    assert np.array_equal(mono1, 255 - mono2)


def test_simple_voi_lut_sequence_is_applied() -> None:
    # GIVEN the MR without a window but with a 12-bit VOI LUT of 1024 entries from value 200 that
    # falls from 4095 by 4 per step (an inverting ramp)
    ds = pydicom_dataset("MR_small.dcm")
    del ds.WindowCenter, ds.WindowWidth
    item = Dataset()
    item.LUTDescriptor = [1024, 200, 12]
    item.add_new(0x00283006, "US", [4095 - 4 * i for i in range(1024)])  # LUTData
    ds.VOILUTSequence = [item]
    raw = ds.pixel_array.astype(int)
    assert raw.min() < 200 and raw.max() > 1223  # both clamps are exercised

    # WHEN it is rendered
    shown = pixels(render(encode(ds))).astype(int)

    # THEN every pixel went through the LUT (values outside it take its first or last entry)
    index = np.clip(raw - 200, 0, 1023)
    assert np.array_equal(shown, np.rint((4095 - 4 * index) / 4095 * 255))


def test_rgb_keeps_its_colours() -> None:
    # GIVEN an uncompressed 8-bit RGB secondary capture
    ds = pydicom_dataset("examples_rgb_color.dcm")

    # WHEN rendered as PNG
    picture = render(file_bytes("examples_rgb_color.dcm"))

    # THEN the PNG holds exactly the RGB pixels
    shown = pixels(picture)
    assert shown.shape == (ds.Rows, ds.Columns, 3)
    assert np.array_equal(shown, ds.pixel_array)
    assert len({tuple(p) for p in shown.reshape(-1, 3)}) > 3


@pytest.mark.parametrize(
    "compressed",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
)
def test_lossless_compressed_mr_renders_like_the_uncompressed_one(compressed: str) -> None:
    # GIVEN the same MR, uncompressed and in a lossless compressed transfer syntax
    reference = pixels(render(file_bytes("MR_small.dcm")))

    # WHEN the compressed one is rendered (RLE natively, JPEG 2000 / JPEG-LS by the installed plugins)
    shown = pixels(render(file_bytes(compressed)))

    # THEN the picture is the same
    assert np.array_equal(shown, reference)


@pytest.mark.parametrize(
    ("name", "size", "mode"),
    [
        ("JPGExtended.dcm", (256, 1024), "L"),  # 12-bit JPEG extended: pylibjpeg-libjpeg
        ("JPEG2000.dcm", (256, 1024), "L"),
        ("SC_rgb_jpeg_gdcm.dcm", (100, 100), "RGB"),  # JPEG lossless process 14
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", (100, 100), "RGB"),  # YBR_FULL_422 baseline
        ("SC_rgb_rle_2frame.dcm", (100, 100), "RGB"),  # multi-frame: first frame
        ("examples_palette.dcm", (800, 350), "RGB"),  # PALETTE COLOR
    ],
)
def test_compressed_colour_and_multiframe_files_render(name: str, size: tuple[int, int], mode: str) -> None:
    # WHEN each file is rendered
    picture = render(file_bytes(name))

    # THEN it has the instance's size (columns x rows) and colour mode
    image = Image.open(io.BytesIO(picture.body))
    assert (image.size, image.mode) == (size, mode)
    assert (picture.columns, picture.rows) == size


def test_first_frame_of_a_multiframe_instance() -> None:
    ds = pydicom_dataset("SC_rgb_rle_2frame.dcm")
    shown = pixels(render(file_bytes("SC_rgb_rle_2frame.dcm")))
    assert np.array_equal(shown, ds.pixel_array[0])
    assert not np.array_equal(shown, ds.pixel_array[1])


def test_jpeg_output_is_close_to_the_png() -> None:
    png = pixels(render(file_bytes("CT_small.dcm"))).astype(int)
    jpeg_picture = render(file_bytes("CT_small.dcm"), JPEG, quality=95)
    assert image_format(jpeg_picture) == "JPEG"
    jpeg = pixels(jpeg_picture).astype(int)
    assert jpeg.shape == png.shape
    assert np.abs(jpeg - png).mean() < 3


def test_max_size_shrinks_keeping_the_aspect_ratio() -> None:
    picture = render(file_bytes("JPEG2000.dcm"), max_size=128)
    assert (picture.columns, picture.rows) == (32, 128)
    assert Image.open(io.BytesIO(picture.body)).size == (32, 128)
    # never enlarged
    assert render(file_bytes("MR_small.dcm"), max_size=128).columns == 64


def test_viewport_scales_to_fit_both_ways() -> None:
    assert (render(file_bytes("JPEG2000.dcm"), viewport=(100, 100)).columns, 100) == (25, 100)
    enlarged = render(file_bytes("MR_small.dcm"), viewport=(256, 512))
    assert (enlarged.columns, enlarged.rows) == (256, 256)
    assert Image.open(io.BytesIO(enlarged.body)).size == (256, 256)
    assert rendering.parse_viewport("256, 128") == (256, 128)
    for bad in ("256", "0,10", "a,b", "1,2,3,4,5,6", "99999,1"):
        with pytest.raises(RenderError):
            rendering.parse_viewport(bad)


def test_not_an_image_is_a_render_error() -> None:
    ds = pydicom_dataset("CT_small.dcm")
    del ds.PixelData
    with pytest.raises(RenderError, match="no pixel data"):
        render(encode(ds))
    with pytest.raises(RenderError):
        render(b"not DICOM at all")


def test_undecodable_pixel_data_is_a_render_error() -> None:
    # pydicom's JPEG-lossy.dcm is a known-bad stream no plugin decodes
    with pytest.raises(RenderError, match=r"could not be decoded|no installed decoder"):
        render(file_bytes("JPEG-lossy.dcm"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40,400", Window(40, 400, "LINEAR")),
        ("-600, 1500, linear", Window(-600, 1500, "LINEAR")),
        ("0.5,1,LINEAR-EXACT", Window(0.5, 1, "LINEAR_EXACT")),
        ("100,50,sigmoid", Window(100, 50, "SIGMOID")),
    ],
)
def test_window_parameter_parsing(text: str, expected: Window) -> None:
    assert Window.parse(text) == expected


@pytest.mark.parametrize("text", ["", "40", "40,x", "40,400,cubic", "40,0", "40,400,linear,1", "nan,4"])
def test_bad_window_parameters_are_rejected(text: str) -> None:
    with pytest.raises(RenderError):
        Window.parse(text)


def test_sigmoid_and_linear_exact_formulas() -> None:
    values = np.array([-100.0, 0.0, 100.0])
    assert np.allclose(Window(0, 200, "LINEAR_EXACT").apply(values), [0.0, 0.5, 1.0])
    sigmoid = Window(0, 200, "SIGMOID").apply(values)
    assert sigmoid[1] == pytest.approx(0.5) and sigmoid[0] < 0.5 < sigmoid[2]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, PNG),
        ("", PNG),
        ("*/*", PNG),
        ("image/jpeg", JPEG),
        ("image/png", PNG),
        ("image/webp,image/jpeg;q=0.8,image/png;q=0.9", PNG),
        ("image/avif,image/webp,image/*;q=0.8", PNG),
        ("image/png;q=0,image/jpeg", JPEG),
        ("text/html", None),
        ("application/dicom", None),
    ],
)
def test_media_type_negotiation(accept: str | None, expected: str | None) -> None:
    assert choose_media_type(accept) == expected
