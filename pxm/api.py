"""pxm's Python API: what each ``pxm`` command does, as functions for notebooks and scripts (docs/python-api.md).

Every function calls the same code as its command (one pipeline, never a second implementation):

=================================  =================================  ==================================================
function                           command                            calls
=================================  =================================  ==================================================
:func:`serve`                      ``pxm serve``                      :class:`pxm.catalog.TiledService`
:func:`connect`                    ``--tiled-uri --api-key``          :func:`pxm.catalog.connect`
:func:`runs`                       ``pxm runs``                       :func:`pxm.catalog.tiled_run_counts`
:func:`simulate_beamtime`          ``pxm demo``                       :func:`pxm.demo.run_beamtime` (+ live)
:func:`simulate_general_geometry`  ``pxm demo --geometry NAME``       :func:`pxm.geometry_demo.run_general_beamtime`
:func:`export`                     ``pxm export``                     :func:`pxm.run_export.run_to_dataset`
:func:`load_dataset`               (``DATASET.h5``)                   :func:`analysis.dataset.read_dataset`
:func:`reconstruct`                ``pxm reconstruct``                :func:`pxm.reconstruction.reconstruct_dataset`
:func:`write_results`              ``pxm reconstruct -o``             :func:`pxm.reconstruction.write_outputs`
:func:`publish`                    ``pxm reconstruct --publish``      :func:`pxm.publication.publish_outcome`
:func:`replay`                     ``pxm replay``                     :func:`pxm.live.replay_documents`
:func:`probe`                      ``pxm probe``                      :func:`pxm.reconstruction.probe_from_spiral_run`
:func:`recover_runs`               ``pxm recover``                    :func:`pxm.recover.recover_runs`
:func:`import_ptypy_bragg`         ``pxm import-ptypy-bragg``         :mod:`analysis.bragg.ptypy_bragg`
:func:`export_cxi`                 ``pxm export-cxi``                 :func:`analysis.cxi_nexus.export_cxi_dataset`
:func:`import_cxi`                 ``pxm import-cxi``                 :func:`analysis.cxi_nexus.import_cxi_dataset`
:func:`export_vtk`                 ``pxm export-vtk``                 :func:`analysis.vtk_export.export_results_vtk`
:func:`polarization_maps`          ``pxm polarization``               :func:`pxm.polarization.polarization_from_results`
:func:`simulate_fp_dfxm`           ``pxm dfxm-demo`` (scan)           :func:`pxm.dfxm.run_fp_dfxm_acquisition`
:func:`fp_reconstruct`             ``pxm fp-reconstruct``             :func:`pxm.dfxm.reconstruct_fp_run`
:func:`simulate_ferroelectric`     ``pxm dfxm-demo --ferroelectric``  :func:`pxm.ferroelectric.run_ferroelectric_job`
:func:`live_consumer`              ``pxm live-consumer``              :func:`pxm.live.feed.consume_live`
=================================  =================================  ==================================================

``recover_runs`` and ``polarization_maps`` are named apart from the modules :mod:`pxm.recover` and
:mod:`pxm.polarization` (importing a submodule sets the package attribute of its name).

Options are keyword-only with the commands' defaults. Whatever the command prints as
``pxm CMD: error: MESSAGE`` is raised here as :class:`PxmError` with the same one-line ``MESSAGE``.
``uri``/``api_key`` default to ``$PXM_TILED_URI``/``$PXM_TILED_API_KEY``, as the commands' options do.

Parameters that several functions share (``client``, ``figures_dir``, the live recipe's ``iterations, ml``, ...)
are described once, in :data:`_SHARED_PARAMETERS`; a docstring line ``{{name}}`` stands for that description, and
``help()``/Sphinx show the text filled in (:func:`_shared_parameters`).
"""

# Why this module is long: the Python API is one facade: one function per CLI command, each a thin typed wrapper
# with the same error translation (PxmError); splitting would scatter what `import pxm` gives.

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from analysis.bragg.engine import Recipe
    from analysis.bragg.outcome import Outcome
    from analysis.dataset import BraggDataset
    from pxm.catalog import TiledService

__all__ = ["PxmError", "RunInfo", "Beamtime", "WrittenResults", "ReplayResult", "SpiralProbe", "RecoverReport",
           "Polarization", "FPReconstruction", "CxiExport", "Ferroelectric", "GeometryBeamtime", "API_KEY_ENV",
           "TILED_URI_ENV",
           "serve", "connect", "runs", "simulate_beamtime", "export", "load_dataset", "reconstruct",
           "write_results", "publish", "replay", "probe", "recover_runs", "import_ptypy_bragg", "export_cxi",
           "import_cxi", "export_vtk", "polarization_maps", "simulate_fp_dfxm", "fp_reconstruct",
           "simulate_ferroelectric", "simulate_general_geometry", "live_consumer"]

API_KEY_ENV = "PXM_TILED_API_KEY"
"""Environment variable giving the default API key (as ``--api-key`` of the commands)."""
TILED_URI_ENV = "PXM_TILED_URI"
"""Environment variable giving the default server URL (as ``--tiled-uri`` of the commands)."""
_CLI_ERRORS = (ValueError, ConnectionError, RuntimeError, TimeoutError, OSError)
"""What :func:`pxm.cli.main` prints as one line; the API raises them as :class:`PxmError`."""

_SHARED_PARAMETERS = {
    "client": """client
    The root client (:func:`connect`, or ``service.client()`` of :func:`serve`).""",
    "figures_dir": """figures_dir
    Write PNG figures into this folder (``--figures``).""",
    "live_recipe": """iterations, ml
    ePIE sweeps and ML iterations of the live recipe (``--iterations``, ``--ml``; defaults 6 and 0).""",
    "live_engine": """live_engine
    Reconstruct while frames arrive (False: assemble only, reconstruct after the stop; ``--no-live-engine``).""",
    "backend": """backend
    ``auto``, ``numpy`` or ``cupy`` (``--backend``).""",
    "server": """server
    A running :func:`serve` server: the simulated detectors write into its raw folder. None: reach
    ``tiled_uri`` (as the command's ``--tiled-uri``).""",
    "remote_server": """tiled_uri, api_key
    Without ``server``: the running server's URL and key (``--tiled-uri``, ``--api-key``; defaults
    ``$PXM_TILED_URI``, ``$PXM_TILED_API_KEY``), e.g. ``pxm serve`` on another terminal.
data_dir
    Without ``server``: the data folder the detector files go to (``--data-dir``, under ``DATA_DIR/raw``);
    the server must read them (``pxm serve --data-dir`` the same folder). Checked before any scan.""",
}
"""Parameter descriptions shared by several functions: a docstring line ``{{name}}`` is replaced by entry ``name``."""

_F = TypeVar("_F", bound=Callable[..., Any])
_PLACEHOLDER = re.compile(r"^( *)\{\{(\w+)\}\}$", re.MULTILINE)


def _shared_parameters(func: _F) -> _F:
    """Fill the ``{{name}}`` lines of ``func``'s docstring from :data:`_SHARED_PARAMETERS` (at the line's indent)."""

    def fill(m: re.Match[str]) -> str:
        return "\n".join(m.group(1) + line if line else line for line in _SHARED_PARAMETERS[m.group(2)].splitlines())

    func.__doc__ = _PLACEHOLDER.sub(fill, func.__doc__ or "")
    return func


class PxmError(Exception):
    """A pxm operation failed; the message is the one line the command prints after ``pxm CMD: error:``.

    ``command`` names the CLI command doing the same thing; the original exception is ``__cause__``.
    """

    def __init__(self, message: str, *, command: str) -> None:
        super().__init__(message)
        self.command = command

    @property
    def cli_line(self) -> str:
        """The line ``pxm COMMAND`` prints on stderr for the same failure."""
        return f"pxm {self.command}: error: {self}"


@contextlib.contextmanager
def _as_pxm_error(command: str) -> Iterator[None]:
    """Turn what the CLI prints as one line into :class:`PxmError` (same text, original as its cause)."""
    try:
        yield
    except PxmError:
        raise
    except _CLI_ERRORS as exc:
        raise PxmError(" ".join(str(exc).split()) or type(exc).__name__, command=command) from exc


def _default_uri(uri: str | None, command: str) -> str:
    uri = uri if uri is not None else os.environ.get(TILED_URI_ENV)
    if not uri:
        raise PxmError(f"give the server's URL (uri=..., or set ${TILED_URI_ENV}); `pxm serve` prints it",
                       command=command)
    return uri


def _default_key(api_key: str | None, command: str) -> str:
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if not key:
        raise PxmError(f"give --api-key or set ${API_KEY_ENV}", command=command)
    return key


