"""pxm's Python API: what each ``pxm`` command does, as functions for notebooks and scripts (docs/python-api.md).

Every function calls the same code as its command (one pipeline, never a second implementation):

==========================  ===========================  ===================================================
function                    command                      calls
==========================  ===========================  ===================================================
:func:`serve`               ``pxm serve``                :class:`pxm.catalog.TiledService`
:func:`connect`             ``--tiled-uri --api-key``    :func:`pxm.catalog.connect`
:func:`runs`                ``pxm runs``                 :func:`pxm.catalog.tiled_run_counts`
:func:`simulate_beamtime`   ``pxm demo``                 :func:`pxm.demo.run_beamtime` (+ live pipeline)
:func:`export`              ``pxm export``               :func:`pxm.run_export.run_to_dataset`, ``write_dataset``
:func:`load_dataset`        (``DATASET.h5``)             :func:`analysis.dataset.read_dataset`
:func:`reconstruct`         ``pxm reconstruct``          :func:`pxm.reconstruction.reconstruct_dataset`
:func:`write_results`       ``pxm reconstruct -o``       :func:`pxm.reconstruction.write_outputs`
:func:`publish`             ``pxm reconstruct --publish``:func:`pxm.publication.publish_outcome`
:func:`replay`              ``pxm replay``               :func:`pxm.live.replay_documents`
==========================  ===========================  ===================================================

Options are keyword-only with the commands' defaults. Whatever the command prints as
``pxm CMD: error: MESSAGE`` is raised here as :class:`PxmError` with the same one-line ``MESSAGE``.
``uri``/``api_key`` default to ``$PXM_TILED_URI``/``$PXM_TILED_API_KEY``, as the commands' options do.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analysis.bragg.outcome import Outcome
    from analysis.dataset import BraggDataset
    from analysis.engine import Recipe
    from pxm.catalog import TiledService

__all__ = ["PxmError", "RunInfo", "Beamtime", "WrittenResults", "ReplayResult", "API_KEY_ENV", "TILED_URI_ENV",
           "serve", "connect", "runs", "simulate_beamtime", "export", "load_dataset", "reconstruct",
           "write_results", "publish", "replay"]

API_KEY_ENV = "PXM_TILED_API_KEY"
"""Environment variable giving the default API key (as ``--api-key`` of the commands)."""
TILED_URI_ENV = "PXM_TILED_URI"
"""Environment variable giving the default server URL (as ``--tiled-uri`` of the commands)."""
_CLI_ERRORS = (ValueError, ConnectionError, RuntimeError, TimeoutError, OSError)
"""What :func:`pxm.cli.main` prints as one line; the API raises them as :class:`PxmError`."""


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


def runs(client: Any) -> list[RunInfo]:
    """The runs in the server's ``/raw`` catalog, oldest first (``pxm runs``).

    Parameters
    ----------
    client
        The root client (:func:`connect`, or ``service.client()`` of :func:`serve`).

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


