"""DICOM in (pydicom + pylibjpeg) and DICOM SEG out (highdicom), over pydicom's own samples."""

from __future__ import annotations

import copy
import traceback
import warnings
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from app.codecs import images
from app.codecs.dicom import decode_dicom, modality_frames, read_dataset
from app.codecs.dicom_pixels import Window, to_uint8, window_from_card
from app.codecs.dicom_seg import check_source, encode_seg
from app.codecs.errors import (
    CodecError,
    CorruptImageError,
    DicomNoPixelDataError,
    DicomSegError,
    DicomTransferSyntaxError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedFormatError,
)
from app.codecs.magic import is_dicom
from app.inference.predictor import check_frame
from app.privacy import PERSON_NAME_WARNING, quiet_value_warnings

BIG = images.Limits(10**9)
# Uncompressed reference -> the same pixels in every other transfer syntax (all lossless).
MR_VARIANTS = [
    "MR_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "MR_small_RLE.dcm",  # RLE lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
]
RGB_VARIANTS = [
    "SC_rgb_rle.dcm",  # RLE lossless, RGB (reference)
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless (process 14, SV1), RGB
]
# Every file that must decode, with its frame count and channels (1 = gray).
DECODES = {
    "CT_small.dcm": (1, 1),
    **dict.fromkeys(MR_VARIANTS, (1, 1)),
    "JPGExtended.dcm": (1, 1),  # JPEG extended (process 2 & 4), 12 bit
    "JPEG2000.dcm": (1, 1),  # JPEG 2000 (lossy syntax)
    "JPEGLSNearLossless_16.dcm": (1, 1),  # JPEG-LS near-lossless
    "image_dfl.dcm": (1, 1),  # deflated explicit VR little endian
    "SC_rgb_rle.dcm": (1, 3),
    "SC_rgb_jpeg_gdcm.dcm": (1, 3),
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": (1, 3),  # JPEG baseline, YBR_FULL
    "SC_rgb_dcmtk_+eb+cy+np.dcm": (1, 3),  # JPEG baseline, YBR_FULL_422
    "SC_ybr_full_422_uncompressed.dcm": (1, 3),
    "GDCMJ2K_TextGBR.dcm": (1, 3),  # JPEG 2000 lossless, YBR_RCT
    "SC_rgb_rle_16bit.dcm": (1, 3),
    "examples_palette.dcm": (1, 3),  # PALETTE COLOR -> RGB
    "SC_rgb_rle_2frame.dcm": (2, 3),  # multi-frame RGB
    "rtdose.dcm": (15, 1),  # multi-frame, 32 bit, dose grid scaling as modality LUT
    "examples_ybr_color.dcm": (30, 3),  # multi-frame JPEG baseline YBR_FULL_422
}


def sample(name: str) -> Path:
    # download=False: the tests use only the files bundled with pydicom (no network).
    path = get_testdata_file(name, download=False)
    if not isinstance(path, str):
        pytest.fail(f"{name} is not among pydicom's bundled test files")
    return Path(path)


def raw(name: str) -> bytes:
    return sample(name).read_bytes()


def source_of(image: images.DecodedImage) -> Dataset:
    if not isinstance(image.source, Dataset):
        pytest.fail(f"a decoded DICOM carries its dataset, got {type(image.source)}")
    return image.source


def to_bytes(ds: Dataset) -> bytes:
    out = BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("name", list(DECODES))
def test_decodes_to_frames_the_predictor_accepts(name: str) -> None:
    image = decode_dicom(raw(name), BIG)
    frames, channels = DECODES[name]
    assert image.format == "dicom"
    assert len(image.frames) == frames
    for frame in image.frames:
        assert frame.dtype == np.uint8
        assert frame.shape[:2] == (image.height, image.width)
        assert check_frame(frame).shape[2] == channels
    assert isinstance(image.source, Dataset)
    assert "PixelData" not in image.source  # the encoded pixels are not kept


@pytest.mark.parametrize("name", MR_VARIANTS)
def test_modality_values_equal_pydicom_in_every_transfer_syntax(name: str) -> None:
    reference = pydicom.dcmread(sample("MR_small.dcm"))
    expected = apply_modality_lut(reference.pixel_array, reference)
    got = modality_frames(read_dataset(raw(name)))
    assert len(got) == 1
    np.testing.assert_array_equal(got[0], expected)
    # ... and the uint8 frame is the policy applied to exactly those values.
    np.testing.assert_array_equal(decode_dicom(raw(name), BIG).frames[0], to_uint8(expected, None))