# ------------------------------------------------------------------------------------------ Tiled
def _beamtime_target(server: TiledService | None, tiled_uri: str | None, api_key: str | None,
                     data_dir: str | Path, command: str) -> tuple[Any, Any]:
    """(server config, root client) of a simulated beamtime: a :func:`serve` server, or a running one by URL.

    By URL, as the commands' ``--tiled-uri``: the server must read the detector files under ``data_dir/raw``,
    checked before any scan (:func:`pxm.catalog.check_server_reads`).
    """
    if server is not None and tiled_uri is not None:
        raise ValueError("give either a server started by pxm.serve or tiled_uri=, not both")
    if server is not None:
        return server.config, server.client()
    from pxm.catalog import TiledServerConfig, check_server_reads
    from pxm.catalog import connect as catalog_connect

    uri, key = _default_uri(tiled_uri, command), _default_key(api_key, command)
    cfg = TiledServerConfig(data_dir=Path(data_dir), api_key=key)
    client = catalog_connect(uri, key)
    check_server_reads(client, cfg.raw_path, uri)
    return cfg, client


def _served(config: Any) -> TiledService:
    """A started :class:`~pxm.catalog.TiledService` whose ``with`` block stops it (and starts no second server)."""
    from pxm.catalog import TiledService

    class ServedTiled(TiledService):
        """The server :func:`serve` started: ``with`` only stops it at the end."""

        def __enter__(self) -> TiledService:
            return self if self.running else self.start()

    return ServedTiled(config).start()


def serve(data_dir: str | Path, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0,
          catalog_uri: str | None = None) -> TiledService:
    """Start pxm's Tiled server (``pxm serve``) as a child process; it has ``/raw`` and ``/processed``.

    Parameters
    ----------
    data_dir
        Folder of the catalog, arrays and detector files (``--data-dir``; created if missing).
    api_key
        Alphanumeric key (default ``$PXM_TILED_API_KEY``, else a random one: ``service.config.api_key``).
    host, port
        Interface and TCP port (default loopback and a free port; ``service.uri`` says which).
    catalog_uri
        Catalog database URI (default SQLite in ``data_dir``).

    Returns
    -------
    pxm.catalog.TiledService
        The running server: ``.uri``, ``.config.api_key``, ``.client()``, ``.stop()``; a context manager
        (``with pxm.serve(d) as server:`` stops it at the end). Its web UI is at ``.uri + "/ui/"``.
    """
    from pxm.catalog import TiledServerConfig, ensure_layout

    with _as_pxm_error("serve"):
        kw: dict[str, Any] = dict(data_dir=Path(data_dir), catalog_uri=catalog_uri, host=host, port=port)
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if key:
            kw["api_key"] = key
        service = _served(TiledServerConfig(**kw))
        try:
            ensure_layout(service.client())
        except BaseException:
            service.stop()
            raise
        return service


def connect(uri: str | None = None, api_key: str | None = None) -> Any:
    """A Tiled client of a pxm server's root (what ``--tiled-uri``/``--api-key`` open in every command).

    Parameters
    ----------
    uri
        Server URL, e.g. ``http://127.0.0.1:8000`` (default ``$PXM_TILED_URI``).
    api_key
        The server's API key (default ``$PXM_TILED_API_KEY``).

    Returns
    -------
    tiled.client.container.Container
        The root; ``client["raw"][uid]`` is a run, ``client["processed"]`` holds the results.

    Raises
    ------
    PxmError
        No URL or key, a malformed URL, a server that is down, a refused key.
    """
    from pxm.catalog import connect as catalog_connect

    with _as_pxm_error("runs"):
        return catalog_connect(_default_uri(uri, "runs"), _default_key(api_key, "runs"))


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """One run of ``/raw`` as ``pxm runs`` lists it."""

    uid: str
    scan_id: int | None
    plan_name: str | None
    sample_name: str | None
    status: str
    """``complete``, ``PARTIAL(...)`` or ``DAMAGED(...)`` (:meth:`pxm.catalog.RunCounts.status`)."""
    n_frames: int
    """Primary-stream frames in Tiled."""


@_shared_parameters
def runs(client: Any) -> list[RunInfo]:
    """The runs in the server's ``/raw`` catalog, oldest first (``pxm runs``).

    Parameters
    ----------
    {{client}}

    Returns
    -------
    list of RunInfo
        uid, scan id, plan, sample name, completeness and frame count of each run.
    """
    from pxm.catalog import ensure_layout, tiled_run_counts

    with _as_pxm_error("runs"):
        raw, _ = ensure_layout(client)
        out = []
        for uid in raw:
            counts = tiled_run_counts(raw[uid])
            start = counts.start
            sample = start.get("sample")
            out.append(RunInfo(uid=str(uid), scan_id=start.get("scan_id"), plan_name=start.get("plan_name"),
                               sample_name=sample.get("name") if isinstance(sample, dict) else sample,
                               status=counts.status(), n_frames=counts.primary_frames))
        return out


@dataclass(frozen=True, kw_only=True)
class Beamtime:
    """What :func:`simulate_beamtime` ran: run uids, and the live pipeline's final results."""

    uids: dict[str, str]
    """{``alignment``, ``forward_ptychography``, ``bragg_ptychography``: uid}, in the order they ran."""
    live_results: list[dict[str, Any]]
    """The live reconstruction's summaries (``final_key`` in ``/processed``, metrics); empty with ``live=False``."""
    probe_file: Path | None
    """The spiral's forward-ptychography probe file (``pxm reconstruct --probe-file``)."""


@_shared_parameters
def simulate_beamtime(server: TiledService | None = None, *, n_raster: int = 5, n_angles: int = 21,
                      roi_px: tuple[int, int] = (64, 64), n_spiral: int = 60, probe_iterations: int = 100,
                      live: bool = True, live_iterations: int | None = None, seed: int = 2021,
                      full: bool = False, timeout_s: float = 3600.0, tiled_uri: str | None = None,
                      api_key: str | None = None, data_dir: str | Path = "pxm-data") -> Beamtime:
    """Run ``pxm demo``'s simulated beamtime into a server started by :func:`serve`, or a running one by URL.

    Alignment rocking curve, a Siemens-star spiral and its forward ptychography (the probe file), then
    the Bragg-ptychography raster × rocking scan; with ``live`` the live reconstruction publishes its
    result to ``/processed``. Defaults are ``pxm demo``'s (:class:`pxm.demo.DemoOptions`).

    Parameters
    ----------
    {{server}}
    n_raster, n_angles, roi_px, n_spiral, probe_iterations, seed, full
        ``--raster``, ``--angles``, ``--roi``, spiral points, ``pxm probe --iterations``, ``--seed``, ``--full``.
    live, live_iterations
        Run the live reconstruction (``--no-live`` is False); its ePIE sweeps (``--live-iterations``).
    timeout_s
        Limit on waiting for the live final result.
    {{remote_server}}

    Returns
    -------
    Beamtime
        Run uids, live results and the probe file.
    """
    from pxm.catalog import ensure_layout
    from pxm.demo import DemoOptions, demo_live_options, run_beamtime

    with _as_pxm_error("demo"):
        opts = DemoOptions(full=full, seed=seed, n_raster=n_raster, n_angles=n_angles,
                           roi_px=(int(roi_px[0]), int(roi_px[1])), n_spiral=n_spiral,
                           probe_iterations=probe_iterations, live=live, live_iterations=live_iterations)
        cfg, client = _beamtime_target(server, tiled_uri, api_key, data_dir, "demo")
        raw, processed = ensure_layout(client)
        callback = None
        if live:
            from pxm.live.router import LiveReconstructionCallback

            callback = LiveReconstructionCallback(processed=processed, raw=raw,
                                                  options=demo_live_options(opts, cfg.data_dir / "figures"))
        probe: list[Path] = []

        def hand_over(probe_file: Path) -> None:        # the spiral's probe starts the live engine (as pxm demo)
            probe.append(probe_file)
            if callback is not None:
                callback.options = dataclasses.replace(callback.options, initial_probe_file=probe_file)

        from pxm.datadir import private_files

        with private_files():                           # detector files, JSONL: the user's only (as pxm demo)
            uids = run_beamtime(raw, cfg.raw_path, cfg.data_dir / "documents", opts, log=lambda *a, **k: None,
                                extra_callbacks=(callback,) if callback is not None else (),
                                probe_dir=cfg.data_dir / "probes", on_probe_file=hand_over)
            results = callback.wait(timeout_s) if callback is not None else []
        return Beamtime(uids=uids, live_results=list(results), probe_file=probe[0] if probe else None)


