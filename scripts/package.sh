#!/usr/bin/env bash
# Build the SCF deployment zip: a release binary for glibc 2.17 (SCF's CentOS 7), with `bootstrap` (event
# functions) and `scf_bootstrap` (web functions) at the zip root, mode 755. Verifies the glibc symbol versions and
# the modes, and prints the zip size. Output: dist/wafer-scf.zip
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
GLIBC=2.17

if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -c 'import ziglang' >/dev/null 2>&1; then
  echo "== installing cargo-zigbuild and ziglang from PyPI"
  python3 -m pip install --quiet cargo-zigbuild ziglang
fi
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET" >/dev/null 2>&1 || true

echo "== building for $TARGET.$GLIBC"
cargo zigbuild --release --locked --target "$TARGET.$GLIBC" --bin wafer-scf
BIN="${CARGO_TARGET_DIR:-target}/$TARGET/release/wafer-scf"

need=$(objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
echo "== newest glibc symbol version needed: $need"
if [ "$(printf '%s\n%s\n' "$need" "$GLIBC" | sort -V | tail -1)" != "$GLIBC" ]; then
  echo "binary needs glibc $need, newer than SCF's $GLIBC" >&2
  exit 1
fi
if objdump -p "$BIN" | grep -q 'NEEDED.*\(libssl\|libcrypto\)'; then
  echo "binary links OpenSSL; SCF may not have the same version" >&2
  exit 1
fi

# dist/wafer-scf.zip is the package (console/API upload); dist/pkg is that very zip unpacked again after its
# check (serverless.yml deploys it), so what the framework uploads is what was checked.
stage=dist/stage
rm -rf "$stage"
mkdir -p "$stage"
install -m 755 "$BIN" "$stage/wafer-scf"
install -m 755 bootstrap "$stage/bootstrap"
install -m 755 scf_bootstrap "$stage/scf_bootstrap"
mkdir -p dist
rm -f dist/wafer-scf.zip
(cd "$stage" && python3 - <<'PY'
import os, zipfile
with zipfile.ZipFile(os.path.join("..", "wafer-scf.zip"), "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for name in ("bootstrap", "scf_bootstrap", "wafer-scf"):
        info = zipfile.ZipInfo(name)
        info.external_attr = (0o100755 << 16)
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(name, "rb") as f:
            z.writestr(info, f.read())
PY
)

echo "== checking modes"
python3 - dist/wafer-scf.zip <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
for required in ("bootstrap", "scf_bootstrap", "wafer-scf"):
    mode = names.get(required)
    if mode != 0o755:
        sys.exit(f"{required}: mode {oct(mode) if mode is not None else 'missing'}, expected 0o755 at the zip root")
    print(f"  {required}: 755")
PY
size=$(stat -c %s dist/wafer-scf.zip)
echo "== dist/wafer-scf.zip: $size bytes ($(awk "BEGIN {printf \"%.2f\", $size/1048576}") MiB)"

echo "== dist/pkg: the checked zip, unpacked with its modes"
rm -rf dist/pkg "$stage"
python3 - dist/wafer-scf.zip dist/pkg <<'PY'
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
os.makedirs(sys.argv[2])
for info in z.infolist():
    path = os.path.join(sys.argv[2], info.filename)
    with open(path, "wb") as f:
        f.write(z.read(info))
    os.chmod(path, (info.external_attr >> 16) & 0o777)
    print(f"  {info.filename}: {oct(os.stat(path).st_mode & 0o777)[2:]}")
PY
