#!/usr/bin/env bash
# Turn a fresh Raspberry Pi OS (Bookworm/Trixie) image into a roomproof room device.
#
#   sudo bash install.sh [--source DIR|WHEEL] [--gps none|uart|uart-keep-bt] [--pps]
#                        [--display hdmi|spi] [--root DIR] [--no-packages] [--no-enable]
#
# Idempotent: running it twice changes nothing more. --root installs into a staging tree
# (an image mounted elsewhere, or a test) and implies --no-packages --no-enable.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
source_dir="$(cd "$here/.." && pwd)"
gps="none"
pps=0
display="hdmi"
root=""
packages=1
enable=1

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir="${2:?--source needs a path}"; shift 2 ;;
    --gps) gps="${2:?--gps needs a value}"; shift 2 ;;
    --pps) pps=1; shift ;;
    --display) display="${2:?--display needs a value}"; shift 2 ;;
    --root) root="${2:?--root needs a path}"; packages=0; enable=0; shift 2 ;;
    --no-packages) packages=0; shift ;;
    --no-enable) enable=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
  esac
done
case "$gps" in none|uart|uart-keep-bt) ;; *) die "--gps must be none, uart or uart-keep-bt" ;; esac
case "$display" in hdmi|spi) ;; *) die "--display must be hdmi or spi" ;; esac
[ "$pps" = 1 ] && [ "$gps" = none ] && die "--pps needs --gps uart or uart-keep-bt"
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo)"; fi

boot="$root/boot/firmware"
[ -d "$boot" ] || { [ -n "$root" ] && mkdir -p "$boot"; } || die "$boot not found (not Raspberry Pi OS?)"
step() { echo "==> $*"; }

# A marked block per snippet in config.txt: replaced, never appended twice.
config_block() {
  local name="$1" file="$boot/config.txt" begin="# >>> roomproof $1" end="# <<< roomproof $1"
  touch "$file"
  if grep -qF "$begin" "$file"; then
    sed -i "/^$begin\$/,/^$end\$/d" "$file"
  fi
  { echo "$begin"; cat "$here/boot/$name.txt"; echo "$end"; } >> "$file"
}

if [ "$packages" = 1 ]; then
  step "Debian packages"
  apt_packages=(python3-venv python3-dev libopenblas0 iw wireless-tools bluez fonts-dejavu-core)
  [ "$gps" != none ] && apt_packages+=(gpsd gpsd-clients pps-tools chrony)
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_packages[@]}"
fi

step "python environment in $root/opt/roomproof/venv"
if [ -z "$root" ]; then
  [ -x /opt/roomproof/venv/bin/python ] || python3 -m venv /opt/roomproof/venv
  /opt/roomproof/venv/bin/pip install -q --upgrade "${source_dir}[edge]"
else
  mkdir -p "$root/opt/roomproof"
fi

step "user, state dir, units"
install -d -m 0755 "$root/etc/roomproof" "$root/etc/systemd/system" \
  "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
install -m 0644 "$source_dir/systemd/roomproof.sysusers.conf" "$root/usr/lib/sysusers.d/roomproof.conf"
install -m 0644 "$source_dir/systemd/roomproof.tmpfiles.conf" "$root/usr/lib/tmpfiles.d/roomproof.conf"
install -m 0644 "$source_dir/systemd/roomproof-edge.service" "$root/etc/systemd/system/"
if [ -n "$root" ]; then
  systemd-sysusers --root="$root" "$root/usr/lib/sysusers.d/roomproof.conf"
  systemd-tmpfiles --root="$root" --create "$root/usr/lib/tmpfiles.d/roomproof.conf"
else
  systemd-sysusers /usr/lib/sysusers.d/roomproof.conf
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/roomproof.conf
fi

settings="$root/etc/roomproof/edge.toml"
if [ ! -e "$settings" ]; then
  step "settings $settings (kept on later runs)"
  install -m 0644 "$here/etc/edge.toml" "$settings"
  if [ "$display" = spi ]; then
    sed -i 's#^framebuffer_device = .*#framebuffer_device = "/dev/fb1"#; s#^framebuffer_width = .*#framebuffer_width = 480#; s#^framebuffer_height = .*#framebuffer_height = 320#; s#^framebuffer_bpp = .*#framebuffer_bpp = 16#' "$settings"
  fi
  if [ "$gps" != none ]; then
    sed -i 's#^gps_source = .*#gps_source = "gpsd://127.0.0.1:2947"#' "$settings"
  fi
fi

step "boot configuration ($boot/config.txt)"
config_block "display-$display"
case "$gps" in
  uart) config_block gps-uart-no-bt ;;
  uart-keep-bt) config_block gps-uart-keep-bt ;;
esac
[ "$pps" = 1 ] && config_block pps
if [ "$gps" != none ] && [ -f "$boot/cmdline.txt" ]; then
  # The UART belongs to the GPS, not to a login console.
  sed -i 's/console=serial0,[0-9]* //; s/console=ttyAMA0,[0-9]* //' "$boot/cmdline.txt"
fi
if [ "$gps" != none ]; then
  install -d "$root/etc/default" "$root/etc/chrony/conf.d"
  install -m 0644 "$here/etc/gpsd" "$root/etc/default/gpsd"
  [ "$pps" = 1 ] && install -m 0644 "$here/etc/chrony-roomproof.conf" "$root/etc/chrony/conf.d/roomproof.conf"
fi

if [ "$enable" = 1 ]; then
  step "enable the service"
  systemctl daemon-reload
  systemctl enable roomproof-edge.service
fi

cat <<DONE
roomproof edge installed.
Next: put the device's enrollment bundle on the SD card's boot partition as
  /boot/firmware/roomproof-bundle.toml
(from: python -m central device add ... --bundle FILE), then reboot. At first start the
bundle is taken into /var/lib/roomproof-edge and erased from the boot partition.
Status: systemctl status roomproof-edge; logs: journalctl -u roomproof-edge -f
DONE