# ------------------------------------------------------------------------------------------ datasets
@_shared_parameters
def export(client: Any, run_uid: str, path: str | Path, *, allow_partial: bool = False) -> BraggDataset:
    """Export a Bragg-ptychography run from ``/raw`` to a dataset file (``pxm export``).

    Parameters
    ----------
    {{client}}
    run_uid
        The run's uid (``pxm runs`` lists them).
    path
        Dataset HDF5 file to write (docs/dataset-format.md §1).
    allow_partial
        Export a partial run with the frames it has (``--allow-partial``).

    Returns
    -------
    analysis.dataset.BraggDataset
        The dataset written.
    """
    from analysis.dataset import write_dataset
    from pxm.catalog import ensure_layout
    from pxm.run_export import ExportOptions, find_run, run_to_dataset

    with _as_pxm_error("export"):
        raw, _ = ensure_layout(client)
        ds = run_to_dataset(find_run(raw, run_uid), tiled_uri=_client_uri(client),
                            options=ExportOptions(allow_partial=allow_partial))
        write_dataset(path, ds)
        return ds


def load_dataset(path: str | Path) -> BraggDataset:
    """Read and validate a dataset file (``pxm export`` output, or imported from CXI/ptypy).

    Parameters
    ----------
    path
        Dataset HDF5 file.

    Returns
    -------
    analysis.dataset.BraggDataset
        Frames, angles, positions, mask, geometry and sample.
    """
    from analysis.dataset import read_dataset

    with _as_pxm_error("reconstruct"):
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file")
        return read_dataset(path)


def _client_uri(node: Any) -> str | None:
    """The server's URL (what ``--tiled-uri`` gives the command) of a Tiled client node, None if unknown."""
    api_uri = getattr(getattr(node, "context", None), "api_uri", None)
    if api_uri is not None:
        base = str(api_uri).rstrip("/")
        return base.removesuffix("/api/v1")
    uri = getattr(node, "uri", None)
    return str(uri) if uri is not None else None


# ------------------------------------------------------------------------------------------ reconstruction
def _recipe_namespace(recipe: str, *, recipe_file: str | Path | None, iterations: int | None, ml: int | None,
                      thickness_m: float | None, upsampling: int | None, fixed_probe: bool,
                      allow_undersampled: bool) -> argparse.Namespace:
    """The recipe options of ``pxm reconstruct`` as its parser leaves them (the rest at their defaults)."""
    return argparse.Namespace(recipe=recipe, recipe_file=recipe_file, iterations=iterations, ml=ml, support=None,
                              thickness_m=thickness_m, tilt_deg=None, shrinkwrap_threshold=None,
                              shrinkwrap_sigma_vox=None, no_shrinkwrap=False, upsampling=upsampling,
                              fixed_probe=fixed_probe, allow_undersampled=allow_undersampled)


@_shared_parameters
def reconstruct(data: BraggDataset | str | Path | Any, *, recipe: str | Recipe = "default",
                recipe_file: str | Path | None = None, iterations: int | None = None, ml: int | None = None,
                thickness_m: float | None = None, upsampling: int | None = None, fixed_probe: bool = False,
                allow_undersampled: bool = False, probe: str | Path | None = None,
                probe_na_mask_rad: tuple[float, float] | None = None, probe_recentre: bool = False,
                probe_blur_px: float = 0.0, backend: str = "auto", fsc: bool = False, fsc_seed: int = 0,
                prtf: int = 0, prtf_seed: int = 0, progress: bool = False, allow_partial: bool = False) -> Outcome:
    """Reconstruct a dataset or a Tiled run with a recipe (``pxm reconstruct``, without writing anything).

    Parameters
    ----------
    data
        A :class:`~analysis.dataset.BraggDataset`, a dataset file, or a run of ``/raw`` (``client["raw"][uid]``).
    recipe
        Preset name (``default``, ``seed``, ``quick``, ``baseline``; ``--recipe``) or a ready
        :class:`~analysis.bragg.engine.Recipe` (used as given, apart from the dataset's thickness/tilt/sampling).
    recipe_file, iterations, ml, thickness_m, upsampling, fixed_probe, allow_undersampled
        ``--recipe-file``, ``--iterations``, ``--ml``, ``--thickness-m``, ``--upsampling``, ``--fixed-probe``,
        ``--allow-undersampled`` (with a preset name).
    probe
        Probe file (``--probe-file``); None: the KB model probe with its NA mask.
    probe_na_mask_rad, probe_recentre, probe_blur_px
        ``--probe-na-mask V H`` (rad; a probe file gets no mask without it), ``--probe-recentre``,
        ``--probe-blur-px``.
    {{backend}}
    fsc, fsc_seed
        Also reconstruct two half-data sets for the FSC resolution (``--fsc``; 3× time); the seed of the
        binomial photon split (``--fsc-seed``).
    prtf, prtf_seed
        Also run ``prtf`` (>= 6) reconstructions from random starts for the PRTF (``--prtf K``; (K+1)× time) and
        their seed (``--prtf-seed``).
    progress
        Show a progress bar (the command does unless ``--no-progress``).
    allow_partial
        With a run: reconstruct a partial run from the frames it has (``--allow-partial``).

    Returns
    -------
    analysis.bragg.outcome.Outcome
        ``.result.object``/``.result.probe``, ``.strain`` (strain maps), ``.metrics``, ``.convergence``, ...;
        post-processing failures are in ``.postprocessing_errors``, not raised.
    """
    from analysis.bragg.recipes import GivenSupport
    from analysis.dataset import BraggDataset, read_dataset
    from pxm.recipe_args import PRESET_NAMES, recipe_from_args, resolve_for_dataset
    from pxm.reconstruction import ReconstructOptions, reconstruct_dataset

    with _as_pxm_error("reconstruct"):
        if isinstance(data, BraggDataset):
            dataset, source = data, str(data.provenance.get("source") or "a BraggDataset")
        elif isinstance(data, str | Path):
            if not Path(data).is_file():
                raise ValueError(f"{data}: no such file")
            dataset, source = read_dataset(data), str(data)
        elif hasattr(data, "metadata") and "start" in getattr(data, "metadata", {}):
            from pxm.run_export import ExportOptions, run_to_dataset

            dataset = run_to_dataset(data, tiled_uri=_client_uri(data), options=ExportOptions(
                allow_partial=allow_partial))
            source = f"raw/{data.metadata['start']['uid']} (Tiled key)"          # as `pxm reconstruct --run`
        else:
            raise ValueError(f"reconstruct: data is a {type(data).__name__}; give a BraggDataset, a dataset file "
                             "path or a run of /raw (client['raw'][uid])")
        if isinstance(recipe, str):
            ns = _recipe_namespace(recipe, recipe_file=recipe_file, iterations=iterations, ml=ml,
                                   thickness_m=thickness_m, upsampling=upsampling, fixed_probe=fixed_probe,
                                   allow_undersampled=allow_undersampled)
            if recipe not in PRESET_NAMES:
                raise ValueError(f"recipe {recipe!r}: expected one of {', '.join(PRESET_NAMES)}, or a Recipe")
            chosen, given = recipe_from_args(ns)
            name = recipe
        else:
            chosen, given, name = recipe, GivenSupport(), "custom"
        resolved = resolve_for_dataset(chosen, given, dataset, recipe_name=name)
        return reconstruct_dataset(dataset, recipe=resolved, recipe_name=name, probe_file=probe,
                                   dataset_source=source,
                                   options=ReconstructOptions(progress=progress, fsc=fsc, backend=backend,
                                                              fsc_split_seed=fsc_seed, prtf_runs=prtf,
                                                              prtf_seed=prtf_seed,
                                                              probe_na_mask_rad=probe_na_mask_rad,
                                                              probe_recentre=probe_recentre,
                                                              probe_blur_px=probe_blur_px))


@dataclass(frozen=True, kw_only=True)
class WrittenResults:
    """Files :func:`write_results` wrote, and the post-processing steps that failed."""

    results: Path
    cxi: Path | None
    figures: tuple[Path, ...]
    errors: dict[str, str]
    """Step → one line (as the command's ``warning: ... failed`` lines); empty when all went well."""


def write_results(outcome: Outcome, path: str | Path, *, cxi_path: str | Path | None = None,
                  figures_dir: str | Path | None = None) -> WrittenResults:
    """Write the results file (+ CXI, PNG figures) of a reconstruction (``pxm reconstruct -o/--cxi/--figures``).

    Parameters
    ----------
    outcome
        What :func:`reconstruct` returned.
    path
        Results HDF5 (docs/dataset-format.md §2); its folder must exist.
    cxi_path
        Also write the object and probe as CXI.
    figures_dir
        Also write PNG figures into this folder.

    Returns
    -------
    WrittenResults
        Paths written and failed post-processing steps (the file is complete either way).
    """
    from pxm.cli._common import check_output_path
    from pxm.reconstruction import write_outputs

    with _as_pxm_error("reconstruct"):
        check_output_path(Path(path), "-o")
        if cxi_path is not None:
            check_output_path(Path(cxi_path), "--cxi", inputs=(Path(path),))
        out = write_outputs(outcome, path, cxi_path=cxi_path, figures_dir=figures_dir)
        return WrittenResults(results=Path(out["results"]), cxi=out["cxi"], figures=tuple(out["figures"]),
                              errors=dict(out["errors"]))


