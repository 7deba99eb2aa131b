#!/usr/bin/env bash
# Vendors Swagger UI (npm's swagger-ui-dist, pinned below) into the package, so that /docs
# works with no network beyond the service. Run it to change the version: set VERSION and
# INTEGRITY (`npm view swagger-ui-dist@X dist.integrity`), run, commit the folder. The test
# suite checks the committed files against the SHA256SUMS written here.
set -euo pipefail

VERSION=5.35.0
INTEGRITY='sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ=='
FILES=(swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png
       LICENSE NOTICE)

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/src/flashorder/entrypoints/api/swagger_ui"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null
TARBALL="swagger-ui-dist-$VERSION.tgz"
GOT="sha512-$(openssl dgst -sha512 -binary "$TARBALL" | base64 -w0)"
if [[ "$GOT" != "$INTEGRITY" ]]; then
    echo "swagger-ui-dist $VERSION: integrity $GOT, expected $INTEGRITY" >&2
    exit 1
fi
tar xzf "$TARBALL"
rm -rf "$DEST"
mkdir -p "$DEST"
for f in "${FILES[@]}"; do cp "package/$f" "$DEST/$f"; done
echo "$VERSION" > "$DEST/VERSION"
(cd "$DEST" && sha256sum "${FILES[@]}" VERSION > SHA256SUMS)
echo "swagger-ui-dist $VERSION vendored into ${DEST#"$ROOT"/}"
