"""Build hook: ship the top-level data folders inside the wheel.

The checkout keeps `grammar/`, `dictionaries/` and `models/` at the repository root (the product
layout); an installed wheel finds them under `steerlang/_data/` (see steerlang/resources.py).
"""
import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("grammar", "dictionaries", "models", "programs")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        root = pathlib.Path(__file__).parent
        for name in SHIPPED:
            src = root / name
            if src.is_dir():
                dst = pathlib.Path(self.build_lib) / "steerlang" / "_data" / name
                shutil.copytree(src, dst, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithData})