@_shared_parameters
def publish(outcome: Outcome, client: Any, *, raw_uid: str, recipe_name: str | None = None) -> str:
    """Publish a reconstruction to ``/processed`` beside its raw run (``pxm reconstruct --publish``).

    Parameters
    ----------
    outcome
        What :func:`reconstruct` returned (the arrays come from it, not from a file).
    {{client}}
    raw_uid
        The raw run the result belongs to (must be in ``/raw``).
    recipe_name
        Recorded as the result's ``recipe`` (default: the outcome's recipe name).

    Returns
    -------
    str
        The result's key: ``client["processed"][key]`` holds ``object``, ``strain_zz``, ... (docs/tiled-layout.md).
    """
    from pxm.catalog import ensure_layout
    from pxm.publication import publish_outcome
    from pxm.run_export import find_run

    with _as_pxm_error("reconstruct"):
        raw, processed = ensure_layout(client)
        run = find_run(raw, raw_uid)
        uid = run.metadata["start"]["uid"]
        res = publish_outcome(processed, uid, outcome, raw_run=run,
                              postprocessing_errors=dict(outcome.postprocessing_errors),
                              extra_metadata={"recipe": recipe_name or outcome.recipe_name})
        return str(res.item["id"])


# ------------------------------------------------------------------------------------------ replay
def _live_callback(client: Any, *, publish: bool, iterations: int, ml: int, figures_dir: str | Path | None,
                   live_engine: bool, backend: str) -> tuple[Any, Any]:
    """(``/raw`` or None, the live reconstruction callback) of ``pxm replay`` and ``pxm live-consumer``."""
    from pxm.catalog import ensure_layout
    from pxm.live.options import LiveOptions, live_recipe
    from pxm.live.router import LiveReconstructionCallback

    raw = processed = None
    if client is not None:
        raw, processed = ensure_layout(client)
    options = LiveOptions(recipe=live_recipe(iterations, ml),
                          figures_dir=Path(figures_dir) if figures_dir is not None else None,
                          reconstruct_live=live_engine, backend=backend)
    return raw, LiveReconstructionCallback(processed=processed if publish else None, raw=raw, options=options)


@dataclass(frozen=True, kw_only=True)
class ReplayResult:
    """What :func:`replay` got from the live pipeline."""

    summaries: list[dict[str, Any]]
    """One per run replayed: ``uid``, ``metrics`` (``n_frames_used``, ``final_cost``, ...), ``final_key``."""
    outcome: Outcome | None
    """The last Bragg run's final result (None if the recording had none)."""
    written: WrittenResults | None
    """The results file, when ``output`` was given."""


@_shared_parameters
def replay(source: str | Path, *, client: Any = None, iterations: int = 6, ml: int = 0, publish: bool = False,
           output: str | Path | None = None, figures_dir: str | Path | None = None, live_engine: bool = True,
           backend: str = "auto", timeout_s: float | None = None) -> ReplayResult:
    """Push a recorded run through the live reconstruction (``pxm replay``).

    Parameters
    ----------
    source
        A ``<uid>.jsonl`` file (a :class:`~pathlib.Path`, or a str ending in ``.jsonl``), or a run uid in
        ``/raw`` of ``client``.
    client
        Root client (:func:`connect`): needed for a run uid and for ``publish``.
    {{live_recipe}}
    publish
        Publish previews and the final result to ``/processed`` (``--publish``).
    output
        Also write the final result to this results file (``-o``).
    {{figures_dir}}
    {{live_engine}}
    {{backend}}
    timeout_s
        Limit on waiting for the results (default :data:`pxm.live.REPLAY_TIMEOUT_S`).

    Returns
    -------
    ReplayResult
        Summaries, the final outcome and the file written.

    Raises
    ------
    PxmError
        A missing file or run, a recording cut off (no final result), a timeout.
    """
    from pxm.live.replay import REPLAY_TIMEOUT_S, jsonl_documents, replay_documents, tiled_documents

    with _as_pxm_error("replay"):
        is_file = isinstance(source, Path) or str(source).endswith(".jsonl")
        if publish and client is None:
            raise ValueError("--publish needs --tiled-uri URL and --api-key (the server to publish to)")
        if output is not None:
            from pxm.cli._common import check_output_path

            check_output_path(Path(output), "-o", inputs=(Path(source),) if is_file else ())
        raw, callback = _live_callback(client, publish=publish, iterations=iterations, ml=ml, figures_dir=figures_dir,
                                       live_engine=live_engine, backend=backend)
        docs: Iterable[tuple[str, dict]]
        if is_file:
            if not Path(source).is_file():
                raise ValueError(f"{source}: no such file")
            docs, where = jsonl_documents(source), str(Path(source).resolve())
        else:
            if raw is None:
                raise ValueError("RUN_UID needs --tiled-uri and --api-key")
            from pxm.run_export import find_run

            docs, where = tiled_documents(find_run(raw, str(source))), f"raw/{source}"
        summaries = replay_documents(docs, callback, timeout_s=timeout_s if timeout_s is not None
                                     else REPLAY_TIMEOUT_S)
        cut_off = [s.summary for s in callback.sessions if s.summary.get("status") == "aborted"]
        if cut_off:
            sm = cut_off[0]
            raise RuntimeError(f"run {sm['uid']} ended with exit_status '{sm.get('exit_status')}' "
                               f"({sm.get('reason')}); {sm.get('n_frames_measured')} frames replayed, no final "
                               "result (the live result is marked 'aborted'; docs/reliability.md)")
        finals = [s.final_result for s in callback.sessions if s.final_result is not None]
        outcome = None
        if finals:
            final = finals[-1]
            outcome = dataclasses.replace(final["outcome"], metrics=final["metrics"], timings_s=final["timings_s"])
        written = None
        if output is not None:
            if outcome is None:
                raise ValueError(f"{where}: no Bragg scan with a final result to write; replay a "
                                 "raster_rocking_scan run")
            from pxm.reconstruction import write_outputs

            out = write_outputs(outcome, output, dataset_source=where)
            written = WrittenResults(results=Path(out["results"]), cxi=None, figures=tuple(out["figures"]),
                                     errors=dict(out["errors"]))
        return ReplayResult(summaries=list(summaries), outcome=outcome, written=written)


# ------------------------------------------------------------------------------------------ probe
@dataclass(frozen=True, kw_only=True)
class SpiralProbe:
    """The beam-plane probe :func:`probe` retrieved from a spiral run (and the files it wrote)."""

    probe: Any
    """Complex (V, H) probe in the beam plane (numpy array)."""
    pixel_size_m: float
    """Its pixel size (m)."""
    metadata: dict[str, Any]
    """``raw_uid``, ``algorithm``, ``n_iterations``, energy and distance, ``tiled_uri`` (as in the probe file)."""
    error_history: Any
    """Forward-ptychography error per sweep."""
    path: Path | None
    """The probe file written (``pxm reconstruct --probe-file``), None without ``output``."""
    figures: tuple[Path, ...]
    """PNG figures written (``figures_dir``)."""

    def lines(self) -> list[str]:
        """What ``pxm probe`` prints: the file, the probe's shape and pixel, the final error; the figures."""
        head = f"wrote {self.path}: " if self.path is not None else ""
        return [f"{head}probe {self.probe.shape}, pixel {self.pixel_size_m * 1e9:.2f} nm, final error "
                f"{self.error_history[-1]:.4g}", *(f"wrote {f}" for f in self.figures)]


