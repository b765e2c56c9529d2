"""A caproto IOC that serves pxm's EPICS devices on loopback: motor-record-like axes and a ring current.

Run it as a process (``python -m testing.epics_ioc --prefix PXMTEST: --interfaces 127.0.0.1``) with
``EPICS_CA_SERVER_PORT`` set; :func:`serve_ioc` does that for tests and waits until the PVs answer.

PVs under ``<prefix>`` (what ``devices.motion.Goniometer``, ``devices.motion.PiezoStage``,
``devices.motion.SixCircle``, ``devices.dfxm.DFXMGoniometer``, ``devices.dfxm.CRLStage`` and
``devices.beam.BeamMonitor`` connect to):

* ``GONIO:THETA``, ``GONIO:TTH`` (deg), ``STAGE:X``, ``STAGE:Y``, ``STAGE:Z`` (um): the fields of a motor
  record that ``ophyd.EpicsMotor`` reads (``.VAL .RBV .DMOV .MOVN .HLM .LLM .HLS .LLS .TDIR .STOP .VELO
  .ACCL .EGU .OFF .DIR .FOFF .SET .HOMF .HOMR``);
* ``SIX:MU``, ``SIX:ETA``, ``SIX:CHI``, ``SIX:PHI``, ``SIX:NU``, ``SIX:DELTA`` (deg): the circles of
  ``devices.motion.SixCircle`` (prefix ``<prefix>SIX:``), the 4S+2D diffractometer of a general geometry;
* ``DFXM:THETA``, ``DFXM:CHI``, ``DFXM:TTH`` (deg): ``devices.dfxm.DFXMGoniometer`` (prefix ``<prefix>DFXM:``);
  ``CRL:X``, ``CRL:Y``, ``CRL:Z`` (um), ``CRL:PITCH``, ``CRL:YAW`` (mrad): ``devices.dfxm.CRLStage``
  (prefix ``<prefix>CRL:``), all with the same motor-record fields;
* ``RING:CURRENT`` (mA): the storage-ring current, writable so that a test can dump the beam.

Motor behaviour follows the EPICS motor record where ophyd depends on it: a put to ``.VAL`` outside
[``.LLM``, ``.HLM``] is refused by the IOC (``.VAL``'s control limits are the soft limits, so ophyd's
``EpicsMotor.check_value`` raises ``LimitError`` before anything is sent); an accepted put drops ``.DMOV``
to 0, moves ``.RBV`` towards the target at ``.VELO`` egu/s and raises ``.DMOV`` back to 1 at the end, even
for a zero-length move; a new target while moving retargets; ``.STOP`` = 1 ends the motion where it is
and sets ``.VAL`` to ``.RBV``. Acceleration, backlash, dial/user offsets and homing are not modelled.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty, run

TICK_S = 0.02
"""Interval between ``.RBV`` updates during a move (s)."""
NOMINAL_CURRENT_MA = 200.0
"""Ring current the IOC starts with (mA)."""


class MotorAxis(PVGroup):
    """One motor-record-like axis (fields of ``ophyd.EpicsMotor``) moving at a finite velocity.

    Parameters
    ----------
    egu
        Engineering units of positions (``.EGU`` and the ``units`` of ``.VAL``/``.RBV``).
    limits_egu
        (low, high) soft limits: ``.LLM``, ``.HLM`` and the control limits of ``.VAL``.
    velocity_egu_per_s
        ``.VELO``: speed of every move.
    initial_egu
        Starting ``.VAL`` and ``.RBV``.
    """

    val = pvproperty(name=".VAL", value=0.0, precision=6, doc="User desired value")
    rbv = pvproperty(name=".RBV", value=0.0, precision=6, read_only=True, doc="User readback value")
    dmov = pvproperty(name=".DMOV", value=1, read_only=True, doc="Done moving to value")
    movn = pvproperty(name=".MOVN", value=0, read_only=True, doc="Motor is moving")
    hlm = pvproperty(name=".HLM", value=0.0, precision=6, doc="User high limit")
    llm = pvproperty(name=".LLM", value=0.0, precision=6, doc="User low limit")
    hls = pvproperty(name=".HLS", value=0, read_only=True, doc="At high limit switch")
    lls = pvproperty(name=".LLS", value=0, read_only=True, doc="At low limit switch")
    tdir = pvproperty(name=".TDIR", value=0, read_only=True, doc="Direction of travel (1: positive)")
    stop = pvproperty(name=".STOP", value=0, doc="Stop")
    velo = pvproperty(name=".VELO", value=1.0, precision=6, doc="Velocity (egu/s)")
    accl = pvproperty(name=".ACCL", value=0.0, precision=3, doc="Seconds to velocity (not modelled)")
    egu = pvproperty(name=".EGU", value="", dtype=ChannelType.STRING, doc="Engineering units")
    off = pvproperty(name=".OFF", value=0.0, doc="User offset (not modelled)")
    dir = pvproperty(name=".DIR", value=0, doc="User direction (not modelled)")
    foff = pvproperty(name=".FOFF", value=0, doc="Offset freeze switch (not modelled)")
    set = pvproperty(name=".SET", value=0, doc="Set/use switch (not modelled)")
    homf = pvproperty(name=".HOMF", value=0, doc="Home forward (not modelled)")
    homr = pvproperty(name=".HOMR", value=0, doc="Home reverse (not modelled)")

    def __init__(self, *args: Any, egu: str, limits_egu: tuple[float, float], velocity_egu_per_s: float,
                 initial_egu: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        low, high = (float(v) for v in limits_egu)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"{self.prefix}: limits_egu must be finite with low < high, got {limits_egu!r}")
        if not (math.isfinite(velocity_egu_per_s) and velocity_egu_per_s > 0):
            raise ValueError(f"{self.prefix}: velocity_egu_per_s must be > 0, got {velocity_egu_per_s!r}")
        if not low <= initial_egu <= high:
            raise ValueError(f"{self.prefix}: initial_egu {initial_egu} lies outside the limits [{low}, {high}]")
        self.egu_name = egu
        self.limits_egu = (low, high)
        self.velocity_egu_per_s = float(velocity_egu_per_s)
        self.initial_egu = float(initial_egu)
        self._targets: asyncio.Queue[float] | None = None
        self._stop_requested = False

    @val.startup  # type: ignore[no-redef]
    async def val(self, instance: Any, async_lib: Any) -> None:
        """Publish units, limits, velocity and the start position, then run the motion loop forever."""
        low, high = self.limits_egu
        self._targets = asyncio.Queue()
        for pv in (self.val, self.rbv, self.hlm, self.llm):
            await pv.write_metadata(units=self.egu_name)
        await self.egu.write(self.egu_name)
        await self.velo.write(self.velocity_egu_per_s)
        await self.llm.write(low, verify_value=False)
        await self.hlm.write(high, verify_value=False)
        await self.val.write_metadata(lower_ctrl_limit=low, upper_ctrl_limit=high)
        await self.val.write(self.initial_egu, verify_value=False)
        await self.rbv.write(self.initial_egu)
        while True:
            await self._move(await self._targets.get())

    @val.putter  # type: ignore[no-redef]
    async def val(self, instance: Any, value: float) -> float:
        """Accept a target inside [LLM, HLM] (caproto checks the control limits first) and queue the move."""
        if self._targets is None:
            raise RuntimeError(f"{self.prefix}.VAL: the motion loop has not started yet; retry")
        self._stop_requested = False
        self._targets.put_nowait(float(value))
        return value

    @stop.putter  # type: ignore[no-redef]
    async def stop(self, instance: Any, value: int) -> int:
        """STOP = 1 ends the current move where it is; the field reads 0 again at once (like the record)."""
        if value:
            self._stop_requested = True
        return 0

    @hlm.putter  # type: ignore[no-redef]
    async def hlm(self, instance: Any, value: float) -> float:
        """Move the high soft limit; ``.VAL``'s upper control limit follows (ophyd reads limits there)."""
        if not value > self.llm.value:
            raise ValueError(f"{self.prefix}.HLM: {value} must exceed .LLM = {self.llm.value}")
        await self.val.write_metadata(upper_ctrl_limit=float(value))
        return value

    @llm.putter  # type: ignore[no-redef]
    async def llm(self, instance: Any, value: float) -> float:
        """Move the low soft limit; ``.VAL``'s lower control limit follows."""
        if not value < self.hlm.value:
            raise ValueError(f"{self.prefix}.LLM: {value} must lie below .HLM = {self.hlm.value}")
        await self.val.write_metadata(lower_ctrl_limit=float(value))
        return value

    async def _move(self, target_egu: float) -> None:
        """Drive ``.RBV`` to ``target_egu`` at ``.VELO``; DMOV 1 → 0 → 1 around it (also for no motion)."""
        assert self._targets is not None   # set by the startup hook that calls this
        await self.dmov.write(0)
        await self.movn.write(1)
        position = float(self.rbv.value)
        while True:
            await self.tdir.write(1 if target_egu >= position else 0)
            step_egu = max(float(self.velo.value), 1e-12) * TICK_S
            while not self._stop_requested and self._targets.empty() and position != target_egu:
                await asyncio.sleep(TICK_S)
                remaining = target_egu - position
                position = target_egu if abs(remaining) <= step_egu else position + math.copysign(step_egu, remaining)
                await self.rbv.write(position)
            if self._stop_requested:
                self._stop_requested = False
                while not self._targets.empty():
                    self._targets.get_nowait()
                await self.val.write(position, verify_value=False)   # the record sets VAL = RBV on a stop
                break
            if self._targets.empty():
                break
            target_egu = self._targets.get_nowait()                   # retarget without ending the move
        await self.movn.write(0)
        await self.dmov.write(1)


