"""Output names: a batch never overwrites itself, and a new result never overwrites files already on disk."""

from __future__ import annotations

from geoplonk_service.output_files import joint_stem, safe_stem, unique_stems, unused_stem


def test_safe_stem_keeps_names_readable_and_file_safe():
    assert safe_stem("C:\\photos\\Harbour at dusk.HEIC") == "Harbour_at_dusk"
    assert safe_stem("../../etc/passwd") == "passwd"
    assert safe_stem("...", 3) == "photo-3"


def test_same_named_photos_get_numbered_case_insensitively():
    assert unique_stems(["/a/x.jpg", "/b/x.jpg", "/c/X.png", "/d/y z.jpg"]) == ["x", "x_2", "X_3", "y_z"]


def test_unused_stem_skips_files_on_disk_and_names_taken_in_this_run(tmp_path):
    assert unused_stem(tmp_path, "harbour") == "harbour"
    (tmp_path / "harbour.gpkg").write_bytes(b"x")
    assert unused_stem(tmp_path, "harbour") == "harbour_2"
    assert unused_stem(tmp_path, "harbour", {"harbour_2"}) == "harbour_3"


def test_a_joint_map_is_numbered_when_a_photo_of_its_batch_has_its_name():
    """Processing and `geoplonk locate` write a batch's joint map beside its photos' files, by the photos' rule."""
    assert joint_stem(["harbour", "forest"]) == "joint"
    assert joint_stem(["harbour", "Joint"]) == "joint_2"  # joint.tif would replace Joint.tif on Windows and macOS
    assert joint_stem(unique_stems(["joint.jpg", "a/joint.png", "joint_2.tif"])) == "joint_3"