@_shared_parameters
def probe(client: Any, run_uid: str, *, output: str | Path | None = "probe.h5", iterations: int = 100,
          algorithm: str = "epie", figures_dir: str | Path | None = None, allow_partial: bool = False) -> SpiralProbe:
    """Forward ptychography of a ``spiral_probe_scan`` run → the beam's probe (``pxm probe``).

    Parameters
    ----------
    {{client}}
    run_uid
        uid of a ``spiral_probe_scan`` run in ``/raw``.
    output
        Probe file to write (``-o``; default ``probe.h5`` as the command); None: return the array only.
    iterations
        ePIE sweeps (``--iterations``, default 100 as in the seed).
    algorithm
        ``epie`` or ``mpie`` (``--algorithm``).
    {{figures_dir}}
    allow_partial
        Use a run without stop document or with frames missing (``--allow-partial``; refused by default).

    Returns
    -------
    SpiralProbe
        The probe array, its pixel size, metadata, error history, and the files written.
    """
    from analysis.bragg.probe_file import write_probe_file
    from pxm.catalog import ensure_layout
    from pxm.logbook_figures import check_figures_dir
    from pxm.reconstruction import probe_from_spiral_run
    from pxm.run_export import check_run_whole, find_run

    with _as_pxm_error("probe"):
        if algorithm not in ("epie", "mpie"):
            raise ValueError(f"algorithm {algorithm!r}: expected 'epie' or 'mpie'")
        check_figures_dir(figures_dir)
        if output is not None:
            from pxm.cli._common import check_output_path

            check_output_path(Path(output), "-o")
        raw, _ = ensure_layout(client)
        run = find_run(raw, run_uid)
        if not allow_partial:                           # as the command: no partial run unasked
            check_run_whole(run, run_uid)
        arr, px, md, err = probe_from_spiral_run(run, n_iterations=iterations, algorithm=algorithm,
                                                 allow_partial=allow_partial)
        md["tiled_uri"] = _client_uri(client)
        path = None
        if output is not None:
            path = Path(output)
            write_probe_file(path, arr, pixel_size_m=px, metadata=md, error_history=err)
        figures: list[Path] = []
        if figures_dir is not None:
            from pxm.logbook_figures import probe_figures

            figures = probe_figures(figures_dir, arr, pixel_size_m=px, run_uid=str(md.get("raw_uid") or run_uid),
                                    algorithm=algorithm, n_iterations=iterations, error_history=err)
        return SpiralProbe(probe=arr, pixel_size_m=px, metadata=md, error_history=err, path=path,
                           figures=tuple(Path(f) for f in figures))


# ------------------------------------------------------------------------------------------ recover
@dataclass(frozen=True, kw_only=True)
class RecoverReport:
    """What :func:`recover_runs` did with each run on disk (``pxm recover``'s lines)."""

    results: list[Any]
    """One :class:`pxm.recover.RecoverResult` per run: ``uid``, ``action`` (``ok``, ``added``, ``completed``,
    ``skipped``, ``failed``; ``would add``/``would complete`` in a dry run), ``detail``, ``counts``."""

    @property
    def tally(self) -> dict[str, int]:
        """Runs per action, in the order the actions first occur."""
        actions = dict.fromkeys(r.action for r in self.results)
        return {a: sum(r.action == a for r in self.results) for a in actions}

    @property
    def failed(self) -> list[Any]:
        """The runs that could not be recovered (the command then exits 1)."""
        return [r for r in self.results if r.action == "failed"]

    def lines(self) -> list[str]:
        """What ``pxm recover`` prints: one line per run, then the tally."""
        tally = self.tally
        return [*(r.line() for r in self.results),
                f"{len(self.results)} run(s) on disk: " + (", ".join(f"{n} {a}" for a, n in tally.items()) or "none")]


@_shared_parameters
def recover_runs(client: Any, *, data_dir: str | Path = "pxm-data", documents: str | Path | None = None,
            runs: Iterable[str] = (), settle_s: float = 30.0, dry_run: bool = False) -> RecoverReport:
    """Re-ingest runs into Tiled from their JSONL copies after an outage (``pxm recover``).

    A run Tiled holds whole is left alone, a missing one is added, a partial one rebuilt (docs/reliability.md);
    running it twice changes nothing the second time.

    Parameters
    ----------
    {{client}}
    data_dir
        The data folder the scans wrote to (``--data-dir``); its ``documents/`` holds ``<uid>.jsonl``.
    documents
        Folder of the JSONL copies instead (``--documents``).
    runs
        Only these uids (``--run``, repeatable).
    settle_s
        Skip runs whose JSONL changed less than this many seconds ago (``--settle-s``).
    dry_run
        Only say what would be done (``--dry-run``).

    Returns
    -------
    RecoverReport
        The per-run results (failed runs are in ``.failed``, not raised), ``.tally`` and ``.lines()``.
    """
    from pxm.catalog import ensure_layout
    from pxm.recover import RecoverOptions, check_documents_dir, recover_runs

    with _as_pxm_error("recover"):
        options = RecoverOptions(settle_s=settle_s, dry_run=dry_run)
        folder = check_documents_dir(Path(documents) if documents is not None else Path(data_dir) / "documents")
        raw, _ = ensure_layout(client)
        return RecoverReport(results=recover_runs(raw, folder, options, uids=tuple(runs)))


# ------------------------------------------------------------------------------------------ exchange formats
def import_ptypy_bragg(source: str | Path, output: str | Path, *, probe_out: str | Path | None = None,
                       upsampling: int | None = None) -> Any:
    """Convert a ptypy Bragg3dSimScan export into a dataset file and a probe file (``pxm import-ptypy-bragg``).

    Parameters
    ----------
    source
        The ptypy export (docs/dataset-format.md §5).
    output
        pxm dataset file to write (``-o``).
    probe_out
        Probe file to write (default: ``output`` with ``_probe`` before ``.h5``, as the command).
    upsampling
        U of the dataset's geometry (default: the smallest whose P2 holds the probe).

    Returns
    -------
    analysis.bragg.ptypy_bragg.ImportSummary
        Paths written, U, frame shape; ``.lines()`` is what the command prints.
    """
    from analysis.bragg.ptypy_bragg import import_ptypy_bragg as convert

    with _as_pxm_error("import-ptypy-bragg"):
        out = Path(output)
        return convert(source, out, probe_out if probe_out is not None else out.with_name(out.stem + "_probe.h5"),
                       upsampling=upsampling)


@dataclass(frozen=True, kw_only=True)
class ThinLayerRun:
    """What :func:`reconstruct_thin_layer` found and wrote."""

    path: Path
    """The result file written (``output``)."""
    result: Any
    """analysis.bragg.solvers.lattice.ThinLayerResult: object on the lattice, slab search, vectors."""
    options: Any
    """The ThinLayerOptions used (thicknesses from the sample's ``thickness_m`` when not given)."""
    probe_file: Path
    """The probe file held fixed."""
    probe_how: str
    """How the probe file was put on the engine's grid."""
    wall_s: float
    """Seconds of the slab search and the refinement."""

    def __fspath__(self) -> str:
        return str(self.path)

    def lines(self) -> list[str]:
        """What ``pxm reconstruct-thin-layer`` prints."""
        res, opts = self.result, self.options
        c = res.search.chosen
        ml = res.search.refinement
        return [
            f"probe: {self.probe_file} ({self.probe_how}), held fixed",
            f"{len(res.search.trials)} slabs tried ({', '.join(f'{t * 1e6:g}' for t in opts.thicknesses_m)} µm × "
            f"{opts.n_offsets} offsets, {opts.n_search_iterations} map iterations each); chosen: T = "
            f"{c.thickness_m * 1e6:.3g} µm, offset {c.offset_m * 1e9:+.0f} nm along n = "
            f"({', '.join(f'{v:.3f}' for v in res.normal)}), {c.n_voxels} voxels",
            f"slab picked by {res.search.score}; Poisson likelihood refinement: "
            + ("none" if ml is None else f"{ml.n_iterations} iterations, -log L {ml.nll_start:.6g} → {ml.nll_end:.6g}"),
            f"wrote {self.path}: R-factor {c.r_factor:.4g} after {opts.n_iterations} more iterations, "
            f"{self.wall_s:.1f} s",
        ]