class RingCurrent(PVGroup):
    """The storage-ring current (mA); writable so a test can simulate a beam dump and a refill."""

    current = pvproperty(name="CURRENT", value=NOMINAL_CURRENT_MA, precision=3, units="mA",
                         lower_ctrl_limit=0.0, upper_ctrl_limit=1000.0, doc="Ring current (mA)")


class BeamlineIOC(PVGroup):
    """The EPICS side of one pxm Bragg-ptychography beamline: goniometer, piezo stage, ring current.

    Limits match the sim twins' defaults (``SimGoniometer``, ``SimPiezoStage``; ``SimSixCircle``,
    ``SimDFXMGoniometer``, ``SimCRLStage`` in :class:`GeneralBeamlineIOC`). Velocities are realistic for a
    piezo stage (50 um/s) and quick for the angles (20 deg/s goniometer, 50 deg/s six-circle) so that tests
    stay short.
    """

    theta = SubGroup(MotorAxis, prefix="GONIO:THETA", egu="deg", limits_egu=(-10.0, 100.0),
                     velocity_egu_per_s=20.0)
    tth = SubGroup(MotorAxis, prefix="GONIO:TTH", egu="deg", limits_egu=(-5.0, 170.0), velocity_egu_per_s=40.0)
    x = SubGroup(MotorAxis, prefix="STAGE:X", egu="um", limits_egu=(-100.0, 100.0), velocity_egu_per_s=50.0)
    y = SubGroup(MotorAxis, prefix="STAGE:Y", egu="um", limits_egu=(-100.0, 100.0), velocity_egu_per_s=50.0)
    z = SubGroup(MotorAxis, prefix="STAGE:Z", egu="um", limits_egu=(-100.0, 100.0), velocity_egu_per_s=50.0)
    ring = SubGroup(RingCurrent, prefix="RING:")


