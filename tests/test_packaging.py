"""A non-editable wheel install carries the label sets and the shipped tree."""
import os
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_install_finds_the_hierarchies(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True)
    (wheel,) = wheels.glob("dsspn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dsspn_cli/_hierarchies/labelsets/coco.yaml" in names
    assert "dsspn_cli/_hierarchies/dsspn-four-datasets.yaml" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(wheel)], check=True)
    env = dict(os.environ, PYTHONPATH=str(site))
    code = ("import dsspn_cli.resources as r; print(r.hierarchies_dir()); "
            "from dsspn_cli.hierarchy.labelset import load_labelset; "
            "print(len(load_labelset('coco').labels))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where, count = proc.stdout.split()
    assert where.startswith(str(site)) and count == "182"
    proc = subprocess.run([sys.executable, "-m", "dsspn_cli", "hierarchy", "check"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stdout + proc.stderr
