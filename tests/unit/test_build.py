"""Releases of any PEP 517 project: a standard build (uv build), reproducible, package data
included, cached by content; the release id is a hash of what is shipped."""
from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from deploy import build
from deploy.errors import DeployFailed

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "project"
TARGET = build.Target("3.11.2", "x86_64", "2.36")


@pytest.fixture
def project(tmp_path) -> build.Project:
    """The fixture project copied out, so tests may change it (it lives outside the kit)."""
    path = tmp_path / "ext"
    shutil.copytree(FIXTURE, path, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    return build.Project(path, path / "requirements.lock")


def test_target_and_platform_tags():
    assert build.parse_target("3.11.2 x86_64 glibc2.36\n") == TARGET and TARGET.abi == "cp311"
    tags = TARGET.platforms()
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert build.parse_target("", 127) is None


def test_fingerprint_follows_sources_not_build_leftovers(project):
    before = build.fingerprint(project)
    (project.path / "build").mkdir()
    (project.path / "build" / "junk.py").write_text("x = 1\n")
    (project.path / "tasks" / "__pycache__").mkdir()
    assert build.fingerprint(project) == before
    (project.path / "tasks" / "data" / "hello.txt").write_text("changed\n")
    assert build.fingerprint(project) != before


def test_wheel_is_built_by_the_standard_builder_with_package_data_and_reproducibly(project, tmp_path):
    wheel = build.build_wheel(project, tmp_path / "cache-a")
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name == "fixture_tasks-0.1.0-py3-none-any.whl"
    assert "tasks/__init__.py" in names and "tasks/data/hello.txt" in names
    again = build.build_wheel(project, tmp_path / "cache-b")        # a clean second build
    assert again.read_bytes() == wheel.read_bytes()
    assert build.build_wheel(project, tmp_path / "cache-a") == wheel   # cached


def test_leftovers_of_an_earlier_build_are_never_shipped(project, tmp_path):
    stale = project.path / "build" / "lib" / "tasks" / "stale.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("GONE = True\n")
    names = zipfile.ZipFile(build.build_wheel(project, tmp_path / "cache")).namelist()
    assert "tasks/stale.py" not in names
    assert not list(project.path.glob("*.egg-info"))          # the project is not written to


def test_a_broken_project_fails_with_the_builders_message(project, tmp_path):
    (project.path / "pyproject.toml").write_text("[project\nname=")
    with pytest.raises(DeployFailed, match="building the wheel of"):
        build.build_wheel(project, tmp_path / "cache")


def test_release_tarball_and_id(project, tmp_path):
    rel = build.build_release(project, tmp_path / "cache", TARGET)
    assert len(rel.id) == 12 and rel.wheel == "fixture_tasks-0.1.0-py3-none-any.whl"
    names = tarfile.open(rel.tarball).getnames()
    assert "requirements.txt" in names and "celery_kit_config.py" in names and "RELEASE" in names
    assert f"wheels/{rel.wheel}" in names and any(n.startswith("wheels/celery-5.7.0") for n in names)
    pins = tarfile.open(rel.tarball).extractfile("requirements.txt").read().decode()
    assert "async-timeout" in pins          # redis-py needs it below Python 3.11.3
    assert build.build_release(project, tmp_path / "cache", TARGET) == rel
    newer = build.build_release(project, tmp_path / "cache", build.Target("3.11.7", "x86_64", "2.36"))
    assert newer.id != rel.id and "async-timeout" not in tarfile.open(newer.tarball).extractfile(
        "requirements.txt").read().decode()


def test_pinned_names():
    lock = FIXTURE / "requirements.lock"
    assert build.pinned(lock, ["celery", "Flower", "nope"]) == ["celery", "Flower"]