class GeneralBeamlineIOC(BeamlineIOC):
    """:class:`BeamlineIOC` plus the six-circle diffractometer and the FP-DFXM axes (``--general``).

    Kept apart so that the Bragg beamline's IOC stays as small as a beamline's: every motor axis adds work to
    the one asyncio loop that also serves ``RING:CURRENT``, and the beam-dump test times a suspension against
    that PV (with these 14 axes more, its monitor arrived late enough to move the suspension past the frame's
    'read' in 2 of 3 runs on the 2-core sandbox, 2026-12-07).
    """

    # the 4S+2D six-circle diffractometer of a general geometry (devices.motion.SixCircle, docs/geometry.md)
    mu = SubGroup(MotorAxis, prefix="SIX:MU", egu="deg", limits_egu=(-180.0, 180.0), velocity_egu_per_s=50.0)
    eta = SubGroup(MotorAxis, prefix="SIX:ETA", egu="deg", limits_egu=(-180.0, 180.0), velocity_egu_per_s=50.0)
    chi = SubGroup(MotorAxis, prefix="SIX:CHI", egu="deg", limits_egu=(-180.0, 180.0), velocity_egu_per_s=50.0)
    phi = SubGroup(MotorAxis, prefix="SIX:PHI", egu="deg", limits_egu=(-180.0, 180.0), velocity_egu_per_s=50.0)
    nu = SubGroup(MotorAxis, prefix="SIX:NU", egu="deg", limits_egu=(-180.0, 180.0), velocity_egu_per_s=50.0)
    delta = SubGroup(MotorAxis, prefix="SIX:DELTA", egu="deg", limits_egu=(-180.0, 180.0), velocity_egu_per_s=50.0)
    # FP-DFXM: the DFXM goniometer and the objective-lens (CRL) stage (devices.dfxm)
    dfxm_theta = SubGroup(MotorAxis, prefix="DFXM:THETA", egu="deg", limits_egu=(-10.0, 100.0),
                          velocity_egu_per_s=20.0)
    dfxm_chi = SubGroup(MotorAxis, prefix="DFXM:CHI", egu="deg", limits_egu=(-10.0, 10.0), velocity_egu_per_s=5.0)
    dfxm_tth = SubGroup(MotorAxis, prefix="DFXM:TTH", egu="deg", limits_egu=(-5.0, 170.0), velocity_egu_per_s=40.0)
    crl_x = SubGroup(MotorAxis, prefix="CRL:X", egu="um", limits_egu=(-2000.0, 2000.0), velocity_egu_per_s=500.0)
    crl_y = SubGroup(MotorAxis, prefix="CRL:Y", egu="um", limits_egu=(-2000.0, 2000.0), velocity_egu_per_s=500.0)
    crl_z = SubGroup(MotorAxis, prefix="CRL:Z", egu="um", limits_egu=(-2000.0, 2000.0), velocity_egu_per_s=500.0)
    crl_pitch = SubGroup(MotorAxis, prefix="CRL:PITCH", egu="mrad", limits_egu=(-5.0, 5.0), velocity_egu_per_s=2.0)
    crl_yaw = SubGroup(MotorAxis, prefix="CRL:YAW", egu="mrad", limits_egu=(-5.0, 5.0), velocity_egu_per_s=2.0)


