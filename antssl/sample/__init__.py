"""Synthetic sample data: coastal scenes, label rasters, a coastline vector and a coastal mask.

The project's embedded default data, used by the demo and the tests. Everything is
synthetic and generated from seeds (deterministic, no network). It is made to be as hard
as a real multi-scene archive (EVAL-PROTOCOL.md, "The scene shortcut"): every scene has its
own pixel size, illumination, haze, blur, noise, striping and per-band contrast stretch, so
a tile's brightness says more about its scene than about its surface, while the surface
types stay distinguishable by texture and by the shape of their spectra.

Geometry, all in EPSG:3031 metres. A coastal *site* (:data:`SITES`) is a smooth random
coast placed where a real one lies (e.g. Wilhelm II Land, ~90°E 66.8°S). In polar form about
the pole a point at distance ``rho`` and longitude ``lam`` is ``(x, y) = (rho sin lam, rho cos
lam)``; the along-coast distance is ``s = r0 (lam - lon0)`` (m, increasing eastward). The
grounding line is ``rho_g(s) = r0 + wiggle(s)`` and the ice front (the coast) ``rho_f(s) =
rho_g(s) + shelf_width(s)`` (0 where the coast is grounded). Land (grounded ice, rock, blue
ice) is ``rho < rho_g``, ice shelves ``rho_g <= rho < rho_f``, sea ``rho >= rho_f``. Scene
slot ``i`` of a site is centred on the coast, a little landward, at ``s_i = (i + 1/2 -
MAX_SCENES / 2) * 1.25 * size * max_pixel_m``, so slots never overlap whatever each
scene's own pixel size. The coastline depends on ``seed`` only, and every call writes the
coasts of all sites, so one coastline file masks the scenes of every site.

Classes (label codes, :data:`CLASSES`); bands 1 visible, 2 NIR, 3 SWIR (4-8 fixed mixes):

- open water: dark in every band, smooth;
- sea ice: polygonal floes of varied size and snow cover, cut by dark leads (labelled sea
  ice: they are part of the pack); wide stretches of open water are open water;
- ice shelf: snow, smooth, faint flow stripes;
- crevassed ice: the shelf behind the front cut by dark cracks with bright sunlit walls,
  the *same mean brightness* as smooth shelf ice (only texture tells them apart);
- rock: dark visible, bright SWIR, rough, with snow patches; its NIR level matches blue ice;
- grounded ice: snow with km-scale undulations (topographic shading) and faint sastrugi;
- blue ice: wind-polished fields on grounded ice near outcrops: lower visible/NIR, darkest
  SWIR, smooth with faint scallops.

Scene nuisances (each scene's values go to ``scene_NNN_nuisance.json`` and to the
GeoTIFF tag ``ANTSSL_NUISANCE``), applied in this order to surface reflectance ``R``:
pixel size (15-60 m by default, log-uniform, so the texture scale changes); illumination
``R * (1 + ramp) * (1 + shading)`` (a linear sun gradient and low-frequency shading);
a thin cloud / haze veil ``R (1 - a w_b) + a w_b c_b``; a Gaussian blur (PSF); the
per-band stretch ``y = offset_b + gain_b R^gamma_b``; sensor noise and detector striping
(per-column or per-row offsets, plus a periodic detector gain pattern); ``DN = y * 10000``.

Modules (the public names below are re-exported here):

- :mod:`antssl.sample.coast`: sites (:data:`SITES`), the coast geometry, scene slots and grids.
- :mod:`antssl.sample.surfaces`: classes (:data:`CLASSES`), spectra, the surface rendering.
- :mod:`antssl.sample.sensor`: per-scene nuisances, their application, one rendered scene.
- :mod:`antssl.sample.noise`: Gaussian random fields and blur shared by the two above.
- :mod:`antssl.sample.writer`: :func:`write_sample_data`, the file writers and README.txt.
"""

from __future__ import annotations

from antssl.sample.coast import (
    CRS,
    HELDOUT_SEED_OFFSET,
    HELDOUT_SITE,
    MAX_SCENES,
    PIXEL_M,
    SITES,
    Site,
)
from antssl.sample.surfaces import CLASSES
from antssl.sample.writer import SampleData, write_sample_data

__all__ = [
    "CLASSES",
    "CRS",
    "HELDOUT_SEED_OFFSET",
    "HELDOUT_SITE",
    "MAX_SCENES",
    "PIXEL_M",
    "SITES",
    "SampleData",
    "Site",
    "write_sample_data",
]