def reconstruct_thin_layer(dataset: str | Path, probe_file: str | Path, output: str | Path, *,
                           thicknesses_m: tuple[float, ...] | list[float] | None = None, offsets: int = 12,
                           search_iterations: int = 20, iterations: int = 60, score: str = "auto",
                           ml_iterations: int = 50) -> ThinLayerRun:
    """Known probe, thin layer, slab found by the data, on the scan's natural lattice (``pxm reconstruct-thin-layer``).

    The solver alone (analysis.bragg.solvers.lattice); ``reconstruct(..., recipe="thin-layer")`` runs it through
    the whole pipeline (strain, figures, publication).

    Parameters
    ----------
    dataset
        pxm dataset file (a line scan along y).
    probe_file
        Probe file, held fixed (``--probe-file``).
    output
        Result HDF5 file to write (``-o``).
    thicknesses_m
        Slab thicknesses tried (default: 0.75/1/1.25 × the dataset's ``/sample`` thickness, else the solver's).
    offsets, search_iterations, iterations
        Slab offsets per thickness; map iterations per candidate slab; map iterations on the chosen slab.
    score
        ``auto``, ``r_factor`` or ``likelihood``: what ranks the candidate slabs.
    ml_iterations
        L-BFGS iterations of the Poisson refinement (photon-count data only; 0: none).
    """
    import time

    from analysis.bragg.probe_file import p2_from_probe_file, read_probe_file
    from analysis.bragg.solvers.lattice import ThinLayerOptions, write_thin_layer_result
    from analysis.bragg.solvers.lattice import reconstruct_thin_layer as solve
    from analysis.dataset import read_dataset, scan_axes
    from pxm.cli._common import check_output_path

    with _as_pxm_error("reconstruct-thin-layer"):
        check_output_path(Path(output), "-o", inputs=(Path(dataset), Path(probe_file)))
        if not Path(dataset).is_file():
            raise ValueError(f"{dataset}: no such file")
        ds = read_dataset(dataset)
        g = ds.geometry
        sample = dict(ds.sample) if isinstance(ds.sample, dict) else {}
        given: dict[str, Any] = {"thicknesses_m": tuple(thicknesses_m)} if thicknesses_m else {}
        opts = ThinLayerOptions.for_sample(sample, n_offsets=offsets, n_search_iterations=search_iterations,
                                           score=score, n_ml_iterations=ml_iterations, n_iterations=iterations,
                                           **given)
        p2, how = p2_from_probe_file(read_probe_file(probe_file), g)
        stage, _ = scan_axes(ds.rocking_angle_deg, ds.stage_position_m, g)
        t0 = time.perf_counter()
        res = solve(ds.frames, ds.detector_mask, stage, g, p2, g, sample=sample, options=opts)
        wall_s = time.perf_counter() - t0
        write_thin_layer_result(str(output), res, metadata={"dataset": str(dataset), "probe_file": str(probe_file),
                                                            "probe": how})
        return ThinLayerRun(path=Path(output), result=res, options=opts, probe_file=Path(probe_file),
                            probe_how=how, wall_s=wall_s)


@dataclass(frozen=True, kw_only=True)
class CxiExport:
    """The NeXus/CXI file :func:`export_cxi` wrote (a path-like: ``open(export)``, ``h5py.File(export)`` work)."""

    path: Path
    """The CXI file written (``output``)."""
    n_frames: int
    """Frames written: every (position, angle) of the scan."""
    frame_shape: tuple[int, int]
    """(rows, cols) of each frame."""
    layout: str
    """The dataset's scan layout (``grid`` or ``flat``)."""

    def __fspath__(self) -> str:
        return str(self.path)

    def lines(self) -> list[str]:
        """What ``pxm export-cxi`` prints."""
        rows, cols = self.frame_shape
        return [f"wrote {self.path}: NXcxi_ptycho (CXI 160), {self.n_frames} frames {rows}×{cols}, {self.layout} "
                "layout; required fields present"]


def export_cxi(dataset: str | Path, output: str | Path) -> CxiExport:
    """Write a dataset file as NeXus/CXI (``NXcxi_ptycho``) and check it (``pxm export-cxi``).

    Parameters
    ----------
    dataset
        pxm dataset file (:func:`export`).
    output
        CXI file to write (``.cxi`` or ``.nxs``).

    Returns
    -------
    CxiExport
        ``.path`` (``output``), frame count and shape, layout; checked against the class definition (a missing
        field raises :class:`PxmError`).
    """
    from analysis.cxi_nexus import check_nxcxi_ptycho, export_cxi_dataset
    from analysis.dataset import read_dataset

    with _as_pxm_error("export-cxi"):
        ds = read_dataset(dataset)
        export_cxi_dataset(output, ds)
        problems = check_nxcxi_ptycho(output)
        if problems:
            raise RuntimeError(f"{output}: written but not NXcxi_ptycho: {'; '.join(problems)}")
        rows, cols = (int(n) for n in ds.frames.shape[-2:])
        return CxiExport(path=Path(output), n_frames=int(math.prod(ds.frames.shape[:-2])), frame_shape=(rows, cols),
                         layout=str(ds.layout))


def import_cxi(source: str | Path, output: str | Path | None = None, *, upsampling: int | None = None,
               d_spacing_m: float | None = None) -> Any:
    """Read a NeXus/CXI ptychography scan (pxm's or another facility's) as a dataset (``pxm import-cxi``).

    Parameters
    ----------
    source
        CXI/NeXus file.
    output
        Dataset file to write (``-o``); None: only return the dataset.
    upsampling
        Virtual planes per measured rocking step (default: the file's, else 1).
    d_spacing_m
        Lattice-plane spacing (default: the file's, else Bragg's law at the measured 2θ).

    Returns
    -------
    analysis.cxi_nexus.CxiImportSummary
        ``.dataset``: the imported :class:`~analysis.dataset.BraggDataset` (ready for :func:`reconstruct`);
        ``.source`` (pxm's own record or the standard fields), ``.notes`` (how gaps were filled); ``.lines()`` is
        what the command prints.
    """
    from analysis.cxi_nexus import import_cxi_dataset
    from analysis.dataset import write_dataset

    with _as_pxm_error("import-cxi"):
        summary = import_cxi_dataset(source, upsampling=upsampling, d_spacing_m=d_spacing_m)
        if output is not None:
            write_dataset(output, summary.dataset)
        return summary


def export_vtk(results: str | Path, output: str | Path) -> Any:
    """Write a results file's object, strain and tilts as VTK for ParaView, in the sample frame (``pxm export-vtk``).

    Parameters
    ----------
    results
        Results file (:func:`write_results`).
    output
        ``F.vti`` (ImageData with a direction matrix, VTK >= 9) or ``F.vts`` (StructuredGrid).

    Returns
    -------
    analysis.vtk_export.VtkExport
        Path, kind, shape, arrays written and entries skipped; ``.lines()`` is what the command prints.
    """
    from analysis.vtk_export import export_results_vtk

    with _as_pxm_error("export-vtk"):
        return export_results_vtk(results, output)


# ------------------------------------------------------------------------------------------ polarization
@dataclass(frozen=True, kw_only=True)
class Polarization:
    """What :func:`polarization_maps` computed and wrote."""

    maps: Any
    """:class:`pxm.polarization.PolarizationMaps`: ``magnitude_c_per_m2``, ``polarization_c_per_m2``, ...,
    ``sample_check`` (how material/hkl compared with the results' sample)."""
    path: Path
    """The polarization file (never the results file)."""
    group: str
    """``/polarization/<strain frame>`` in it."""
    summary: dict[str, Any]
    """Voxels, mean and max |P| (C/m²), the numbers of symmetry-equivalent solutions."""
    figures: tuple[Path, ...]
    published_key: str | None
    """Key in ``/processed`` with ``publish``."""
    warning: str | None
    """The command's ``warning:`` line (a forced material/reflection mismatch), if any."""
    raw_uid: str
    """The raw run the maps belong to (``raw_uid``, else the results' provenance; empty if unknown)."""

    def lines(self) -> list[str]:
        """What ``pxm polarization`` prints on stdout: the file and summary, figures, the published key."""
        info = self.summary
        return [f"wrote {self.path}:{self.group}: {info['voxels']} voxels, mean |P| = "
                f"{info['mean_abs_p_c_per_m2']:.4f} C/m², max {info['max_abs_p_c_per_m2']:.4f} C/m²; each P is one of "
                f"{info['n_equivalent_values']} symmetry-equivalent solutions (one reflection cannot tell them apart)",
                *(f"wrote {f}" for f in self.figures),
                *([f"published /processed/{self.published_key} (raw_uid {self.raw_uid})"]
                  if self.published_key is not None else [])]


