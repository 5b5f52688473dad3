"""Synthetic licence plates for training and tests (not in the runtime path).

    import sys; sys.path.insert(0, "scripts")
    from platesynth import render_plate, degrade, random_nl_text
    plate = render_plate(np.random.default_rng(0), "NL")     # clean frontal plate, BGR
    crop = degrade(rng, plate.image, plate.corners).image    # what a roadside camera gives

Every Dutch text is a valid plate (edge.grammar rules); labels of two-row plates are the top row
then the bottom row, as the recognizer reads them.
"""

from .degrade import Degraded, degrade
from .render import FONTS, RenderedPlate, render_plate
from .texts import COUNTRIES, PlateText, random_nl_text, random_text

__all__ = ["COUNTRIES", "FONTS", "Degraded", "PlateText", "RenderedPlate", "degrade", "random_nl_text",
           "random_text", "render_plate"]
