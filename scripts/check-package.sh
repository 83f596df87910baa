#!/usr/bin/env bash
# The Debian package, built and read back (run by .ci/run after the test
# suite, not inside it: the release build it needs would slow the timed
# parts of the suite down). Fails on the first thing that is not as it
# should be:
#  - `cargo deb --strip` (cargo-deb) builds it;
#  - dpkg-deb lists the binary, the configuration (a conffile), the unit,
#    and the maintainer script that makes the volley user;
#  - systemd-analyze verify accepts the unit as installed (with its
#    ExecStart pointed at the extracted binary), and the unit asks for
#    what a mail relay needs: Type=notify, reload by SIGHUP, a raised
#    open-files limit, a stop timeout that lets it drain, port 25 without
#    root, a read-only system;
#  - the extracted binary accepts the packaged configuration.
#
#   scripts/check-package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

fail() { echo "check-package: $*" >&2; exit 1; }
command -v cargo-deb >/dev/null || fail "cargo-deb is not installed (cargo install cargo-deb --locked)"

cargo deb --strip --quiet --output "$TMP/deb/" >/dev/null
deb=$(ls "$TMP"/deb/volley_*.deb)
echo "built $(basename "$deb") ($(du -h "$deb" | cut -f1))"

contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/volley ./etc/volley/volley.toml ./usr/lib/systemd/system/volley.service ./usr/share/doc/volley/README.md; do
    grep -q " $path\$" <<<"$contents" || fail "$path is not in the package"
done
dpkg-deb -e "$deb" "$TMP/control"
grep -qx /etc/volley/volley.toml "$TMP/control/conffiles" || fail "the configuration is not a conffile"
grep -q '^Depends:.*adduser' "$TMP/control/control" || fail "the package does not depend on adduser"
grep -q 'adduser --system --group' "$TMP/control/postinst" || fail "postinst does not make the volley user"
grep -q 'deb-systemd-helper enable volley.service' "$TMP/control/postinst" || fail "postinst does not enable the unit"

dpkg-deb -x "$deb" "$TMP/root"
unit="$TMP/root/usr/lib/systemd/system/volley.service"
for want in '^Type=notify$' '^ExecReload=/bin/kill -HUP \$MAINPID$' '^LimitNOFILE=' '^TimeoutStopSec=' \
    '^ProtectSystem=strict$' '^NoNewPrivileges=yes$' '^AmbientCapabilities=CAP_NET_BIND_SERVICE$' '^User=volley$' \
    '^StateDirectory=volley$'; do
    grep -q "$want" "$unit" || fail "the unit has no line matching $want"
done
sed "s#/usr/bin/volley#$TMP/root/usr/bin/volley#g" "$unit" >"$TMP/volley.service"
systemd-analyze verify "$TMP/volley.service" || fail "systemd-analyze verify refuses the unit"
"$TMP/root/usr/bin/volley" check-config "$TMP/root/etc/volley/volley.toml" || fail "the packaged configuration does not check"
echo "check-package: ok"
