"""What a user installs: the sdist and the wheel carry everything the project promises."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.support.servers import ROOT


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built from the checkout as a release would be."""
    out = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).with_name("uv")
    subprocess.run(
        [str(uv), "build", "-q", "--sdist", "--wheel", "-o", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    return out


def sdist_names(dist: Path) -> set[str]:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        return {name.partition("/")[2] for name in archive.getnames()}


def wheel_names(dist: Path) -> set[str]:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_packaging_sdist_carries_the_license_dashboards_and_provisioning(dist: Path) -> None:
    """Every file of dashboards/ in the repository (JSON and Grafana provisioning) is in the
    sdist, with the LICENSE the metadata names."""
    names = sdist_names(dist)
    shipped = {
        str(path.relative_to(ROOT)) for path in (ROOT / "dashboards").rglob("*") if path.is_file()
    }
    assert any(name.endswith(".json") for name in shipped)
    assert any(name.startswith("dashboards/provisioning/") for name in shipped)
    assert shipped <= names, sorted(shipped - names)
    assert "LICENSE" in names


def test_packaging_wheel_carries_the_package_data_and_the_license(dist: Path) -> None:
    """The Lua scripts and the admin page ship inside the package; the license in the
    metadata is MIT and its text is included."""
    names = wheel_names(dist)
    data = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "toolkit").rglob("*")
        if path.is_file() and path.suffix in (".lua", ".html", ".css")
    }
    assert data, "the package has Lua scripts and the admin page"
    assert data <= names, sorted(data - names)
    (license_file,) = (name for name in names if name.endswith(".dist-info/licenses/LICENSE"))
    (metadata,) = (name for name in names if name.endswith(".dist-info/METADATA"))
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert b"MIT License" in archive.read(license_file)
        assert "License-Expression: MIT" in archive.read(metadata).decode()
