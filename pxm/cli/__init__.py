"""The ``pxm`` command line: ``serve``, ``demo``, ``runs``, ``recover``, ``export``, ``probe``, ``reconstruct``,
``live-consumer``, ``replay``, ``dfxm-demo`` and ``fp-reconstruct``.

Heavy imports sit inside the command functions so ``pxm --help`` stays fast.

The package's modules:

* :mod:`pxm.cli._common` — What every command group shares: defaults, environment variables, server arguments, exit
  statuses.
* :mod:`pxm.cli.demo` — ``pxm demo``: a whole simulated beamtime on an embedded Tiled server.
* :mod:`pxm.cli.dfxm` — ``pxm dfxm-demo`` and ``pxm fp-reconstruct``: Fourier-ptychographic DFXM.
* :mod:`pxm.cli.live` — ``pxm live-consumer`` and ``pxm replay``: the live pipeline from a document stream.
* :mod:`pxm.cli.polarization` — ``pxm polarization``: ferroelectric polarization from a results file's strain.
* :mod:`pxm.cli.reconstruct` — ``pxm probe``, ``pxm reconstruct`` and ``pxm import-ptypy-bragg``: Bragg data sets
  and probes in, reconstructions out.
* :mod:`pxm.cli.runs_export` — ``pxm runs``, ``pxm export`` and ``pxm recover``: the runs of a catalog.
* :mod:`pxm.cli.serve` — ``pxm serve``: the Tiled server with pxm's catalog, until a signal stops it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pxm.cli._common import (
    API_KEY_ENV,
    DEFAULT_DATA_DIR,
    EXIT_POSTPROCESSING_FAILED,
    TILED_URI_ENV,
    _add_server_args,
    _tiled_uri_required,
)
from pxm.cli.demo import _general_demo_sizes, cmd_demo
from pxm.cli.dfxm import cmd_dfxm_demo, cmd_fp_reconstruct
from pxm.cli.live import _add_live_args, cmd_live_consumer, cmd_replay
from pxm.cli.polarization import cmd_polarization
from pxm.cli.reconstruct import cmd_import_ptypy_bragg, cmd_probe, cmd_reconstruct, cmd_reconstruct_thin_layer
from pxm.cli.runs_export import cmd_export, cmd_recover, cmd_runs
from pxm.cli.serve import cmd_serve

__all__ = [
    "API_KEY_ENV",
    "EXIT_POSTPROCESSING_FAILED",
    "_general_demo_sizes",
    "build_parser",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pxm``."""
    from pxm.recipe_args import add_recipe_arguments

    parser = argparse.ArgumentParser(prog="pxm", description="Coherent X-ray Bragg microscopy: scan to science.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the embedded Tiled server on its own")
    _add_server_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run a simulated Bragg-ptychography beamtime into Tiled")
    _add_server_args(p)
    p.add_argument("--tiled-uri", default=os.environ.get(TILED_URI_ENV),
                   help="use this running server instead of starting one (default: $PXM_TILED_URI)")
    p.add_argument("--full", action="store_true", help="the seed's full 20 × 20 × 42 scan with 200 × 160 frames")
    p.add_argument("--raster", type=int, default=None,
                   help="raster points per axis (default 5; with --geometry NAME: 3)")
    p.add_argument("--angles", type=int, default=None,
                   help="rocking angles (default 21; at least 17 at the 0.005° step: the range must be twice the "
                        "probe's convergence; with --geometry NAME: 10 of 0.012°)")
    p.add_argument("--roi", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                   help="detector region saved per frame (default 64 64; with --geometry NAME: 20 20, square)")
    p.add_argument("--seed", type=int, default=2021, help="random seed of the simulation")
    p.add_argument("--no-live", action="store_true", help="no live reconstruction during the BP scan")
    p.add_argument("--live-iterations", type=int, default=None,
                   help="ePIE sweeps of the live and final reconstruction: the default recipe scaled to N sweeps "
                        "(default: the default recipe's 200 + 100 ML)")
    p.add_argument("--on-interrupt", choices=("ask", "abort", "stop"), default="ask",
                   help="after Ctrl-C has paused a scan: ask (resume/stop/abort when stdin is a terminal, "
                        "else abort; the default), abort, or stop; a second Ctrl-C or SIGTERM always aborts "
                        "(docs/reliability.md)")
    p.add_argument("--ferroelectric", action="store_true",
                   help="also run the ferroelectric FP-DFXM chain (two scans → polarization maps, ~1 min)")
    p.add_argument("--geometry", default="symmetric",
                   choices=("symmetric", "asymmetric-in-plane", "asymmetric-out-of-plane"),
                   help="diffractometer geometry (docs/geometry.md); other than symmetric: a small simulated "
                        "beamtime in that geometry (sim six-circle devices, RunEngine -> Tiled -> export -> "
                        "reconstruct, ~1 min) that prints the strain RMSE against the truth")
    p.add_argument("--one-process", action="store_true",
                   help="with --geometry NAME: the science chain alone, in one process without Bluesky/Tiled "
                        "(simulate, write DATA_DIR/geometry-NAME/dataset.h5, reconstruct, score)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("polarization", help="polarization maps from the strain maps of a results file (LGD)")
    p.add_argument("results", type=Path, metavar="RESULTS.h5", help="results file of `pxm reconstruct`")
    p.add_argument("--material", required=True, help="LGD coefficient set, e.g. BaTiO3, PbTiO3, SrTiO3")
    p.add_argument("--hkl", type=float, nargs=3, required=True, metavar=("H", "K", "L"),
                   help="the measured reflection in the parent cubic frame")
    p.add_argument("--strain-frame", default=None, help="which /strain map to invert (default: the first)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="OUT.h5",
                   help="polarization file to write (default RESULTS-polarization-MATERIAL-HKL.h5 beside the "
                        "results; never the results file itself)")
    p.add_argument("--force", action="store_true",
                   help="invert even if the material/reflection do not match the results' sample (material, hkl, "
                        "d-spacing within 1 %%)")
    p.add_argument("--publish", action="store_true", help="also publish to /processed in Tiled")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--raw-uid", default=None, help="raw run uid (default: from the results file)")
    p.add_argument("--tiled-uri", default=os.environ.get(TILED_URI_ENV))
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.set_defaults(func=cmd_polarization)

    p = sub.add_parser("runs", help="list runs in a Tiled server")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("export", help="export a Bragg-ptychography run from Tiled to a dataset file")
    p.add_argument("run", metavar="RUN", help="run uid in /raw")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset HDF5 file to write")
    p.add_argument("--allow-partial", action="store_true",
                   help="export a run that is partial (no stop document, not ended in success, frames missing) "
                        "with the frames it has")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("recover", help="re-ingest runs from the JSONL documents into Tiled after an outage")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="data folder the scans wrote to (its documents/ holds <uid>.jsonl; default ./pxm-data)")
    p.add_argument("--documents", type=Path, default=None, metavar="DIR",
                   help="folder of the <uid>.jsonl copies (default DATA_DIR/documents)")
    p.add_argument("--run", action="append", default=None, metavar="UID", help="only this run (repeatable)")
    p.add_argument("--settle-s", type=float, default=30.0, metavar="S",
                   help="skip runs whose JSONL changed less than S seconds ago: their scan may still be running "
                        "(default 30)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be done")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("import-ptypy-bragg", help="convert a ptypy Bragg3dSimScan export → dataset + probe file")
    p.add_argument("source", type=Path, metavar="PTYPY.h5", help="ptypy export (docs/dataset-format.md §5)")
    p.add_argument("-o", "--output", type=Path, required=True, help="pxm dataset file to write")
    p.add_argument("--probe-out", type=Path, default=None, metavar="F",
                   help="probe file to write (default: OUTPUT with _probe before .h5)")
    p.add_argument("--upsampling", type=int, default=None, metavar="U",
                   help="U of the dataset's geometry (default: the smallest whose P2 holds the probe)")
    p.set_defaults(func=cmd_import_ptypy_bragg)

    p = sub.add_parser("reconstruct-thin-layer",
                       help="a thin crystalline layer with a known probe: difference map on the detector lattice, the "
                            "slab picked by the data (docs/recipes.md)")
    p.add_argument("dataset", type=Path, metavar="DATASET.h5")
    p.add_argument("--probe-file", type=Path, required=True, metavar="F",
                   help="the known probe (docs/dataset-format.md §4), held fixed")
    p.add_argument("-o", "--output", type=Path, required=True, help="result HDF5 file to write")
    p.add_argument("--thickness-m", type=float, nargs="+", default=None, metavar="T",
                   help="slab thicknesses to try (default: 0.75/1/1.25 × /sample thickness_m, else 0.15 0.2 0.25 µm)")
    p.add_argument("--offsets", type=int, default=12, help="slab offsets tried per thickness (default 12)")
    p.add_argument("--search-iterations", type=int, default=20, help="map iterations per slab (default 20)")
    p.add_argument("--iterations", type=int, default=60, help="map iterations on the chosen slab (default 60)")
    p.add_argument("--score", choices=("auto", "r_factor", "likelihood"), default="auto",
                   help="what ranks the slabs: the maps' R-factor, the Poisson likelihood, or auto (likelihood at low "
                        "counts; docs/recipes.md)")
    p.add_argument("--ml-iterations", type=int, default=50, metavar="N",
                   help="Poisson likelihood (L-BFGS) iterations refining the result of photon-count data (default 50)")
    p.set_defaults(func=cmd_reconstruct_thin_layer)

    p = sub.add_parser("probe", help="forward ptychography of a spiral run → probe file")
    p.add_argument("run", metavar="RUN_UID", help="uid of a spiral_probe_scan run in /raw")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("-o", "--output", type=Path, default=Path("probe.h5"), help="probe file (default probe.h5)")
    p.add_argument("--allow-partial", action="store_true",
                   help="use a run without stop document or with frames missing (refused by default)")
    p.add_argument("--iterations", type=int, default=100, help="ePIE sweeps (default 100, as in the seed)")
    p.add_argument("--algorithm", choices=("epie", "mpie"), default="epie")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR", help="write PNG figures into DIR")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("reconstruct", help="reconstruct a dataset file or a Tiled run")
    p.add_argument("dataset", metavar="DATASET.h5", nargs="?", type=Path, default=None)
    p.add_argument("--run", default=None, metavar="UID", help="reconstruct this /raw run instead of a file")
    p.add_argument("--allow-partial", action="store_true",
                   help="with --run: reconstruct a partial run (no stop document, not ended in success, frames "
                        "missing) from the frames it has; with --probe-run: take the probe from a partial spiral run")
    p.add_argument("--tiled-uri", default=os.environ.get(TILED_URI_ENV))
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("-o", "--output", type=Path, required=True, help="results HDF5 file to write")
    add_recipe_arguments(p)                         # --recipe, --recipe-file, --iterations, --ml, support, U, probe
    g = p.add_mutually_exclusive_group()
    g.add_argument("--probe-run", default=None, metavar="UID", help="spiral run: forward ptychography gives the probe")
    g.add_argument("--probe-file", type=Path, default=None, metavar="F",
                   help="probe file: 2D beam plane (rectangular pixels allowed), (r2, r3) section or 3D probe "
                        "(docs/dataset-format.md §4); used without re-centring, blur or NA mask unless asked")
    p.add_argument("--probe-recentre", action="store_true",
                   help="move the probe file's intensity centroid to the centre of P2 (default: its pixel N//2)")
    p.add_argument("--probe-blur-px", type=float, default=0.0, metavar="S",
                   help="blur the probe file's probe by a Gaussian of σ = S P2 pixels before resampling "
                        "(anti-aliasing; default 0 = none)")
    p.add_argument("--probe-na-mask", type=float, nargs=2, default=None, metavar=("V", "H"),
                   help="constrain the probe to this numerical aperture (rad, vertical and horizontal) during "
                        "ePIE; default: none for a probe file, the seed's KB NA for the model probe")
    p.add_argument("--cxi", type=Path, default=None, help="also export the object and probe as CXI")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--publish", action="store_true", help="publish the result to /processed (needs --run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                   help="array backend: CuPy on a GPU or NumPy on the CPU (auto: CuPy when a GPU is usable; "
                        "PXM_BACKEND overrides auto)")
    p.add_argument("--fsc", action="store_true",
                   help="also reconstruct two binomial half-data sets: FSC resolution into the results (3× time)")
    p.add_argument("--fsc-seed", type=int, default=0, metavar="N", help="seed of the binomial photon split")
    p.add_argument("--prtf", type=int, default=0, metavar="K",
                   help="also run K (>= 6) reconstructions of the full data from random starts: their PRTF (1/e) "
                        "says how reproducibly the phases are retrieved ((K+1)× time)")
    p.add_argument("--prtf-seed", type=int, default=0, metavar="N", help="seed of the PRTF runs' random starts")
    p.add_argument("--free-fraction", type=float, default=0.0, metavar="F",
                   help="hold out this fraction of the measured data (0 <= F < 0.5, e.g. 0.05): its cost is tracked "
                        "every 10 iterations, a phase stops after 5 checks without improvement and the state with "
                        "the lowest held-out cost is kept (/free_cost in the results; docs/seed-schedule.md)")
    p.add_argument("--free-unit", choices=("entry", "frame"), default="entry",
                   help="hold out single detector-voxels (entry) or whole (position, angle) frames")
    p.add_argument("--ml-smoothness", type=float, default=None, metavar="S",
                   help="smoothness prior S·Σ|P|²|∇ρ|² in the ML refinement (default: the recipe's, 0.01 in "
                        "--recipe default, 0 in seed; 0 = the seed's cost alone); keeps long ML runs from fitting "
                        "model error with voxel-scale noise (docs/seed-schedule.md)")
    p.add_argument("--ml-free-probe-ramp", action="store_true",
                   help="let ML move the probe's linear phase ramp (by default it is held where ePIE left it: the "
                        "data cannot tell a probe ramp from an object ramp, which reads as a uniform strain offset)")
    p.add_argument("--batches", type=int, default=None, metavar="N",
                   help="mini-batch rPIE with N spatially spread batches instead of sequential ePIE (docs/mpi.md)")
    p.add_argument("--mpi", action="store_true",
                   help="split the positions across MPI ranks (run under mpirun -n R; needs mpi4py and --batches); "
                        "each rank reads only its frames, rank 0 writes the results (docs/mpi.md)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("live-consumer", help="live reconstruction fed over 0MQ (bluesky proxy) or NATS JetStream")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--zmq", metavar="HOST:PORT", help="the proxy's out address")
    src.add_argument("--nats", metavar="URL", help="NATS server (nats://HOST:PORT); reads the JetStream stream "
                                                    "from its first document")
    p.add_argument("--stream", default="bluesky", help="JetStream stream name (--nats; default bluesky)")
    p.add_argument("--subject", default="events.>", help="subject filter (--nats; default events.>)")
    p.add_argument("--once", action="store_true", help="exit after the first Bragg run's final result")
    _add_live_args(p)
    p.set_defaults(func=cmd_live_consumer)

    p = sub.add_parser("replay", help="push a recorded run through the live reconstruction")
    p.add_argument("run", metavar="RUN_UID", nargs="?", default=None, help="run uid in /raw (needs --tiled-uri)")
    p.add_argument("--jsonl", type=Path, default=None, metavar="FILE", help="replay this <uid>.jsonl instead")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="RESULTS.h5",
                   help="write the final result to this results file (docs/dataset-format.md §2)")
    p.add_argument("--publish", action="store_true",
                   help="publish previews and the final result to /processed of --tiled-uri (docs/tiled-layout.md)")
    _add_live_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("dfxm-demo", help="simulated FP-DFXM acquisition into Tiled, reconstruction, publication")
    _add_server_args(p)
    p.add_argument("--tiled-uri", default=os.environ.get(TILED_URI_ENV),
                   help="use this running server instead of starting one (default: $PXM_TILED_URI)")
    p.add_argument("--n-px", type=int, default=32, help="camera frame size in pixels (default 32)")
    p.add_argument("--grid", type=int, default=5, help="diversity grid n × n (default 5)")
    p.add_argument("--step-px", type=int, default=6, help="grid step in frequency pixels (default 6: ~63%% overlap)")
    p.add_argument("--kind", choices=("rock_roll", "two_theta_roll", "lens_translation"), default="rock_roll",
                   help="which motors create the diversity (default rock_roll)")
    p.add_argument("--iterations", type=int, default=150, help="Zernike-EPRY sweeps (default 150)")
    p.add_argument("--seed", type=int, default=6, help="random seed of the simulation")
    p.add_argument("--simulate-exposure", action="store_true",
                   help="wait the exposure time (0.1 s) per frame as a real camera does (default: frames as fast "
                        "as the simulator makes them)")
    p.add_argument("--ferroelectric", action="store_true",
                   help="c/a domain film: one FP scan per variant's 2θ, strain → polarization maps (LGD), published")
    p.add_argument("--material", default="BaTiO3", help="LGD coefficient set of --ferroelectric (default BaTiO3)")
    p.add_argument("--stress-bump-mpa", type=float, default=60.0,
                   help="peak elastic stress along ĝ in the --ferroelectric film (default 60 MPa)")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR",
                   help="write PNG figures of the FP-DFXM result into DIR (--ferroelectric: both scans and the "
                        "polarization maps)")
    p.set_defaults(func=cmd_dfxm_demo)

    p = sub.add_parser("fp-reconstruct", help="reconstruct a recorded FP-DFXM run and publish it")
    p.add_argument("--run", required=True, metavar="UID", help="uid of an fp_dfxm_scan run in /raw")
    p.add_argument("--tiled-uri", **_tiled_uri_required())
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV))
    p.add_argument("--iterations", type=int, default=150, help="Zernike-EPRY sweeps (default 150)")
    p.add_argument("--fixed-pupil", action="store_true", help="do not refine the pupil aberrations")
    p.add_argument("--no-publish", action="store_true", help="do not publish to /processed")
    p.add_argument("--figures", type=Path, default=None, metavar="DIR", help="write PNG figures into DIR")
    p.set_defaults(func=cmd_fp_reconstruct)

    from pxm.cli.formats import add_format_commands  # export-cxi, import-cxi, export-vtk (docs/interop.md)

    add_format_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pxm`` command."""
    from pxm.api import PxmError  # what the pxm.api functions the handlers call raise
    from pxm.recipe_args import one_line_warnings

    args = build_parser().parse_args(argv)
    try:
        with one_line_warnings(args.command):           # e.g. --allow-undersampled: the sampling check's warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        runengine = sys.modules.get("pxm.runengine")    # loaded by every command that can raise this one
        if runengine is not None and isinstance(exc, runengine.BeamtimeInterrupted):
            print(f"pxm {args.command}: {exc.line(getattr(args, 'data_dir', '.'))}", file=sys.stderr)
            return exc.exit_code
        print(f"pxm {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except (ValueError, ConnectionError, RuntimeError, TimeoutError, OSError, PxmError) as exc:
        runengine = sys.modules.get("pxm.runengine")
        if runengine is not None and isinstance(exc, runengine.ScanInterrupted):   # stop document written
            print(f"pxm {args.command}: {exc}", file=sys.stderr)
            return exc.exit_code
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"pxm {args.command}: error: {msg}", file=sys.stderr)
        return 1
