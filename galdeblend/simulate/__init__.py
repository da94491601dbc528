"""Simulated survey cutouts with truth, for validating deblends (needs galsim).

* :mod:`~galdeblend.simulate.surveys`: survey presets (``surveys.yaml``: HST/ACS COSMOS
  F814W, HSC, Rubin/LSST, Euclid VIS).
* :mod:`~galdeblend.simulate.galaxies`: parametric bulge + disk and real COSMOS galaxies.
* :mod:`~galdeblend.simulate.scenes`: blends and blank sky rendered into one or several
  surveys, written as FITS cutouts (:func:`galdeblend.io.read_cutouts` reads them) with
  separate truth files.
"""

from galdeblend.simulate.galaxies import (
    CosmosSample,
    Galaxy,
    cosmos_sample,
    draw_galaxy,
    draw_parametric_galaxy,
    draw_real_galaxy,
)
from galdeblend.simulate.scenes import (
    MASK_PLANES,
    RenderedFrame,
    SimulatedScene,
    simulate_dataset,
    simulate_scene,
)
from galdeblend.simulate.surveys import Band, PsfModel, Survey, available_surveys, get_survey

__all__ = [
    "Band",
    "PsfModel",
    "Survey",
    "available_surveys",
    "get_survey",
    "Galaxy",
    "CosmosSample",
    "cosmos_sample",
    "draw_galaxy",
    "draw_parametric_galaxy",
    "draw_real_galaxy",
    "MASK_PLANES",
    "RenderedFrame",
    "SimulatedScene",
    "SceneTruth",
    "simulate_scene",
    "write_scene",
    "read_truth",
    "simulate_dataset",
]


def __getattr__(name: str):
    """The FITS functions of simulated scenes, imported on first use: their module,
    :mod:`galdeblend.io.simulation_fits`, itself imports :mod:`galdeblend.simulate.scenes`,
    so importing it here would make ``import galdeblend.io.simulation_fits`` circular."""
    if name in ("SceneTruth", "read_truth", "write_scene"):
        from galdeblend.io import simulation_fits

        return getattr(simulation_fits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
