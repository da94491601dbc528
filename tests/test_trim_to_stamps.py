"""benchmarks/trim_to_stamps.py on the tiny simulated blends of the ``tiny_deblends``
fixture."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

pytest.importorskip("galsim")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import trim_to_stamps  # noqa: E402
from light_budget import beyond_stamps, outside_squares  # noqa: E402

from galdeblend.io import read_cutouts  # noqa: E402
from galdeblend.simulate import read_truth  # noqa: E402


def test_trimmed_copies_lose_just_the_light_beyond_the_stamps(tiny_deblends, tmp_path):
    """The image and the truth lose the same light, so the data less the truth (the noise
    and the background) is unchanged; the model grid is zero outside each galaxy's square
    and unchanged inside it; in a 1.6" square some light, but not most, is beyond."""
    simdir, _ = tiny_deblends
    scene = json.loads((simdir / "manifest.json").read_text())["scenes"][1]
    removed = trim_to_stamps.trim_scene(scene, simdir, tmp_path, 0.8)
    assert np.all((removed["hsc"] > 0.01) & (removed["hsc"] < 0.5))
    before, after = read_truth(simdir / scene["truth"]), read_truth(tmp_path / scene["truth"])
    name = scene["cutouts"]["hsc"]
    beyond = beyond_stamps(before, read_cutouts(str(simdir / name))[0], "hsc", 0.8)
    np.testing.assert_allclose(after.survey_galaxies["hsc"], before.survey_galaxies["hsc"] - beyond)
    image_before = fits.getdata(simdir / name, "IMAGE").astype(float)
    image_after = fits.getdata(tmp_path / name, "IMAGE").astype(float)
    np.testing.assert_allclose(
        image_after - after.survey_galaxies["hsc"].sum(axis=0),
        image_before - before.survey_galaxies["hsc"].sum(axis=0),
        rtol=0,
        atol=1e-5 * np.abs(image_before).max(),
    )
    outside = outside_squares(before, 0.8)[:, None]
    assert not after.model[np.broadcast_to(outside, after.model.shape)].any()
    inside = np.broadcast_to(~outside, after.model.shape)
    np.testing.assert_array_equal(after.model[inside], before.model[inside])


def test_main_trims_the_named_blends_only(tiny_deblends, tmp_path, monkeypatch, capsys):
    """``--blends`` picks scenes; the copy's manifest lists just those; an unknown name stops
    the script with a message naming the manifest."""
    simdir, _ = tiny_deblends
    prior = tmp_path / "prior"
    prior.mkdir()
    frame = {"shape": [5, 16, 16], "pixel_scale": 0.1, "bands": list("grizy"), "psf_fwhm": 0.3}
    (prior / "priors.json").write_text(json.dumps({"galaxy_frame": frame}))
    out = tmp_path / "trimmed"
    argv = ["trim_to_stamps.py", str(simdir), str(out), "--prior", str(prior)]
    monkeypatch.setattr(sys, "argv", [*argv, "--blends", "blend_0001"])
    trim_to_stamps.main()
    assert '1.60" squares' in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["scenes"]] == ["blend_0001"]
    assert sorted(p.name for p in out.glob("*.fits")) == [
        "blend_0001_hsc.fits",
        "blend_0001_truth.fits",
    ]
    monkeypatch.setattr(sys, "argv", [*argv, "--blends", "blend_0009"])
    with pytest.raises(SystemExit, match="no scene"):
        trim_to_stamps.main()
