"""Bluesky plans of pxm. Import these names into a queueserver startup script (``QSERVER_PLANS``)."""

from plans.align import NoPeakFoundError, rocking_curve_align, rocking_curve_centre_deg
from plans.bragg import raster_rocking_scan
from plans.forward import spiral_probe_scan
from plans.fp_dfxm import fp_dfxm_scan
from plans.patterns import (
                            FPDiversitySettings,
                            archimedean_spiral_um,
                            fp_diversity_settings,
                            raster_positions_um,
                            rocking_angles_deg,
)

QSERVER_PLANS = ("raster_rocking_scan", "spiral_probe_scan", "rocking_curve_align", "fp_dfxm_scan")
"""Names of the plans meant to be exposed through bluesky-queueserver."""

__all__ = ["FPDiversitySettings", "NoPeakFoundError", "QSERVER_PLANS", "archimedean_spiral_um", "fp_dfxm_scan",
           "fp_diversity_settings", "raster_positions_um", "raster_rocking_scan", "rocking_angles_deg",
           "rocking_curve_align", "rocking_curve_centre_deg",
           "spiral_probe_scan"]
