#!/usr/bin/env bash
# An arm64 Python 3.11 with numpy and onnxruntime (the versions installed here), and Apache TVM's runtime where
# it is installed (tests/test_tvm_export.py runs a Cortex-A72 library with it), for qemu's user mode:
#   sudo experiments/quantization/arm64_sysroot.sh [OUT]    (Debian, root; then weight_bits.py --arm-sysroot OUT)
# Debian's arm64 packages are unpacked, not installed; the wheels come from PyPI.
set -euo pipefail
out=$(realpath -m "${1:-experiments/quantization/runs/arm64}")
dpkg --add-architecture arm64
apt-get update -qq
mkdir -p "$out/debs" "$out/proc" "$out/site"
packages="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libexpat1 zlib1g libffi8 libssl3
  libbz2-1.0 liblzma5 libstdc++6 libgcc-s1 libuuid1 libncursesw6 libtinfo6 libreadline8 libsqlite3-0 libcrypt1"
# shellcheck disable=SC2086
(cd "$out/debs" && apt-get download -qq $(printf '%s:arm64 ' $packages))
for deb in "$out"/debs/*.deb; do dpkg -x "$deb" "$out"; done
versions=$(python -c "
from importlib.metadata import PackageNotFoundError, version
found = []
for name in ('numpy', 'onnxruntime', 'apache-tvm', 'apache-tvm-ffi', 'ml_dtypes', 'typing_extensions'):
    try:
        found.append(f'{name}=={version(name)}')
    except PackageNotFoundError:
        pass
print(' '.join(found))
")
# shellcheck disable=SC2086
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 -d "$out/wheels" $versions
for wheel in "$out"/wheels/*.whl; do python -m zipfile -e "$wheel" "$out/site"; done
# onnxruntime reads /proc/cpuinfo to tell the CPU; qemu 7.2 passes the x86 host's through, on which it
# crashes. qemu's user mode looks paths up under its -L prefix first: there it finds a Cortex-A57's.
for cpu in 0 1; do
  printf 'processor\t: %s\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\nCPU implementer\t: 0x41\n' "$cpu"
  printf 'CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd07\nCPU revision\t: 1\n\n'
done > "$out/proc/cpuinfo"
echo "$out"