@_shared_parameters
def polarization_maps(results: str | Path, *, material: str, hkl: tuple[float, float, float],
                 strain_frame: str | None = None, output: str | Path | None = None, force: bool = False,
                 figures_dir: str | Path | None = None, publish: bool = False, client: Any = None,
                 raw_uid: str | None = None) -> Polarization:
    """Polarization maps from the strain maps of a results file, Landau-Ginzburg-Devonshire (``pxm polarization``).

    The material and reflection are checked against what the results record about their sample first
    (name, hkl, d-spacing within 1 %); a mismatch raises :class:`PxmError` unless ``force``.

    Parameters
    ----------
    results
        Results file of ``pxm reconstruct`` (or :func:`write_results`).
    material
        LGD coefficient set, e.g. ``BaTiO3``, ``PbTiO3``, ``SrTiO3`` (``--material``).
    hkl
        The measured reflection in the parent cubic frame (``--hkl``).
    strain_frame
        Which ``/strain`` map to invert (default: the first).
    output
        Polarization file (default ``RESULTS-polarization-MATERIAL-HKL.h5`` beside the results).
    force
        Invert despite a material/reflection mismatch (``--force``).
    {{figures_dir}}
    publish, client, raw_uid
        Also publish to ``/processed`` of ``client`` (``--publish``), beside ``raw_uid`` (default: the results'
        raw run).

    Returns
    -------
    Polarization
        The maps, the file and group written, the summary numbers, figures, the published key.
    """
    from analysis.dataset import read_results
    from pxm.logbook_figures import check_figures_dir
    from pxm.polarization import (
        default_output_path,
        polarization_from_results,
        publish_polarization,
        summary,
        write_polarization,
    )

    with _as_pxm_error("polarization"):
        results = Path(results)
        if not results.exists():
            raise ValueError(f"results file {results} does not exist")
        check_figures_dir(figures_dir)
        if publish and client is None:
            raise ValueError("--publish needs --tiled-uri and --api-key")
        maps = polarization_from_results(results, material=material, hkl=(float(hkl[0]), float(hkl[1]),
                                                                          float(hkl[2])),
                                         strain_frame=strain_frame, force=force)
        note = maps.sample_check.get("note")
        out = Path(output) if output is not None else default_output_path(results, maps)
        group = write_polarization(out, maps, source_results=results)
        uid = raw_uid or str(read_results(results)["provenance"].get("raw_uid") or "")
        figures: list[Path] = []
        if figures_dir is not None:
            from pxm.logbook_figures import polarization_figures

            figures = polarization_figures(figures_dir, maps, run_uid=uid, source=results.name)
        key = None
        if publish:
            from pxm.catalog import ensure_layout

            if not uid:
                raise ValueError("--publish: the results file records no raw run uid; pass --raw-uid")
            raw, processed = ensure_layout(client)
            node = publish_polarization(processed, uid, maps, raw_run=raw[uid] if uid in raw else None,
                                        source=str(results.resolve()))
            key = str(node.item["id"])
        return Polarization(maps=maps, path=out, group=group, summary=summary(maps),
                            figures=tuple(Path(f) for f in figures), published_key=key,
                            warning=str(note) if note else None, raw_uid=uid)


# ------------------------------------------------------------------------------------------ FP-DFXM
def simulate_fp_dfxm(server: TiledService, *, n_px: int = 32, grid: int = 5, step_px: int = 6,
                     kind: str = "rock_roll", seed: int = 6) -> str:
    """Acquire ``pxm dfxm-demo``'s simulated FP-DFXM scan into a server started by :func:`serve`.

    A BaTiO₃ (002) film behind the simulated FP-DFXM instrument, :func:`plans.fp_dfxm_scan` under the
    RunEngine into ``/raw``. ``pxm dfxm-demo`` is this and :func:`fp_reconstruct` of the run.

    Parameters
    ----------
    server
        A running :func:`serve` server: the camera writes into its raw folder.
    n_px, grid, step_px, kind, seed
        ``--n-px``, ``--grid`` (n × n diversity grid), ``--step-px``, ``--kind`` (``rock_roll``,
        ``two_theta_roll``, ``lens_translation``), ``--seed``.

    Returns
    -------
    str
        The run's uid in ``/raw``.
    """
    from pxm.catalog import ensure_layout
    from pxm.datadir import private_files
    from pxm.dfxm import DFXMDemoOptions, run_fp_dfxm_acquisition

    with _as_pxm_error("dfxm-demo"):
        opts = DFXMDemoOptions(n_px=n_px, n_side=grid, step_px=step_px, kind=kind, seed=seed)
        raw, _ = ensure_layout(server.client())
        cfg = server.config
        with private_files():                           # detector files, JSONL: the user's only (as the command)
            return run_fp_dfxm_acquisition(raw, cfg.raw_path, cfg.data_dir / "documents", opts,
                                           log=lambda *a, **k: None)


@dataclass(frozen=True, kw_only=True)
class FPReconstruction:
    """What :func:`fp_reconstruct` got: the reconstruction and where it went."""

    result: Any
    """:class:`pxm.dfxm.FPRunResult`: ``.result`` (object, pupil, ``zernike_rad``, ``error_history``),
    ``.misalignment`` (defocus, astigmatism, coma, ...), ``.maps`` (strain, tilts), ``.data``, ``.elapsed_s``."""
    published_key: str | None
    """Key in ``/processed`` (None with ``publish=False``)."""
    figures: tuple[Path, ...]
    published_uri: str | None = None
    """The published node's URL (None with ``publish=False``)."""

    def lines(self) -> list[str]:
        """What ``pxm fp-reconstruct`` prints: frames, time and error, Zernikes, misalignment, figures, the URL."""
        out = self.result
        m = out.misalignment
        return [f"reconstructed {out.data.frames.shape[0]} frames in {out.elapsed_s:.1f} s, final error "
                f"{out.result.error_history[-1]:.4g}",
                "Zernikes (rad): " + ", ".join(f"Z{j} {c:+.3f}" for j, c in out.result.zernike_rad.items()),
                f"defocus {m.defocus_m * 1e6:+.2f} µm, astigmatism {m.astigmatism_rad}, coma {m.coma_rad}, "
                f"spherical {m.spherical_rad:+.3f} rad",
                *(f"wrote {f}" for f in self.figures),
                *([f"published {self.published_uri}"] if self.published_uri is not None else [])]


@_shared_parameters
def fp_reconstruct(client: Any, run_uid: str, *, iterations: int = 150, fixed_pupil: bool = False,
                   publish: bool = True, figures_dir: str | Path | None = None) -> FPReconstruction:
    """Zernike-EPRY reconstruction of a recorded ``fp_dfxm_scan`` run, published (``pxm fp-reconstruct``).

    Parameters
    ----------
    {{client}}
    run_uid
        uid of an ``fp_dfxm_scan`` run in ``/raw``.
    iterations
        Zernike-EPRY sweeps (``--iterations``, default 150).
    fixed_pupil
        Do not refine the pupil aberrations (``--fixed-pupil``).
    publish
        Publish to ``/processed`` (``--no-publish`` is False).
    {{figures_dir}}

    Returns
    -------
    FPReconstruction
        The reconstruction with its read-outs, the published key and the figures.
    """
    from analysis.dfxm import FPOptions
    from pxm.catalog import ensure_layout
    from pxm.dfxm import publish_fp_run, reconstruct_fp_run
    from pxm.logbook_figures import check_figures_dir
    from pxm.run_export import find_run

    with _as_pxm_error("fp-reconstruct"):
        check_figures_dir(figures_dir)
        raw, processed = ensure_layout(client)
        run = find_run(raw, run_uid)
        out = reconstruct_fp_run(run, options=FPOptions(n_iterations=iterations, recover_pupil=not fixed_pupil))
        figures: list[Path] = []
        if figures_dir is not None:
            from pxm.logbook_figures import fp_figures

            figures = fp_figures(figures_dir, out)
        node = publish_fp_run(processed, run, out) if publish else None
        return FPReconstruction(result=out, published_key=str(node.item["id"]) if node is not None else None,
                                figures=tuple(Path(f) for f in figures),
                                published_uri=str(node.uri) if node is not None else None)


@dataclass(frozen=True, kw_only=True)
class Ferroelectric:
    """What :func:`simulate_ferroelectric` ran and found."""

    result: Any
    """:class:`pxm.ferroelectric.FerroelectricChainResult`: ``uids`` and ``fp_keys`` per variant, ``fp`` (each
    scan's reconstruction), ``maps`` (merged :class:`pxm.polarization.PolarizationMaps`), ``variant_label``,
    ``source_scan``, ``ambiguity``, ``polarization_key``, ``elapsed_s`` and the simulator's ``truth``."""
    figures: tuple[Path, ...]
    """PNG figures written (``figures_dir``)."""

    @property
    def uids(self) -> dict[str, str]:
        """Raw run uid per scanned variant (``c``, ``a``)."""
        return dict(self.result.uids)

    @property
    def polarization_key(self) -> str:
        """Key of the merged polarization maps in ``/processed``."""
        return str(self.result.polarization_key)


