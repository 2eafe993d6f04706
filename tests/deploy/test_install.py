"""firmware_config/install.sh into a staging root: the files a Pi gets, twice (idempotent)."""

from __future__ import annotations

import pathlib
import shutil
import stat
import subprocess

import pytest

from edge_agent import settings as settings_mod

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "firmware_config" / "install.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed"
)


def install(root: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def staging_root(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "pi"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    boot = root / "boot" / "firmware"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text("[all]\narm_64bit=1\n")
    (boot / "cmdline.txt").write_text(
        "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootwait\n"
    )
    return root


def test_install_gps_pps_spi_twice(tmp_path: pathlib.Path) -> None:
    root = staging_root(tmp_path)
    args = ("--gps", "uart-keep-bt", "--pps", "--display", "spi")
    first = install(root, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "roomproof-bundle.toml" in first.stdout
    second = install(root, *args)
    assert second.returncode == 0, second.stderr

    config = (root / "boot" / "firmware" / "config.txt").read_text()
    assert config.startswith("[all]\narm_64bit=1\n")
    for block in ("display-spi", "gps-uart-keep-bt", "pps"):
        assert config.count(f"# >>> roomproof {block}\n") == 1, config
    assert config.count("dtoverlay=miniuart-bt") == 1 and "disable-bt" not in config
    cmdline = (root / "boot" / "firmware" / "cmdline.txt").read_text()
    assert "console=serial0" not in cmdline and "console=tty1" in cmdline

    settings = settings_mod.load(root / "etc" / "roomproof" / "edge.toml")
    assert str(settings.framebuffer_device) == "/dev/fb1"
    assert (settings.framebuffer_width, settings.framebuffer_height) == (480, 320)
    assert settings.gps_source == "gpsd://127.0.0.1:2947"
    assert (root / "etc" / "systemd" / "system" / "roomproof-edge.service").exists()
    assert "refclock PPS" in (root / "etc" / "chrony" / "conf.d" / "roomproof.conf").read_text()
    assert "/dev/pps0" in (root / "etc" / "default" / "gpsd").read_text()
    assert "\nroomproof:" in "\n" + (root / "etc" / "passwd").read_text()
    state = root / "var" / "lib" / "roomproof-edge"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_switching_gps_mode_replaces_the_block_and_keeps_edits(tmp_path: pathlib.Path) -> None:
    root = staging_root(tmp_path)
    assert install(root, "--gps", "uart").returncode == 0
    edge = root / "etc" / "roomproof" / "edge.toml"
    edge.write_text(edge.read_text().replace('log_level = "INFO"', 'log_level = "DEBUG"'))
    assert install(root, "--display", "hdmi").returncode == 0
    config = (root / "boot" / "firmware" / "config.txt").read_text()
    assert config.count("# >>> roomproof display-hdmi\n") == 1
    assert 'log_level = "DEBUG"' in edge.read_text()  # an admin's edit survives a re-run


@pytest.mark.parametrize(
    "args,message",
    [
        (("--gps", "usb"), "--gps must be"),
        (("--display", "vga"), "--display must be"),
        (("--pps",), "--pps needs"),
        (("--bogus",), "unknown option"),
    ],
)
def test_bad_options_are_refused(
    tmp_path: pathlib.Path, args: tuple[str, ...], message: str
) -> None:
    done = install(staging_root(tmp_path), *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
