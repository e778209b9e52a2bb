"""Build test series from pydicom's bundled files: new UIDs, same pixels."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import DATA_ROOT
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid


def pydicom_file(name: str) -> Path:
    """A file from pydicom's bundled test data."""
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path))


def pydicom_bundled_files(pattern: str = "**/*", charsets: bool = False) -> list[Path]:
    """pydicom's test files (and its character set files with ``charsets``) shipped in the package.

    Not ``pydicom.data.get_testdata_files``: that also fetches pydicom-data's extra files
    from GitHub (a failed download per file, about 15 s offline; tests stay on loopback).
    """
    folders = ("test_files", "charset_files") if charsets else ("test_files",)
    found = {p for folder in folders for p in (Path(DATA_ROOT) / folder).glob(pattern) if p.is_file()}
    return sorted((p for p in found if p.suffix != ".py"), key=lambda p: (p.parent.name, p.name))


def pydicom_dataset(name: str) -> Dataset:
    return dcmread(pydicom_file(name))


def series_from(name: str, count: int, *, study_uid: str | None = None) -> list[Dataset]:
    """``count`` instances of one new series (and study, unless given), numbered 1..count."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    instances = []
    for number in range(1, count + 1):
        ds = pydicom_dataset(name)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        instances.append(ds)
    return instances


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_series(folder: Path, instances: Iterable[Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in instances:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(encode(ds))
        paths.append(path)
    return paths


def zip_part(members: dict[str, bytes], manifest: bytes | None = None) -> bytes:
    """A part as the gateway writes it: STORED members (+ optional manifest.json)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if manifest is not None:
            zf.writestr("manifest.json", manifest)
    return buffer.getvalue()