@_shared_parameters
def simulate_ferroelectric(server: TiledService | None = None, *, n_px: int = 32, grid: int = 5, step_px: int = 6,
                           kind: str = "rock_roll", iterations: int = 150, seed: int = 6, material: str = "BaTiO3",
                           stress_bump_mpa: float = 60.0, figures_dir: str | Path | None = None,
                           tiled_uri: str | None = None, api_key: str | None = None,
                           data_dir: str | Path = "pxm-data") -> Ferroelectric:
    """Run ``pxm dfxm-demo --ferroelectric``: c/a-domain film → two FP-DFXM scans → polarization maps in Tiled.

    One :func:`plans.fp_dfxm_scan` per domain variant (2θ set for its stress-free lattice), each reconstructed
    and published, inverted with the one-reflection LGD model and merged; the polarization maps go to
    ``/processed`` beside both raw runs (docs/polarization.md). The command's job,
    :func:`pxm.ferroelectric.run_ferroelectric_job`, with its defaults.

    Parameters
    ----------
    {{server}}
    n_px, grid, step_px, kind, iterations, seed
        Each FP scan's ``--n-px``, ``--grid`` (n × n diversity grid), ``--step-px``, ``--kind``, Zernike-EPRY
        sweeps (``--iterations``) and ``--seed``.
    material
        LGD coefficient set (``--material``).
    stress_bump_mpa
        Peak elastic stress along ĝ in the film (``--stress-bump-mpa``).
    {{figures_dir}}
    {{remote_server}}

    Returns
    -------
    Ferroelectric
        The chain's result (runs, reconstructions, merged maps, keys, truth) and the figures.
    """
    from pxm.catalog import ensure_layout
    from pxm.datadir import private_files
    from pxm.dfxm import DFXMDemoOptions
    from pxm.ferroelectric import FerroelectricDemoOptions, run_ferroelectric_job
    from pxm.logbook_figures import check_figures_dir

    with _as_pxm_error("dfxm-demo"):
        check_figures_dir(figures_dir)
        opts = FerroelectricDemoOptions(fp=DFXMDemoOptions(n_px=n_px, n_side=grid, step_px=step_px, kind=kind,
                                                           iterations=iterations, seed=seed),
                                        material=material, stress_bump_pa=stress_bump_mpa * 1e6)
        cfg, client = _beamtime_target(server, tiled_uri, api_key, data_dir, "dfxm-demo")
        raw, processed = ensure_layout(client)
        with private_files():                           # detector files, JSONL: the user's only (as the command)
            res, figures = run_ferroelectric_job(raw, processed, cfg.raw_path, cfg.data_dir / "documents", opts,
                                                 figures_dir=figures_dir, log=lambda *a, **k: None)
        return Ferroelectric(result=res, figures=tuple(figures))


# ------------------------------------------------------------------------------------------ general geometry
@dataclass(frozen=True, kw_only=True)
class GeometryBeamtime:
    """What :func:`simulate_general_geometry` ran and scored."""

    summary: dict[str, Any]
    """The command's JSON line: ``geometry``, ``uid`` (the run in ``/raw``; not with ``one_process``), ``n_frames``,
    ``frame_px``, ``recon_shape``, times (s), ``truth``, ``strain_rmse``, ``tilt_x_rmse_rad``, ``tilt_y_rmse_rad``,
    ``strain_median``, ``n_voxels``, ``r_factors``; with ``one_process`` also ``dataset``, ``diffractometer`` and
    ``control_without_e2_shear`` (the same file reconstructed without the rocking direction's e2 shear)."""

    @property
    def uid(self) -> str | None:
        """The Bragg run's uid in ``/raw`` (None with ``one_process``)."""
        return self.summary.get("uid")

    @property
    def strain_rmse(self) -> float:
        """Strain RMSE against the simulator's truth in the lit crystal (reflection frame)."""
        return float(self.summary["strain_rmse"])

    def lines(self) -> list[str]:
        """The verdict lines ``pxm demo --geometry NAME`` prints after the JSON line."""
        from pxm.geometry_demo import closing_lines_general

        return closing_lines_general(self.summary)


@_shared_parameters
def simulate_general_geometry(server: TiledService | None = None, *, geometry: str, n_raster: int = 3,
                              n_angles: int = 10, roi_px: int | tuple[int, int] = 20, seed: int = 2021,
                              one_process: bool = False, tiled_uri: str | None = None, api_key: str | None = None,
                              data_dir: str | Path = "pxm-data") -> GeometryBeamtime:
    """Run ``pxm demo --geometry NAME``: a small Bragg-ptychography beamtime in a general diffractometer geometry.

    Sim six-circle devices in the geometry run ``raster_rocking_scan`` under the RunEngine into ``/raw``; the run
    is exported, reconstructed (known probe) and its strain and tilts scored against the simulator's truth
    (:func:`pxm.geometry_demo.run_general_beamtime`, as the command). With ``one_process`` the science chain
    alone, without Bluesky/Tiled (``--one-process``: :func:`pxm.geometry_demo.run_general_geometry_demo`).

    Parameters
    ----------
    {{server}}
    geometry
        ``asymmetric-in-plane`` or ``asymmetric-out-of-plane`` (``--geometry``; docs/geometry.md).
    n_raster, n_angles, roi_px, seed
        ``--raster``, ``--angles`` (of 0.012°), ``--roi`` (one side, or equal (rows, cols)), ``--seed``.
    one_process
        Simulate, write ``DATA_DIR/geometry-NAME/dataset.h5``, reconstruct and score in this process
        (``--one-process``); ``server`` and ``tiled_uri`` are then not used (give none).
    {{remote_server}}

    Returns
    -------
    GeometryBeamtime
        The summary the command prints (``.summary``, ``.uid``, ``.strain_rmse``) and its verdict ``.lines()``.
    """
    with _as_pxm_error("demo"):
        if geometry == "symmetric":
            raise ValueError("geometry 'symmetric' is pxm demo's own beamtime: call pxm.simulate_beamtime, or choose "
                             "asymmetric-in-plane or asymmetric-out-of-plane")
        from pxm.geometry_demo import (
            GeneralDemoOptions,
            run_general_beamtime,
            run_general_geometry_demo,
            square_roi_px,
        )

        opts = GeneralDemoOptions(geometry=geometry, seed=seed, n_raster=n_raster, n_angles=n_angles,
                                  roi_px=square_roi_px(roi_px))
        if one_process:
            if server is not None or tiled_uri is not None:
                raise ValueError("one_process=True runs without Bluesky/Tiled; give no server or tiled_uri")
            return GeometryBeamtime(summary=run_general_geometry_demo(opts, Path(data_dir) / f"geometry-{geometry}"))
        from pxm.catalog import ensure_layout
        from pxm.datadir import private_files

        cfg, client = _beamtime_target(server, tiled_uri, api_key, data_dir, "demo")
        raw, _ = ensure_layout(client)
        with private_files():                           # detector files, JSONL: the user's only (as the command)
            return GeometryBeamtime(summary=run_general_beamtime(opts, raw_catalog=raw, raw_dir=cfg.raw_path,
                                                                 documents_dir=cfg.data_dir / "documents",
                                                                 log=lambda *a, **k: None))


# ------------------------------------------------------------------------------------------ live consumer
@_shared_parameters
def live_consumer(*, zmq: str | None = None, nats: str | None = None, client: Any = None, publish: bool = True,
                  once: bool = True, stream: str = "bluesky", subject: str = "events.>", iterations: int = 6,
                  ml: int = 0, figures_dir: str | Path | None = None, live_engine: bool = True,
                  backend: str = "auto", timeout_s: float | None = None) -> list[dict[str, Any]]:
    """Run the live reconstruction on a document stream until a Bragg run ends (``pxm live-consumer --once``).

    Blocks while it listens (in a notebook, run it in a thread); documents published by a RunEngine
    (:class:`pxm.transport.ZmqPublisher` through a bluesky 0MQ proxy, or NATS JetStream) are reconstructed
    as they arrive, with previews and the final result in ``/processed`` of ``client``.

    Parameters
    ----------
    zmq, nats
        Exactly one: the 0MQ proxy's out ``HOST:PORT`` (``--zmq``), or a NATS server URL (``--nats``; the
        stream is read from its first document).
    client
        Root client (:func:`connect`) to publish to; None: publish nowhere.
    publish
        Publish previews and results when a ``client`` is given.
    once
        Return after the first Bragg run's final result (``--once``; the API's default, unlike the command's);
        False: listen until interrupted (KeyboardInterrupt).
    stream, subject
        JetStream stream and subject filter (``--stream``, ``--subject``; ``nats`` only).
    {{live_recipe}}
    {{figures_dir}}
    {{live_engine}}
    {{backend}}
    timeout_s
        Limit on waiting for the final results after the run ended (``--timeout``).

    Returns
    -------
    list of dict
        One summary per Bragg run: ``uid``, ``metrics`` (``n_frames_used``, ``final_cost``, ...),
        ``final_key`` in ``/processed``, ``missing_frames``.
    """
    from pxm.live.feed import consume_live

    with _as_pxm_error("live-consumer"):
        _, callback = _live_callback(client, publish=publish, iterations=iterations, ml=ml, figures_dir=figures_dir,
                                     live_engine=live_engine, backend=backend)
        return consume_live(callback, zmq=zmq, nats=nats, stream=stream, subject=subject, once=once,
                            timeout_s=timeout_s)