def test_ct_modality_lut_gives_hounsfield_units_and_the_card_window_applies() -> None:
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(modality_frames(read_dataset(raw("CT_small.dcm")))[0], hu)
    window = Window(center=40, width=400)  # soft tissue: -160 HU -> 0, 240 HU -> 255
    frame = decode_dicom(raw("CT_small.dcm"), BIG, window).frames[0]
    expected = np.rint(np.clip((hu - (40 - 0.5 - 399 / 2)) * 255 / 399, 0, 255))
    np.testing.assert_array_equal(frame, expected.astype(np.uint8))
    assert (frame[hu <= -160] == 0).all()
    assert (frame[hu >= 240] == 255).all()


@pytest.mark.parametrize("name", RGB_VARIANTS)
def test_rgb_pixels_equal_pydicom(name: str) -> None:
    expected = pydicom.dcmread(sample("SC_rgb_rle.dcm")).pixel_array
    np.testing.assert_array_equal(decode_dicom(raw(name), BIG).frames[0], expected)


def test_ybr_is_converted_to_rgb() -> None:
    ds = pydicom.dcmread(sample("SC_rgb_dcmtk_+eb+cy+n1.dcm"))
    frame = decode_dicom(raw("SC_rgb_dcmtk_+eb+cy+n1.dcm"), BIG).frames[0]
    np.testing.assert_array_equal(frame, ds.pixel_array)  # pydicom's as_rgb=True output
    # The lossy JPEG of the RGB reference stays near it only when converted to RGB.
    reference = pydicom.dcmread(sample("SC_rgb_rle.dcm")).pixel_array.astype(int)
    assert np.abs(frame.astype(int) - reference).mean() < 5


def test_multiframe_every_frame_with_its_own_range() -> None:
    ds = pydicom.dcmread(sample("rtdose.dcm"))
    frames = decode_dicom(raw("rtdose.dcm"), BIG).frames
    dose = apply_modality_lut(ds.pixel_array, ds)
    assert len(frames) == dose.shape[0] == 15
    for got, values in zip(frames, dose, strict=True):
        np.testing.assert_array_equal(got, to_uint8(values, None))


def test_monochrome1_is_inverted() -> None:
    ds = pydicom.dcmread(sample("MR_small.dcm"))
    plain = decode_dicom(to_bytes(ds), BIG).frames[0]
    ds.PhotometricInterpretation = "MONOCHROME1"
    np.testing.assert_array_equal(decode_dicom(to_bytes(ds), BIG).frames[0], 255 - plain)


def test_robust_range_and_window_mapping() -> None:
    values = np.arange(1000, dtype=np.float64).reshape(25, 40)
    values[0, 0] = -1e6  # an outlier the percentiles ignore
    frame = to_uint8(values, None)
    assert frame.min() == 0
    assert frame.max() == 255
    assert 120 <= frame[12, 20] <= 135  # the middle of the range stays in the middle
    assert (to_uint8(np.full((4, 4), 7.0), None) == 0).all()  # constant frame
    assert to_uint8(np.array([[39.0, 40.0]]), Window(40, 1)).tolist() == [[0, 255]]


def test_window_from_card() -> None:
    assert window_from_card({"window": {"center": 40, "width": 400}}) == Window(40.0, 400.0)
    assert window_from_card({}) is None
    assert window_from_card(None) is None
    for bad in ({"center": 40}, {"center": "x", "width": 1}, {"center": 0, "width": 0.5}):
        with pytest.raises(ValueError, match="window"):
            window_from_card({"window": bad})


def test_recognition() -> None:
    assert is_dicom(raw("CT_small.dcm")[:132])
    assert is_dicom(raw("ExplVR_LitEndNoMeta.dcm")[:132])  # no preamble, explicit VR LE
    assert is_dicom(raw("ExplVR_BigEndNoMeta.dcm")[:132])  # no preamble, big endian
    assert is_dicom(raw("rtstruct.dcm")[:132])  # no preamble, implicit VR
    rng = np.random.default_rng(0)
    heads = [rng.integers(0, 256, 132, dtype=np.uint8).tobytes() for _ in range(20000)]
    assert not any(is_dicom(h) for h in heads)
    for other in (
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0",
        b"II*\x00",
        b"%PDF-1.7",
        b"PK\x03\x04",
    ):
        assert not is_dicom(other + bytes(124))


