"""predict's (and evaluate's) one-line refusals that say what to do: a CycleGAN model file given
a scene of its other domain, a run folder, a scene given twice, a missing model file, and paths
that are files where folders are meant (and the other way round), a container of rasters and
bands of two data types."""

from __future__ import annotations

import torch
from predict_helpers import _spec, metadata, write_scene

from geopix2pix.cli import main
from geopix2pix.models import build_generator, init_weights, save_model
from geopix2pix.models.metadata import ModelMetadata


def cyclegan_file(path, direction: str) -> str:
    """A CycleGAN model file of `direction` for domain A of 4 bands and domain B of 3."""
    meta = ModelMetadata.from_dict(metadata(4, 3)).of_family("cyclegan", direction)
    in_ch, out_ch = len(meta.source.bands), len(meta.target.bands)
    spec = _spec(in_ch, out_ch, {}, ngf=4)
    torch.manual_seed(0)
    save_model(path, init_weights(build_generator(spec)).eval(), spec, meta.to_dict())
    return str(path)


def test_a_cyclegan_file_given_a_scene_of_its_other_domain_names_the_other_file(tmp_path,
                                                                                capsys):
    """A tester's B scene for model.safetensors (A -> B) was told to repeat a band."""
    run = tmp_path / "run"
    run.mkdir()
    ab = cyclegan_file(run / "model.safetensors", "a_to_b")
    ba = cyclegan_file(run / "model-ba.safetensors", "b_to_a")
    scene_b = write_scene(tmp_path / "b.tif", 64, 64, count=3, dtype="uint16")
    scene_a = write_scene(tmp_path / "a.tif", 64, 64, count=4, dtype="uint16")
    assert main(["predict", scene_b, str(tmp_path / "o.tif"), "-m", ab, "-q"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "; this CycleGAN model translates A -> B (source -> target) and takes 4 bands; if the "
        "scene is of the target domain, use the run's model-ba.safetensors (B -> A; "
        "model-ba-best.safetensors for its best validation)")
    assert main(["predict", scene_a, str(tmp_path / "o.tif"), "-m", ba, "-q"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "; this CycleGAN model translates B -> A (target -> source) and takes 3 bands; if the "
        "scene is of the source domain, use the run's model.safetensors (A -> B; "
        "model-best.safetensors for its best validation)")
    assert main(["predict", scene_a, str(tmp_path / "o.tif"), "-m", ab, "-q"]) == 0


def test_a_cyclegan_run_folder_as_model_names_the_files_of_both_directions(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cyclegan_file(run / "model.safetensors", "a_to_b")
    cyclegan_file(run / "model-ba.safetensors", "b_to_a")
    scene = write_scene(tmp_path / "a.tif", 64, 64, count=4, dtype="uint16")
    assert main(["predict", scene, str(tmp_path / "o.tif"), "-m", str(run), "-q"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: {run} is a folder, not a model file; pass {run / 'model.safetensors'} (A -> B, "
        f"the latest epoch) or {run / 'model-ba.safetensors'} (B -> A, the latest epoch)")
    assert not (tmp_path / "o.tif").exists()


def test_a_scene_given_twice_is_said_to_be_given_twice(tmp_path, model_file, capsys):
    """A tester was told a.tif and a.tif would both be written to a.tif: rename the scenes."""
    scene = write_scene(tmp_path / "a.tif", 40, 40)
    again = str(tmp_path / "." / "a.tif")  # the same file, spelt otherwise
    assert main(["predict", scene, again, "--out-dir", str(tmp_path / "d"), "-m", model_file,
                 "-q"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: {again} is given twice (scenes 1 and 2); give each scene once")
    assert not (tmp_path / "d").exists()


def test_a_file_where_a_folder_is_meant_and_a_missing_model_say_what_to_do(tmp_path,
                                                                          model_file, capsys):
    """A tester got "cannot make the folder afile for o.tif (File exists)", and a missing
    model file was named with no advice."""
    scene = write_scene(tmp_path / "a.tif", 40, 40)
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["predict", scene, str(afile / "o.tif"), "-m", model_file, "-q"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: cannot make the folder {afile} for o.tif: {afile} is a file, not a folder; "
        "choose another output folder")
    assert main(["predict", scene, "--out-dir", str(afile), "-m", model_file, "-q"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --out-dir {afile} is a file, not a folder; pass a folder for the outputs (one "
        "that does not exist is made)")
    missing = tmp_path / "notthere.safetensors"
    assert main(["predict", scene, str(tmp_path / "o.tif"), "-m", str(missing), "-q"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: model file {missing} does not exist; pass a run's model.safetensors or "
        "model-best.safetensors (geopix2pix train writes them)")
    assert afile.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.tif", "afile"]


def test_evaluate_refuses_folders_for_rasters_and_the_json_file_in_its_own_words(tmp_path,
                                                                                capsys):
    """click said "Invalid value for 'PRED': File 'adir' is a directory." (its usage lines)."""
    scene = write_scene(tmp_path / "a.tif", 40, 40)
    adir = tmp_path / "adir"
    adir.mkdir()
    for args in ([str(adir), scene], [scene, str(adir)]):
        assert main(["evaluate", *args]) == 2
        assert capsys.readouterr().err.strip() == (
            f"Error: {adir} is a folder, not a raster GDAL can read; pass the rasters in it "
            f"(e.g. {adir / '*.tif'})")
    assert main(["evaluate", scene, scene, "--json", str(adir)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --json {adir} is a folder, not a file; pass a file to write the JSON report to "
        f"(e.g. {adir / 'report.json'})")
    assert list(adir.iterdir()) == []
    assert main(["evaluate", scene, scene, "--json", str(adir / "report.json")]) == 0


def test_a_container_of_rasters_and_bands_of_two_types_are_one_line(tmp_path, model_file,
                                                                     capsys):
    """A GeoPackage of two raster tables opened with no band (its subdatasets listed): told to
    assign a CRS, and with --allow-no-crs an IndexError traceback; a VRT stacking a Byte band on
    Float32 ones: rasterio's "more than one 'dtype' found" traceback."""
    import numpy as np
    import rasterio

    gpkg = tmp_path / "multi.gpkg"
    for name, mode in (("A", "w"), ("B", "w")):
        options = {"RASTER_TABLE": name, **({"APPEND_SUBDATASET": "YES"} if name == "B" else {})}
        with rasterio.open(gpkg, mode, driver="GPKG", width=64, height=64, count=3,
                           dtype="uint8", crs="EPSG:32633",
                           transform=rasterio.transform.from_origin(500000, 5200000, 10, 10),
                           **options) as dst:
            dst.write(np.ones((3, 64, 64), np.uint8))
    for extra in ([], ["--allow-no-crs"]):
        assert main(["predict", str(gpkg), str(tmp_path / "o.tif"), "-m", model_file, "-q",
                     *extra]) == 2
        assert capsys.readouterr().err.strip() == (
            f"Error: {gpkg} holds 2 subdatasets, e.g. GPKG:{gpkg}:A; pass one of them instead")
    byte = write_scene(tmp_path / "byte.tif", 64, 64, count=1, dtype="uint8")
    floats = write_scene(tmp_path / "floats.tif", 64, 64, count=2, dtype="float32")
    stack = tmp_path / "stack.vrt"
    bands = "".join(
        f'<VRTRasterBand dataType="{kind}" band="{i}"><SimpleSource><SourceFilename '
        f'relativeToVRT="0">{path}</SourceFilename><SourceBand>{band}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for i, (kind, path, band) in enumerate([("Byte", byte, 1), ("Float32", floats, 1),
                                                ("Float32", floats, 2)], 1))
    stack.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:32633</SRS>'
                     "<GeoTransform>500000, 10, 0, 5200000, 0, -10</GeoTransform>"
                     f"{bands}</VRTDataset>")
    assert main(["predict", str(stack), str(tmp_path / "o.tif"), "-m", model_file, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"Error: {stack}: its bands 1 uint8, 2 float32, 3 float32 are of 2 "
                          "data types") and "\n" not in err and "--bands" in err
    assert main(["export-chips", str(stack), floats, "-o", str(tmp_path / "chips"), "-q"]) == 2
    assert "choose bands of one type with --source-bands" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "chips").exists()


def test_memory_running_out_is_one_line_that_says_what_to_lower(tmp_path, model_file, capsys):
    """A batch too large for the host: numpy's MemoryError was a traceback with one output, and
    one line (without what to do) with --out-dir."""
    scene = write_scene(tmp_path / "s.tif", 64, 64)
    assert main(["predict", scene, str(tmp_path / "o.tif"), "-m", model_file, "-q",
                 "--batch-size", str(10**11)]) == 2  # (past any address space)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"Error: {scene}: ") and "\n" not in err
    assert err.endswith("(out of memory: lower --batch-size)")
    assert not (tmp_path / "o.tif").exists()


def test_a_scene_in_a_local_engineering_crs_is_predicted(tmp_path, model_file):
    """Export refuses a LOCAL_CS raster (chips.gpkg needs its place on the Earth); predict has no
    such need, and writes the scene's grid back as it is."""
    import rasterio

    local = ('LOCAL_CS["site grid",UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
             'AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    scene = write_scene(tmp_path / "site.tif", 64, 64, crs=local)
    assert main(["predict", scene, str(tmp_path / "o.tif"), "-m", model_file, "-q"]) == 0
    with rasterio.open(scene) as src, rasterio.open(tmp_path / "o.tif") as out:
        assert (out.crs, out.transform) == (src.crs, src.transform)