def main(argv: list[str] | None = None) -> None:
    """Serve :class:`BeamlineIOC` until killed (port from ``EPICS_CA_SERVER_PORT``)."""
    parser = argparse.ArgumentParser(description=BeamlineIOC.__doc__)
    parser.add_argument("--prefix", required=True, help="PV prefix, e.g. PXMTEST:")
    parser.add_argument("--interfaces", nargs="+", default=["127.0.0.1"], help="addresses to listen on")
    parser.add_argument("--general", action="store_true",
                        help="also serve the six-circle and FP-DFXM axes (GeneralBeamlineIOC)")
    args = parser.parse_args(argv)
    ioc = (GeneralBeamlineIOC if args.general else BeamlineIOC)(prefix=args.prefix)
    run(ioc.pvdb, module_name="caproto.asyncio.server", interfaces=args.interfaces)


# --- the process, for tests -------------------------------------------------------------------------------
def free_loopback_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (CA serves searches on UDP, circuits on TCP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no port free for both TCP and UDP on 127.0.0.1 after 50 tries")


def loopback_ca_environment(server_port: int, repeater_port: int) -> dict[str, str]:
    """The Channel Access variables that keep servers and clients on 127.0.0.1 and the given ports."""
    return {"EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_SERVER_PORT": str(server_port), "EPICS_CA_REPEATER_PORT": str(repeater_port),
            "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1"}


@dataclass(frozen=True)
class IOCProcess:
    """A running :class:`BeamlineIOC` process and how to reach it."""

    prefix: str
    environment: dict[str, str]
    """The CA variables of :func:`loopback_ca_environment` that clients must use."""
    process: subprocess.Popen[bytes]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc``, kill it if it has not exited 10 s later, and reap it."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def environ_set(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in ``os.environ`` until the block ends, then restore each one (or remove it if unset)."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def serve_ioc(prefix: str, environment: Mapping[str, str], *, startup_timeout_s: float = 30.0,
              general: bool = False) -> Iterator[IOCProcess]:
    """Run :class:`BeamlineIOC` (``general``: :class:`GeneralBeamlineIOC`) as ``python -m testing.epics_ioc``
    until the block ends; wait for its PVs.

    Readiness is a Channel Access read of ``<prefix>RING:CURRENT`` through caproto's sync client with
    ``environment`` (the read blocks this thread only). Raises RuntimeError, with the IOC's output, if the
    process exits or does not answer within ``startup_timeout_s``.
    """
    from caproto.sync.client import read

    env = {**os.environ, **environment, "PYTHONUNBUFFERED": "1"}
    log = tempfile.TemporaryFile()              # a file, not a pipe: a chatty IOC never blocks on output
    proc = subprocess.Popen([sys.executable, "-m", "testing.epics_ioc", "--prefix", prefix, "--interfaces",
                             "127.0.0.1", *(["--general"] if general else [])],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout_s
        with environ_set(environment):          # caproto's sync client reads the CA variables from here
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    out = log.read().decode(errors="replace")
                    raise RuntimeError(f"IOC process exited with {proc.returncode} before serving:\n{out}")
                try:
                    read(f"{prefix}RING:CURRENT", timeout=1.0)
                    break
                except Exception as exc:        # noqa: BLE001 - not up yet: caproto raises several types
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"IOC at {prefix} did not answer within {startup_timeout_s} s "
                                           f"({exc!r})") from None
        yield IOCProcess(prefix=prefix, environment=dict(environment), process=proc)
    finally:
        stop_process(proc)
        log.close()



@contextmanager
def loopback_ioc(prefix_stem: str, *, general: bool = False) -> Iterator[IOCProcess]:
    """An IOC process on two free loopback ports with a fresh PV prefix, this process's CA client pointed at it.

    Parameters
    ----------
    prefix_stem
        The start of the PV prefix (``"PXMT"`` gives e.g. ``"PXMT3F9A0C:"``): each IOC's PV names are unique, so
        no CA client can reach another test's IOC.
    general
        Serve :class:`GeneralBeamlineIOC` (six-circle and FP-DFXM axes) instead of :class:`BeamlineIOC`.

    The CA variables of :func:`loopback_ca_environment` are set in ``os.environ`` until the block ends (ophyd's
    and caproto's clients read them there), then restored.
    """
    server_port = free_loopback_port()
    repeater_port = free_loopback_port()
    while repeater_port == server_port:
        repeater_port = free_loopback_port()
    env = loopback_ca_environment(server_port, repeater_port)
    prefix = f"{prefix_stem}{uuid.uuid4().hex[:6].upper()}:"
    with environ_set(env), ca_repeater(env), serve_ioc(prefix, env, general=general) as proc:
        yield proc


@contextmanager
def ca_repeater(environment: Mapping[str, str], *, startup_timeout_s: float = 10.0) -> Iterator[None]:
    """A CA repeater on ``EPICS_CA_REPEATER_PORT`` of ``environment`` until the block ends.

    A CA client spawns a repeater when none answers on its port and leaves it running after the tests; one
    started here first is found by the client (no spawn) and stopped when the block ends.
    """
    from caproto.sync.repeater import RepeaterAlreadyRunning, check_for_running_repeater

    port = int(environment["EPICS_CA_REPEATER_PORT"])
    proc = subprocess.Popen([sys.executable, "-m", "caproto.commandline.repeater", "--quiet"],
                            env={**os.environ, **environment}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                check_for_running_repeater(("0.0.0.0", port)).close()
            except RepeaterAlreadyRunning:
                break                           # bound: ours is serving
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"CA repeater on UDP {port} did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield
    finally:
        stop_process(proc)


if __name__ == "__main__":
    main()
