"""MetaImage and NRRD uploads: read as the training reader reads them, headers checked before SimpleITK reads them."""

from __future__ import annotations

import shutil
import time
import tracemalloc

import numpy as np
import pytest
import SimpleITK as sitk

from tumorbench.data.io import read_image
from tumorbench.uploads import UploadError, UploadLimits, read_upload, sniff_format


def _volume(shape=(20, 16, 8)) -> sitk.Image:
    array = np.random.default_rng(1).integers(0, 1000, size=shape[::-1]).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 0.9, 3.0))
    image.SetOrigin((5.0, -7.0, 11.0))
    return image


@pytest.mark.parametrize(("name", "compress"), [("scan.mha", False), ("scan.mha", True), ("scan.nrrd", True)])
def test_an_upload_reads_as_the_training_reader_reads_the_file(tmp_path, name, compress):
    sitk.WriteImage(_volume(), str(tmp_path / name), compress)
    shutil.copy(tmp_path / name, tmp_path / "upload.bin")  # a client's name says nothing: the bytes do
    assert sniff_format(tmp_path / "upload.bin") == ("nrrd" if name.endswith(".nrrd") else "metaimage")
    uploaded, local = read_upload(tmp_path / "upload.bin", label="scan"), read_image(tmp_path / name)
    np.testing.assert_array_equal(uploaded.array, local.array)
    np.testing.assert_allclose(uploaded.affine, local.affine)
    assert uploaded.meta["path"] == "scan"


def _header(tmp_path, compress=False) -> str:
    sitk.WriteImage(_volume(), str(tmp_path / "v.mha"), compress)
    data = (tmp_path / "v.mha").read_bytes()
    end = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    return data[:end].decode(), data[end:]


def test_hostile_headers_are_refused_before_simpleitk_reads_them(tmp_path):
    header, body = _header(tmp_path)
    forged = tmp_path / "huge.mha"
    forged.write_bytes(header.replace("DimSize = 20 16 8", "DimSize = 2048 2048 2048").encode() + body)
    tracemalloc.start()
    started = time.process_time()
    with pytest.raises(UploadError, match=r"huge: declares shape \(2048, 2048, 2048\) .* over the limit") as exc:
        read_upload(forged, UploadLimits(max_voxels=64 * 1024**2), label="huge")
    assert exc.value.status == 413 and time.process_time() - started < 1.0
    assert tracemalloc.get_traced_memory()[1] < 32 * 1024**2
    tracemalloc.stop()

    header, body = _header(tmp_path, compress=True)
    lying = tmp_path / "lying.mha"
    lying.write_bytes(header.replace("CompressedDataSize = ", "CompressedDataSize = 9").encode() + body)
    with pytest.raises(UploadError, match="CompressedDataSize is not a byte count within the file") as exc:
        read_upload(lying, label="lying")
    assert exc.value.status == 422

    endless = tmp_path / "endless.mha"
    endless.write_bytes(b"ObjectType = Image\n" + b"Comment = x\n" * 8000)
    with pytest.raises(UploadError, match="metaimage header does not end within its first 65,536 bytes"):
        read_upload(endless, label="endless")

    sitk.WriteImage(_volume(), str(tmp_path / "d.mhd"))
    with pytest.raises(UploadError, match="data is in another file: upload one file holding both") as exc:
        read_upload(tmp_path / "d.mhd", label="detached")
    assert exc.value.status == 415

    header, body = _header(tmp_path)
    cut = tmp_path / "cut.mha"
    cut.write_bytes(header.encode() + body[:-500])
    with pytest.raises(UploadError, match=r"^cut: corrupt or truncated image data") as exc:
        read_upload(cut, label="cut")
    assert exc.value.status == 422 and str(tmp_path) not in str(exc.value)


def test_the_attack_bench_metaimage_rows_are_refused_by_their_header(tmp_path):
    import attack_files as af

    (tmp_path / "bomb").write_bytes(af.metaimage_bomb(1024))
    with pytest.raises(UploadError, match=r"declares shape \(1024, 1024, 1024\)") as exc:
        read_upload(tmp_path / "bomb", label="bomb")
    assert exc.value.status == 413
    (tmp_path / "lying").write_bytes(af.metaimage_bomb(64, compressed_size=10**12))
    with pytest.raises(UploadError, match="CompressedDataSize is not a byte count within the file") as exc:
        read_upload(tmp_path / "lying", label="lying")
    assert exc.value.status == 422
    (tmp_path / "honest").write_bytes(af.metaimage_bomb(64))  # 64^3 int16 = 512 KB of the 16 MB of zeros: read
    assert read_upload(tmp_path / "honest", label="honest").array.shape == (64, 64, 64)
