"""The rooms' one-way imports (pyproject [tool.importlinter]) hold."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "broken" not in out.stdout.split("Contracts:")[-1].lower() or " 0 broken" in out.stdout


def test_only_the_backend_module_imports_cupy():
    offenders = []
    for room in ("pxm", "plans", "devices", "sim", "analysis"):
        for path in (ROOT / room).rglob("*.py"):
            if path == ROOT / "analysis" / "xp.py":
                continue
            for line in path.read_text().splitlines():
                s = line.strip()
                if s.startswith(("import cupy", "from cupy")) or s.startswith(("import cupyx", "from cupyx")):
                    offenders.append(f"{path.relative_to(ROOT)}: {s}")
    assert not offenders, "CuPy must be imported only in analysis/xp.py:\n" + "\n".join(offenders)


def test_benchmarks_take_helpers_from_testing_not_tests():
    """Benchmarks import the shared problems and metrics from the installed ``testing`` package, never
    from ``tests/`` (which is not a package and needs PYTHONPATH tricks); runtime code imports neither."""
    offenders = []
    for room in ("tests", "benchmarks", "testing", "pxm", "plans", "devices", "sim", "analysis"):
        for path in (ROOT / room).rglob("*.py"):
            for line in path.read_text().splitlines():
                s = line.strip()
                if s.startswith(("import tests", "from tests ", "from tests.")):
                    offenders.append(f"{path.relative_to(ROOT)}: {s}")
    assert not offenders, "Import shared test helpers from testing/, not tests/:\n" + "\n".join(offenders)
