"""The package configuration: every importable folder of visualbert/ is listed, so building the package
prints no setuptools warning about a package 'absent from the packages configuration'."""
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_importable_folder_is_a_listed_package():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    importable = set()
    for directory, folders, _ in os.walk(os.path.join(ROOT, "visualbert")):
        folders[:] = [d for d in folders if d != "__pycache__" and d.isidentifier()]
        importable.add(os.path.relpath(directory, ROOT).replace(os.sep, "."))
    assert importable == listed


def test_package_data_belongs_to_a_listed_package():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    for package, patterns in setuptools["package-data"].items():
        assert package in setuptools["packages"]
        folder = os.path.join(ROOT, *package.split("."))
        assert all(os.path.sep not in p for p in patterns), "data files are listed under their own folder's package"
        assert os.listdir(folder)
