"""Photo files on the client side: which files are photos, collecting them from folders, reading them."""

from __future__ import annotations

import os

import pytest

from geoplonk_service import protocol as P
from geoplonk_service.photos import (
    E_UNREADABLE,
    PhotoFileError,
    collect_photos,
    is_photo_path,
    photo_size,
    photos_in_folder,
    read_photo,
    unique_paths,
)


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_photo_extensions_are_what_the_server_decodes():
    for name in ("a.jpg", "b.JPEG", "c.png", "d.tif", "e.TIFF", "f.webp", "g.heic", "h.HEIF", "i.avif", "j.bmp",
                 "k.gif"):
        assert is_photo_path(name), name
    for name in ("notes.txt", "result.gpkg", "photo.jpg.json", "raw.cr2"):
        assert not is_photo_path(name), name


def test_folder_listing_is_sorted_skips_hidden_and_recurses_on_request(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", ".hidden.jpg", "sub/c.heic", ".thumbs/d.jpg"):
        touch(tmp_path / name)
    (tmp_path / "folder.jpg").mkdir()  # a folder named like a photo is not one
    assert [p.name for p in photos_in_folder(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in photos_in_folder(tmp_path, recursive=True)] == [
        "a.JPG", "b.png", "sub/c.heic"]


def test_collect_photos_expands_folders_keeps_given_files_and_drops_repeats(tmp_path):
    folder = tmp_path / "trip"
    one, two = touch(folder / "one.jpg"), touch(folder / "two.png")
    touch(folder / "notes.txt")
    odd = touch(tmp_path / "scan.raw")  # given by name: sent, and the server judges it
    found = collect_photos([odd, folder, one, tmp_path / "trip" / ".." / "trip" / "two.png"])
    assert found == [odd, one, two]
    assert unique_paths(["a.jpg", "./a.jpg", "b.jpg", os.path.abspath("a.jpg")]) == ["a.jpg", "b.jpg"]


def test_reading_refuses_missing_oversized_and_unreadable_files_with_a_reason(tmp_path):
    photo = touch(tmp_path / "p.jpg", b"12345")
    assert photo_size(photo, 5) == 5 and read_photo(photo, 5) == b"12345"
    with pytest.raises(PhotoFileError) as err:
        photo_size(photo, 4)
    assert err.value.code == P.E_TOO_LARGE and "over the" in str(err.value)
    with pytest.raises(PhotoFileError) as err:
        read_photo(photo, 4)
    assert err.value.code == P.E_TOO_LARGE
    for bad in (tmp_path / "missing.jpg", tmp_path):
        with pytest.raises(PhotoFileError) as err:
            read_photo(bad, 100)
        assert err.value.code == E_UNREADABLE and str(err.value).startswith("cannot read the file: ")
