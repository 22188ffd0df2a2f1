#!/bin/sh
# Builds gatewayd_VERSION-1_ARCH.deb with dpkg-deb from what `make install` installs under /usr
# (no debhelper, no debian/ source tree: the package is a build product, like the binaries).
#
#   packaging/build-deb.sh BUILT VERSION OUTDIR
#
# BUILT: the directory with gatewayd and gatewayctl (and generated/, from make man completions).
# Prints the path of the .deb. The package installs the binaries, man pages, completions, the
# systemd units for Debian 12's systemd 252 and /etc/gatewayd/gatewayd.yaml (a conffile); its
# postinst creates the gatewayd system user and enables and starts nothing. See docs/install.md.
set -eu

built=${1:?usage: build-deb.sh BUILT VERSION OUTDIR}
version=${2:?usage: build-deb.sh BUILT VERSION OUTDIR}
outdir=${3:?usage: build-deb.sh BUILT VERSION OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
arch=$(dpkg --print-architecture)
# A Debian revision, so that the upstream version may contain hyphens (git describe's).
debversion="$version-1"

stage=$(mktemp -d "${TMPDIR:-/tmp}/gatewayd-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

make --no-print-directory -C "$root" install BUILT="$built" DESTDIR="$stage" PREFIX=/usr \
    UNITDIR=/lib/systemd/system SERVICE_UNIT=gatewayd-debian12.service \
    ZSHCOMPDIR=/usr/share/zsh/vendor-completions >/dev/null

# Debian's layout: man pages compressed; the docs' README is the package's; debug info out
# (the release build keeps -g symbols, 3/4 of the file).
gzip -9n "$stage"/usr/share/man/man1/*.1
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage"/usr/bin/gatewayd \
    "$stage"/usr/bin/gatewayctl
install -m 0644 "$here/debian/copyright" "$stage/usr/share/doc/gatewayd/copyright"
date=$(git -C "$root" log -1 --format=%aD 2>/dev/null || date -R)
sed -e "s/@VERSION@/$debversion/" -e "s/@DATE@/$date/" "$here/debian/changelog.in" |
    gzip -9n >"$stage/usr/share/doc/gatewayd/changelog.Debian.gz"
chmod 0644 "$stage/usr/share/doc/gatewayd/changelog.Debian.gz"

# Depends: from the libraries the binaries link (objdump's NEEDED), mapped to their Debian
# packages; an unknown library fails the build rather than leaving a dependency out. libswift*
# are only linked by the test build (`make test` cannot link the runtime statically); a
# release build carries them inside.
depends="adduser"
for library in $(objdump -p "$stage/usr/bin/gatewayd" "$stage/usr/bin/gatewayctl" | awk '$1 == "NEEDED" { print $2 }' | sort -u); do
    case $library in
        libc.so.6 | libm.so.6 | libdl.so.2 | libpthread.so.0 | librt.so.1 | libutil.so.1 | ld-linux-*.so.2) package="libc6 (>= 2.34)" ;;
        libsystemd.so.0) package="libsystemd0" ;;
        libssl.so.3 | libcrypto.so.3) package="libssl3" ;;
        libstdc++.so.6) package="libstdc++6" ;;
        libgcc_s.so.1) package="libgcc-s1" ;;
        libz.so.1) package="zlib1g" ;;
        libswift* | libFoundation*.so | lib_FoundationICU.so | libdispatch.so | libBlocksRuntime.so) continue ;;
        *) echo "build-deb.sh: no Debian package known for $library (add it here)" >&2; exit 1 ;;
    esac
    case ", $depends, " in *", $package, "*) ;; *) depends="$depends, $package" ;; esac
done

mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$debversion/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" -e "s/@SIZE@/$size/" \
    "$here/debian/control.in" >"$stage/DEBIAN/control"
install -m 0755 "$here/debian/postinst" "$here/debian/postrm" "$stage/DEBIAN/"
echo /etc/gatewayd/gatewayd.yaml >"$stage/DEBIAN/conffiles"
(cd "$stage" && find usr lib -type f -exec md5sum {} + | sort -k 2 >DEBIAN/md5sums)
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

mkdir -p "$outdir"
deb="$outdir/gatewayd_${debversion}_$arch.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