def simulate_beamtime(server: TiledService, *, n_raster: int = 5, n_angles: int = 21,
                      roi_px: tuple[int, int] = (64, 64), n_spiral: int = 60, probe_iterations: int = 100,
                      live: bool = True, live_iterations: int | None = None, seed: int = 2021,
                      full: bool = False, timeout_s: float = 3600.0) -> Beamtime:
    """Run ``pxm demo``'s simulated beamtime into a server started by :func:`serve`.

    Alignment rocking curve, a Siemens-star spiral and its forward ptychography (the probe file), then
    the Bragg-ptychography raster × rocking scan; with ``live`` the live reconstruction publishes its
    result to ``/processed``. Defaults are ``pxm demo``'s (:class:`pxm.demo.DemoOptions`).

    Parameters
    ----------
    server
        A running :func:`serve` server: the simulated detector writes into its raw folder.
    n_raster, n_angles, roi_px, n_spiral, probe_iterations, seed, full
        ``--raster``, ``--angles``, ``--roi``, spiral points, ``pxm probe --iterations``, ``--seed``, ``--full``.
    live, live_iterations
        Run the live reconstruction (``--no-live`` is False); its ePIE sweeps (``--live-iterations``).
    timeout_s
        Limit on waiting for the live final result.

    Returns
    -------
    Beamtime
        Run uids, live results and the probe file.
    """
    from pxm.demo import DemoOptions, demo_live_options, run_beamtime

    with _as_pxm_error("demo"):
        opts = DemoOptions(full=full, seed=seed, n_raster=n_raster, n_angles=n_angles,
                           roi_px=(int(roi_px[0]), int(roi_px[1])), n_spiral=n_spiral,
                           probe_iterations=probe_iterations, live=live, live_iterations=live_iterations)
        cfg = server.config
        client = server.client()
        from pxm.catalog import ensure_layout

        raw, processed = ensure_layout(client)
        callback = None
        if live:
            from pxm.live import LiveReconstructionCallback

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
def export(client: Any, run_uid: str, path: str | Path, *, allow_partial: bool = False) -> BraggDataset:
    """Export a Bragg-ptychography run from ``/raw`` to a dataset file (``pxm export``).

    Parameters
    ----------
    client
        The root client (:func:`connect`).
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


def reconstruct(data: BraggDataset | str | Path | Any, *, recipe: str | Recipe = "default",
                recipe_file: str | Path | None = None, iterations: int | None = None, ml: int | None = None,
                thickness_m: float | None = None, upsampling: int | None = None, fixed_probe: bool = False,
                allow_undersampled: bool = False, probe: str | Path | None = None,
                probe_na_mask_rad: tuple[float, float] | None = None, probe_recentre: bool = False,
                probe_blur_px: float = 0.0, backend: str = "auto", fsc: bool = False, progress: bool = False,
                allow_partial: bool = False) -> Outcome:
    """Reconstruct a dataset or a Tiled run with a recipe (``pxm reconstruct``, without writing anything).

    Parameters
    ----------
    data
        A :class:`~analysis.dataset.BraggDataset`, a dataset file, or a run of ``/raw`` (``client["raw"][uid]``).
    recipe
        Preset name (``default``, ``seed``, ``quick``, ``baseline``; ``--recipe``) or a ready
        :class:`~analysis.engine.Recipe` (used as given, apart from the dataset's thickness/tilt/sampling).
    recipe_file, iterations, ml, thickness_m, upsampling, fixed_probe, allow_undersampled
        ``--recipe-file``, ``--iterations``, ``--ml``, ``--thickness-m``, ``--upsampling``, ``--fixed-probe``,
        ``--allow-undersampled`` (with a preset name).
    probe
        Probe file (``--probe-file``); None: the KB model probe with its NA mask.
    probe_na_mask_rad, probe_recentre, probe_blur_px
        ``--probe-na-mask V H`` (rad; a probe file gets no mask without it), ``--probe-recentre``,
        ``--probe-blur-px``.
    backend
        ``auto``, ``numpy`` or ``cupy`` (``--backend``).
    fsc
        Also reconstruct two half-data sets for the FSC resolution (``--fsc``; 3× time).
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
    from analysis.dataset import BraggDataset, read_dataset
    from analysis.recipes import GivenSupport
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
    from pxm.cli import check_output_path
    from pxm.reconstruction import write_outputs

    with _as_pxm_error("reconstruct"):
        check_output_path(Path(path), "-o")
        if cxi_path is not None:
            check_output_path(Path(cxi_path), "--cxi", inputs=(Path(path),))
        out = write_outputs(outcome, path, cxi_path=cxi_path, figures_dir=figures_dir)
        return WrittenResults(results=Path(out["results"]), cxi=out["cxi"], figures=tuple(out["figures"]),
                              errors=dict(out["errors"]))


def publish(outcome: Outcome, client: Any, *, raw_uid: str, recipe_name: str | None = None) -> str:
    """Publish a reconstruction to ``/processed`` beside its raw run (``pxm reconstruct --publish``).

    Parameters
    ----------
    outcome
        What :func:`reconstruct` returned (the arrays come from it, not from a file).
    client
        The root client (:func:`connect`).
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
@dataclass(frozen=True, kw_only=True)
class ReplayResult:
    """What :func:`replay` got from the live pipeline."""

    summaries: list[dict[str, Any]]
    """One per run replayed: ``uid``, ``metrics`` (``n_frames_used``, ``final_cost``, ...), ``final_key``."""
    outcome: Outcome | None
    """The last Bragg run's final result (None if the recording had none)."""
    written: WrittenResults | None
    """The results file, when ``output`` was given."""


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
    iterations, ml
        ePIE sweeps and ML iterations of the live recipe (``--iterations``, ``--ml``; defaults 6 and 0).
    publish
        Publish previews and the final result to ``/processed`` (``--publish``).
    output
        Also write the final result to this results file (``-o``).
    figures_dir
        Write PNG figures into this folder (``--figures``).
    live_engine
        Reconstruct while frames arrive (False: assemble only, reconstruct after the stop; ``--no-live-engine``).
    backend
        ``auto``, ``numpy`` or ``cupy``.
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
    from pxm.catalog import ensure_layout
    from pxm.live import (
        REPLAY_TIMEOUT_S,
        LiveOptions,
        LiveReconstructionCallback,
        jsonl_documents,
        live_recipe,
        replay_documents,
        tiled_documents,
    )

    with _as_pxm_error("replay"):
        is_file = isinstance(source, Path) or str(source).endswith(".jsonl")
        if publish and client is None:
            raise ValueError("--publish needs --tiled-uri URL and --api-key (the server to publish to)")
        if output is not None:
            from pxm.cli import check_output_path

            check_output_path(Path(output), "-o", inputs=(Path(source),) if is_file else ())
        raw = processed = None
        if client is not None:
            raw, processed = ensure_layout(client)
        options = LiveOptions(recipe=live_recipe(iterations, ml),
                              figures_dir=Path(figures_dir) if figures_dir is not None else None,
                              reconstruct_live=live_engine, backend=backend)
        callback = LiveReconstructionCallback(processed=processed if publish else None, raw=raw, options=options)
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