def test_a_tiff_like_preamble_is_still_dicom() -> None:
    data = bytearray(raw("CT_small.dcm"))
    data[:8] = b"II*\x00\x08\x00\x00\x00"  # a dual-personality DICOM/TIFF preamble
    assert images.decode(bytes(data), BIG).format == "dicom"


def test_no_preamble_dataset_decodes_with_an_inferred_transfer_syntax() -> None:
    ds = pydicom.dcmread(sample("MR_small.dcm"))
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)  # the dataset alone: no preamble, no file meta
    data = body.getvalue()
    assert data[128:132] != b"DICM"
    assert is_dicom(data[:132])
    frame = decode_dicom(data, BIG).frames[0]
    np.testing.assert_array_equal(frame, decode_dicom(raw("MR_small.dcm"), BIG).frames[0])


@pytest.mark.parametrize("name", ["rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm"])
def test_no_pixel_data_is_415_naming_the_sop_class(name: str) -> None:
    with pytest.raises(DicomNoPixelDataError, match="no image") as caught:
        decode_dicom(raw(name), BIG)
    assert isinstance(caught.value, UnsupportedFormatError)  # -> 415
    assert "Storage" in str(caught.value)  # e.g. "RT Plan Storage"


def test_undecodable_transfer_syntax_is_415() -> None:
    ds = pydicom.dcmread(sample("JPEG2000.dcm"))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder
    with pytest.raises(DicomTransferSyntaxError, match="MPEG2"):
        decode_dicom(to_bytes(ds), BIG)
    ds.file_meta.TransferSyntaxUID = UID("1.2.3.4.5.6.7")  # private: not echoed
    with pytest.raises(DicomTransferSyntaxError, match="a private transfer syntax"):
        decode_dicom(to_bytes(ds), BIG)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.99])
@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_gdcm.dcm"]
)
def test_truncated_is_400(name: str, keep: float) -> None:
    data = raw(name)
    ds = pydicom.dcmread(BytesIO(data))
    start = max(data.rfind(b"\xe0\x7f\x10\x00"), data.rfind(b"\x7f\xe0\x00\x10"))
    end = start + 12 + len(ds.PixelData)  # the element header, then the (fragments') bytes
    with pytest.raises(CorruptImageError):
        decode_dicom(data[: start + int((end - start) * keep)], BIG)
    with pytest.raises(CorruptImageError):
        decode_dicom(data[: int(start * keep)], BIG)  # ... or in the header


def test_pydicom_truncated_sample_is_400() -> None:
    with pytest.raises(CorruptImageError, match="corrupt or truncated"):
        decode_dicom(raw("MR_truncated.dcm"), BIG)


def test_garbage_after_the_signature_is_a_codec_error() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        data = bytes(128) + b"DICM" + rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
        with pytest.raises(CodecError):
            decode_dicom(data, BIG)


