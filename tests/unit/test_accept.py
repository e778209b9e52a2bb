"""query.accept: the one Accept parser (q-values, multipart type, transfer-syntax) and negotiation."""

from __future__ import annotations

from query import accept

RLE = "1.2.840.10008.1.2.5"
JLS = "1.2.840.10008.1.2.4.80"
ELE = "1.2.840.10008.1.2.1"


def test_parse_orders_by_q_then_position_and_drops_q0() -> None:
    ranges = accept.parse(
        'image/png;q=0.5, multipart/related; type="application/dicom"; q=0.9, image/jpeg;q=0, */*;q=0.1'
    )
    assert [r.media_type for r in ranges] == ["multipart/related", "image/png", "*/*"]
    assert ranges[0].part_type == "application/dicom"
    assert accept.parse(None)[0].media_type == "*/*"


def test_parameters_inside_quotes_are_not_split() -> None:
    (only,) = accept.parse('multipart/related; type="application/octet-stream"; transfer-syntax="*"')
    assert only.part_type == "application/octet-stream" and only.transfer_syntax == "*"


def test_frames_as_stored_decoded_or_not_acceptable() -> None:
    octet_any = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    assert accept.negotiate_frames(octet_any, RLE, True) == accept.FrameAnswer(
        accept.OCTET_STREAM, RLE, False
    )
    # the default of application/octet-stream is Explicit VR Little Endian: decode when compressed
    answer = accept.negotiate_frames('multipart/related; type="application/octet-stream"', RLE, True)
    assert answer == accept.FrameAnswer(accept.OCTET_STREAM, ELE, True)
    assert accept.negotiate_frames('multipart/related; type="application/octet-stream"', RLE, False) is None
    assert accept.negotiate_frames('multipart/related; type="image/jls"', JLS, False) == accept.FrameAnswer(
        "image/jls", JLS, False
    )
    assert accept.negotiate_frames('multipart/related; type="image/jpeg"', JLS, True) is None
    assert accept.negotiate_frames("*/*", ELE, False) == accept.FrameAnswer(accept.OCTET_STREAM, ELE, False)
    # cornerstone's spelling of RLE's media type
    assert accept.negotiate_frames('multipart/related; type="image/x-dicom-rle"', RLE, False) is not None


def test_instances_default_to_explicit_little_endian_and_star_means_as_stored() -> None:
    dicom = 'multipart/related; type="application/dicom"'
    assert accept.negotiate_instances(dicom, False) == accept.InstanceAnswer(False, ELE)
    assert accept.negotiate_instances(dicom + "; transfer-syntax=*", False) == accept.InstanceAnswer(
        False, "*"
    )
    assert accept.negotiate_instances("application/dicom", True) == accept.InstanceAnswer(True, ELE)
    assert accept.negotiate_instances("application/dicom", False) is None
    assert accept.negotiate_instances("image/jpeg", True) is None
    assert accept.negotiate_instances(None, True) == accept.InstanceAnswer(False, "*")
