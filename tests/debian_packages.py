"""Debian packages some tests need (slurm-wlm and munge, python3.11-doc), installed by the tests themselves."""

from __future__ import annotations

import os
import subprocess


def apt_install(*packages: str) -> None:
    """Install Debian packages (`name` or `name=version`) with apt-get, as root; an error if that fails."""
    if os.geteuid() != 0:
        raise PermissionError(f"installing {' '.join(packages)} needs root (apt-get install -y {' '.join(packages)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", *packages]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # The package lists of a fresh machine are empty or stale: update them once and try again.
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(install, check=True, env=env, capture_output=True)
