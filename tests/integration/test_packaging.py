"""`pip install .` gives a package whose twistd plugin is found, with its schema files."""

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.integration.daemon import REPO


def test_wheel_installs_a_plugin_twistd_finds(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    [wheel] = list((tmp_path / "dist").glob("hypersdk-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/hypersdk_plugin.py" in names
    source = REPO / "src"
    shipped = {str(p.relative_to(source)) for p in source.rglob("*") if p.suffix in (".py", ".sql", ".html", ".js", ".css")
               and "__pycache__" not in p.parts}
    assert shipped - names == set()  # every module and schema file of src/ is in the wheel
    assert not any(name.startswith("tests/") for name in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "hyperctl = hypersdk.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    # Only the installed copy on the path: not this checkout's src/ or twisted/plugins.
    listing = subprocess.run([str(Path(sys.executable).parent / "twistd"), "--help"], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert "hypersdk" in listing.stdout, listing.stdout + listing.stderr
    options = subprocess.run([str(Path(sys.executable).parent / "twistd"), "hypersdk", "--help"], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert "--config" in options.stdout and "--listen" in options.stdout
    cli = subprocess.run([sys.executable, "-m", "hypersdk.cli", "--version"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert cli.stdout.startswith("hyperctl "), cli.stderr
