"""DICOM decoding: modality LUT, VOI LUT / windowing, MONOCHROME1, bit depths, bad files.

Expected grey levels are computed by hand from DICOM PS3.3 C.11 in each test's comment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1, generate_uid

from cxrlab.data.dicom import is_dicom, read_dicom_gray
from cxrlab.data.images import load_for_model, read_gray
from cxrlab.errors import ImageReadError

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    preamble: bool = True,
    **elements,
) -> Path:
    """Write a minimal Explicit VR Little Endian DX file; ``elements`` are set as attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128 if preamble else None)
    ds.SOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = "synthetic"
    if pixels is not None:
        bits = bits_stored or (8 if pixels.dtype == np.uint8 else 16)
        ds.set_pixel_data(pixels, photometric, bits, generate_instance_uid=False)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=preamble)
    return path


def test_monochrome2_min_max(tmp_path):
    # No window, no LUT: min-max. 40 * 255 / 200 = 51, 80 * 255 / 200 = 102.
    px = np.array([[0, 40], [80, 200]], dtype=np.uint8)
    out = read_dicom_gray(write_dicom(tmp_path / "a.dcm", px))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 51], [102, 255]])


def test_monochrome1_is_inverted(tmp_path):
    # Same values as above, but MONOCHROME1 means low values are white: 255 - [0, 51, 102, 255].
    px = np.array([[0, 40], [80, 200]], dtype=np.uint8)
    out = read_dicom_gray(write_dicom(tmp_path / "m1.dcm", px, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(out, [[255, 204], [153, 0]])


def test_rescale_then_linear_window(tmp_path):
    # HU = 2 * v - 1024: v = 362, 462, 512, 562, 662 -> -300, -100, 0, 100, 300.
    # LINEAR window C=0, W=401: y = ((x + 0.5) / 400 + 0.5) * 255, clipped to [0, 255]:
    # -300 -> 0; -100 -> 64.07 -> 64; 0 -> 127.82 -> 128; 100 -> 191.56 -> 192; 300 -> 255.
    # Ignoring the rescale would put every stored value above the window: all 255.
    px = np.array([[362, 462, 512, 562, 662]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "ct.dcm", px, bits_stored=12,
        RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=401,
    )  # fmt: skip
    np.testing.assert_array_equal(read_dicom_gray(path), [[0, 64, 128, 192, 255]])


def test_first_of_several_windows_and_monochrome1(tmp_path):
    # Window 1: C=100, W=101 (LINEAR): y = ((x - 99.5) / 100 + 0.5) * 255.
    # x = 40 -> -0.095 -> 0, 100 -> 128.775 -> 129, 150 -> 1.005 -> 255; MONOCHROME1: 255, 126, 0.
    px = np.array([[40, 100, 150]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "w.dcm", px, photometric="MONOCHROME1", bits_stored=12,
        WindowCenter=[100, 2000], WindowWidth=[101, 4000],
    )  # fmt: skip
    np.testing.assert_array_equal(read_dicom_gray(path), [[255, 126, 0]])


def test_16_bit_is_scaled_not_shifted(tmp_path):
    # 12 bits stored in 16: min-max over [1000, 4000] gives 0, 85, 170, 255 (a bit shift would
    # give 62, 125, 187, 250).
    px = np.array([[1000, 2000], [3000, 4000]], dtype=np.uint16)
    out = read_dicom_gray(write_dicom(tmp_path / "b16.dcm", px, bits_stored=12))
    np.testing.assert_array_equal(out, [[0, 85], [170, 255]])


def test_full_16_bit_range(tmp_path):
    px = np.array([[0, 65535]], dtype=np.uint16)
    out = read_dicom_gray(write_dicom(tmp_path / "f16.dcm", px, bits_stored=16))
    np.testing.assert_array_equal(out, [[0, 255]])


def test_voi_lut_sequence_uses_its_output_range(tmp_path):
    # LUT: 4 entries from stored value 0, 16-bit descriptor but data in [0, 4000].
    # v = 0, 1, 2, 3, 9 (clamped to the last entry) -> 0, 1000, 2000, 4000, 4000
    # -> 255 * [0, .25, .5, 1, 1] = 0, 63.75 -> 64, 127.5 -> 128, 255, 255.
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.LUTData = np.array([0, 1000, 2000, 4000], "<u2").tobytes()
    item["LUTData"].VR = "OW"
    px = np.array([[0, 1, 2, 3, 9]], dtype=np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", px, bits_stored=12, VOILUTSequence=Sequence([item]))
    np.testing.assert_array_equal(read_dicom_gray(path), [[0, 64, 128, 255, 255]])


def test_multiframe_takes_first_frame_with_warning(tmp_path):
    frames = np.stack([np.array([[0, 100]], np.uint8), np.array([[100, 0]], np.uint8)])
    path = write_dicom(tmp_path / "mf.dcm", frames)
    with pytest.warns(UserWarning, match="2 frames"):
        out = read_dicom_gray(path)
    np.testing.assert_array_equal(out, [[0, 255]])


def test_rgb_dicom_becomes_luma(tmp_path):
    # BT.601 luma: red 0.299 * 255 = 76.2 -> 76, green 0.587 * 255 = 149.7 -> 150.
    px = np.array([[[255, 0, 0], [0, 255, 0]], [[255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    out = read_dicom_gray(write_dicom(tmp_path / "rgb.dcm", px, photometric="RGB"))
    np.testing.assert_array_equal(out, [[76, 150], [255, 0]])


def test_no_pixel_data_is_an_image_read_error(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", None)
    with pytest.raises(ImageReadError, match="no pixel data") as info:
        read_dicom_gray(path)
    assert info.value.path == path


def test_not_dicom_and_empty_files(tmp_path):
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"this is not a DICOM file at all" * 10)
    with pytest.raises(ImageReadError):
        read_dicom_gray(fake)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_dicom_gray(empty)


def test_compressed_without_decoder_names_syntax_and_packages(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip(
            "a JPEG Lossless decoder is installed here, so the missing-decoder path can't run"
        )
    path = write_dicom(tmp_path / "jpeg.dcm", np.zeros((4, 4), np.uint16), bits_stored=12)
    from pydicom import dcmread

    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8 not really a jpeg \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageReadError) as info:
        read_dicom_gray(path)
    message = str(info.value)
    assert "JPEG Lossless" in message and "1.2.840.10008.1.2.4.70" in message
    assert "pylibjpeg" in message and "gdcm" in message


def test_max_side_reduces_by_block_average(tmp_path):
    # 64 x 64, left half 0 and right half 200; max_side 16 -> factor 4 -> (16, 16), halves kept.
    px = np.zeros((64, 64), np.uint8)
    px[:, 32:] = 200
    out = read_dicom_gray(write_dicom(tmp_path / "big.dcm", px), max_side=16)
    assert out.shape == (16, 16)
    assert (out[:, :8] == 0).all() and (out[:, 8:] == 255).all()


def test_read_gray_dispatches_by_suffix_and_preamble(tmp_path):
    px = np.array([[0, 40], [80, 200]], dtype=np.uint8)
    by_suffix = write_dicom(tmp_path / "x.dicom", px)
    no_suffix = write_dicom(tmp_path / "IM0001", px)
    assert is_dicom(by_suffix) and is_dicom(no_suffix)
    for path in (by_suffix, no_suffix):
        np.testing.assert_array_equal(read_gray(path), [[0, 51], [102, 255]])
    assert load_for_model(no_suffix, 8).shape == (8, 8)


def test_png_is_not_sniffed_as_dicom(tmp_path):
    from PIL import Image

    png = tmp_path / "a.png"
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(png)
    assert not is_dicom(png)
    assert read_gray(png).max() == 7