def test_declared_huge_image_is_refused_before_decoding() -> None:
    ds = pydicom.dcmread(sample("MR_small_RLE.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 100  # pixel data stays 64 x 64
    with pytest.raises(ImageTooLargeError, match="60000 x 60000"):
        decode_dicom(to_bytes(ds), images.Limits(64 * 64 * 100))
    # The limit is inclusive: exactly Rows x Columns x frames passes.
    assert len(decode_dicom(raw("rtdose.dcm"), images.Limits(10 * 10 * 15)).frames) == 15
    with pytest.raises(ImageTooLargeError):
        decode_dicom(raw("rtdose.dcm"), images.Limits(10 * 10 * 15 - 1))


def test_through_the_registry() -> None:
    decoders = images.default_decoders(Window(40, 400))
    decoded = decoders.decode(raw("CT_small.dcm"), BIG)
    assert decoded.format == "dicom"
    assert decoded.source is not None
    np.testing.assert_array_equal(
        decoded.frames[0], decode_dicom(raw("CT_small.dcm"), BIG, Window(40, 400)).frames[0]
    )
    with pytest.raises(NotAnImageError):
        decoders.decode(b"\x00\x01" * 100, BIG)
    # A registry is built, never changed: the plain one still has no window.
    plain = images.decode(raw("CT_small.dcm"), BIG).frames[0]
    np.testing.assert_array_equal(plain, decode_dicom(raw("CT_small.dcm"), BIG).frames[0])


# -- no patient data in messages ---------------------------------------------------------

SENTINELS = ("PHI^SENTINEL", "ID-SENTINEL-123", "19700101", "SENTINEL")


def phi_dataset(name: str = "MR_small_RLE.dcm") -> Dataset:
    ds = pydicom.dcmread(sample(name))
    ds.PatientName = "PHI^SENTINEL"
    ds.PatientID = "ID-SENTINEL-123"
    ds.PatientBirthDate = "19700101"
    return ds


def _messages(exc: BaseException) -> str:
    """What a log line with the traceback would show (chained causes included)."""
    return "".join(traceback.format_exception(exc))


def test_error_messages_carry_no_patient_data() -> None:
    base = phi_dataset()
    cases: list[tuple[bytes, images.Limits]] = []
    data = to_bytes(base)
    start = data.rfind(b"\xe0\x7f\x10\x00")
    cases += [(data[: start // 2], BIG), (data[: start + 100], BIG), (data, images.Limits(10))]
    no_pixels = copy.deepcopy(base)
    del no_pixels.PixelData
    cases.append((to_bytes(no_pixels), BIG))
    private = copy.deepcopy(base)
    private.file_meta.TransferSyntaxUID = UID("1.2.3.4")
    cases.append((to_bytes(private), BIG))
    bad_rows = copy.deepcopy(base)
    bad_rows.Rows = 65000
    cases.append((to_bytes(bad_rows), BIG))
    for payload, limit in cases:
        with pytest.raises(CodecError) as caught:
            decode_dicom(payload, limit)
        text = _messages(caught.value)
        for sentinel in SENTINELS:
            assert sentinel not in text, text
        assert str(base.SOPInstanceUID) not in text
        assert str(base.StudyInstanceUID) not in text


# pytest turns every warning into an error, so the filter the service installs at import
# (quiet_value_warnings) is installed again here; the next test checks it works.
@pytest.mark.filterwarnings(f"ignore:{PERSON_NAME_WARNING}:UserWarning")
def test_seg_errors_carry_no_patient_data() -> None:
    ds = phi_dataset("SC_rgb_rle.dcm")
    ds.StudyTime = "14:04:38"  # not a valid TM: highdicom's own message would quote it
    ds.PatientName = "SENTINEL"  # no "^": highdicom would warn quoting it
    with pytest.raises(DicomSegError) as caught:
        encode_seg(ds, [np.ones((100, 100), np.uint8)], ["bg", "a"], "m", "1")
    text = _messages(caught.value)
    assert not any(sentinel in text for sentinel in SENTINELS)
    assert "14:04" not in text


def test_no_warning_quotes_patient_data_with_the_service_filters() -> None:
    ds = phi_dataset("CT_small.dcm")
    ds.PatientName = "SENTINEL"  # one component: highdicom warns, quoting it
    invalid = copy.deepcopy(ds)
    invalid.PatientBirthDate = "1970-01-01"  # not a DA: pydicom's validation would quote it
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # Python's defaults, as in the service ...
        warnings.simplefilter("always")
        quiet_value_warnings()  # ... plus what app.codecs.dicom installs at import
        decoded = decode_dicom(to_bytes(ds), BIG)
        mask = np.ones((128, 128), np.uint8)
        encode_seg(source_of(decoded), [mask], ["bg", "a"], "m", "1")
        bad = source_of(decode_dicom(to_bytes(invalid), BIG))
        assert str(bad.PatientBirthDate) == "1970-01-01"  # read as it is, silently
        with pytest.raises(DicomSegError):  # highdicom refuses to copy an invalid date
            encode_seg(bad, [mask], ["bg", "a"], "m", "1")
    text = "\n".join(str(w.message) for w in caught)
    assert not any(sentinel in text for sentinel in SENTINELS), text
    assert "1970-01-01" not in text


# -- DICOM SEG out -----------------------------------------------------------------------


def _read_seg(data: bytes) -> hd.seg.Segmentation:
    ds = pydicom.dcmread(BytesIO(data))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    return hd.seg.Segmentation.from_dataset(ds)


def synthetic_mask(height: int, width: int, classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    for index in range(1, classes):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        mask[y : y + 8, x : x + 6] = index
    return mask


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle.dcm"])
def test_seg_round_trip(name: str) -> None:
    decoded = decode_dicom(raw(name), BIG)
    source = decoded.source
    assert isinstance(source, Dataset)
    classes = ["background", "liver", "lesion"]
    mask = synthetic_mask(decoded.height, decoded.width, len(classes))
    seg = _read_seg(encode_seg(source, [mask], classes, "unet-test", "1.2.3"))
    assert seg.SegmentationType == "BINARY"
    assert seg.get_source_image_uids()[0][2] == source.SOPInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.PatientID == source.get("PatientID", "")
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.SOPInstanceUID != source.SOPInstanceUID
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert labels == {1: "liver", 2: "lesion"}
    for item in seg.SegmentSequence:
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("unet-test", "1.2.3")
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=True)
    np.testing.assert_array_equal(pixels[0], mask)
    # Read again with plain highdicom from a file.
    assert hd.seg.segread(BytesIO(encode_seg(source, [mask], classes, "m", "1"))) is not None


def test_seg_omits_empty_frames_and_segments_follow_the_classes() -> None:
    source = source_of(decode_dicom(raw("CT_small.dcm"), BIG))
    mask = np.zeros((128, 128), np.uint8)
    mask[10:20, 10:20] = 1  # class 2 is absent: its segment exists, with no frame
    seg = _read_seg(encode_seg(source, [mask], ["bg", "a", "b"], "m", "1"))
    assert int(seg.NumberOfFrames) == 1
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["a", "b"]


def _enhanced_ct(frames: int) -> Dataset:
    """A multi-frame CT with plane positions, made of CT_small slices 5 mm apart."""
    base = pydicom.dcmread(sample("CT_small.dcm"))
    series = generate_uid()
    slices = []
    for i in range(frames):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), series
        ds.ImagePositionPatient = [-158.1, -179.0, -75.7 + 5 * i]
        ds.InstanceNumber = i + 1
        slices.append(ds)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        slices, generate_uid(), 1, generate_uid(), 1
    )
    enhanced.file_meta = FileMetaDataset()
    enhanced.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return enhanced


def test_seg_of_a_multiframe_with_plane_positions_covers_every_frame() -> None:
    decoded = decode_dicom(to_bytes(_enhanced_ct(3)), BIG)
    source = decoded.source
    assert isinstance(source, Dataset)
    assert len(decoded.frames) == 3
    masks = [synthetic_mask(128, 128, 2, seed) for seed in range(3)]
    masks[1][:] = 0  # an empty frame, omitted from the SEG
    seg = _read_seg(encode_seg(source, masks, ["bg", "a"], "m", "1"))
    assert int(seg.NumberOfFrames) == 2
    pixels = seg.get_pixels_by_source_frame(source.SOPInstanceUID, [1, 2, 3], combine_segments=True)
    np.testing.assert_array_equal(pixels, np.stack(masks))


def test_a_multiframe_seg_validates_in_dciodvfy(tmp_path: Path) -> None:
    from tests.api.test_dicom_series import dciodvfy_errors

    decoded = decode_dicom(to_bytes(_enhanced_ct(3)), BIG)
    masks = [synthetic_mask(128, 128, 2, seed) for seed in range(3)]
    seg = encode_seg(source_of(decoded), masks, ["bg", "a"], "m", "1", "f" * 64)
    assert dciodvfy_errors(seg, tmp_path) == []


def test_seg_of_a_multiframe_without_plane_positions_asks_for_rle() -> None:
    decoded = decode_dicom(raw("examples_ybr_color.dcm"), BIG)
    masks = [np.zeros((decoded.height, decoded.width), np.uint8)] * len(decoded.frames)
    with pytest.raises(DicomSegError, match="format=rle"):
        check_source(source_of(decoded))  # before inference, in the service
    with pytest.raises(DicomSegError, match="format=rle"):
        encode_seg(source_of(decoded), masks, ["bg", "a"], "m", "1")


def test_seg_names_missing_references_by_keyword() -> None:
    decoded = decode_dicom(raw("JPEGLSNearLossless_08.dcm"), BIG)  # no study / series UIDs
    with pytest.raises(DicomSegError, match="lacks StudyInstanceUID, SeriesInstanceUID"):
        check_source(source_of(decoded))


def test_seg_rejects_masks_that_do_not_fit() -> None:
    source = source_of(decode_dicom(raw("CT_small.dcm"), BIG))
    with pytest.raises(ValueError, match="masks"):
        encode_seg(source, [], ["bg", "a"], "m", "1")
    with pytest.raises(ValueError, match="mask 0"):
        encode_seg(source, [np.zeros((5, 5), np.uint8)], ["bg", "a"], "m", "1")
    with pytest.raises(ValueError, match="class index"):
        encode_seg(source, [np.full((128, 128), 2, np.uint8)], ["bg", "a"], "m", "1")
