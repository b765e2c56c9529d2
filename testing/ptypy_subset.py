"""The ptypy Bragg3dSimScan subset of the tests: its file, the problem pxm's engine gets from it, and its import.

``tests/data/ptypy_bragg_subset.h5`` holds 3 of the 13 positions of ptypy's Bragg3dSimScan case as ptypy wrote
them (noise-free intensities, its 3D probe and the true object). The importer tests, the difference-map and
lattice solver tests and the thin-layer command tests all start from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.bragg.ptypy_bragg import PtypyBraggCase, probe_p2, pxm_dataset, read_ptypy_bragg
from analysis.dataset import BraggDataset, scan_axes
from analysis.geometry import BraggGeometry

__all__ = ["PTYPY_SUBSET_PATH", "SubsetProblem", "import_subset", "read_subset", "subset_problem"]

PTYPY_SUBSET_PATH = Path(__file__).resolve().parents[1] / "tests" / "data" / "ptypy_bragg_subset.h5"
"""The subset file (3 of the 13 positions of ``../shared/data/ptypy_bragg_case_dev.h5``)."""


@dataclass(frozen=True)
class SubsetProblem:
    """The subset as pxm's engine takes it, with the case it came from (the truth, for scoring only)."""

    case: PtypyBraggCase
    dataset: BraggDataset
    stage_xyz_m: np.ndarray
    """(POS, 3) stage positions of :func:`analysis.dataset.scan_axes`."""
    rocking_offsets_deg: np.ndarray
    probe: np.ndarray
    """ptypy's probe as pxm's P2 section on the dataset's geometry."""

    @property
    def geometry(self) -> BraggGeometry:
        """The dataset's geometry."""
        return self.dataset.geometry


def read_subset() -> PtypyBraggCase:
    """The subset as read by :func:`analysis.bragg.ptypy_bragg.read_ptypy_bragg`."""
    return read_ptypy_bragg(PTYPY_SUBSET_PATH)


def subset_problem(*, upsampling: int = 1) -> SubsetProblem:
    """The subset as a pxm dataset at ``upsampling``, its scan axes and its probe.

    Parameters
    ----------
    upsampling
        The detector upsampling U of the dataset's geometry (1: ptypy's own pixels).
    """
    case = read_subset()
    ds = pxm_dataset(case, upsampling=upsampling)
    stage, offsets = scan_axes(ds.rocking_angle_deg, ds.stage_position_m, ds.geometry)
    return SubsetProblem(case=case, dataset=ds, stage_xyz_m=stage, rocking_offsets_deg=offsets,
                         probe=probe_p2(case, ds.geometry))


def import_subset(out_dir: Path) -> tuple[Path, Path]:
    """Run ``pxm import-ptypy-bragg`` on the subset into ``out_dir``; return (dataset file, probe file).

    Raises
    ------
    RuntimeError
        When the command does not exit with 0.
    """
    from pxm.cli import main

    dataset, probe = Path(out_dir) / "case.h5", Path(out_dir) / "probe.h5"
    rc = main(["import-ptypy-bragg", str(PTYPY_SUBSET_PATH), "-o", str(dataset), "--probe-out", str(probe)])
    if rc != 0:
        raise RuntimeError(f"pxm import-ptypy-bragg {PTYPY_SUBSET_PATH} exited with {rc}")
    return dataset, probe
