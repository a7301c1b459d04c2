#!/usr/bin/env bash
# `make docker-smoke`: build the CPU image with podman (../shared/tools/container-smoke),
# run it read-only as its non-root user with only /tmp and the /jobs volume writable,
# wait for the HEALTHCHECK, segment one PNG, run it again as a job (submit, poll, download:
# the same bytes), stop it gracefully (exit status 0), print the image size.
set -euo pipefail

SMOKE=${SMOKE:-../shared/tools/container-smoke}
TAG=${TAG:-localhost/unet-service:cpu}
PORT=${SMOKE_PORT:-18000}
# shellcheck source=/dev/null
. "$SMOKE/oci-env.sh"
say() { printf '[docker-smoke] %s\n' "$*"; }

"$SMOKE/build-and-run.sh" --target cpu -t "$TAG" -p 8000 -P "$PORT" -u /health/ready \
  --timeout 120 --keep \
  --run-arg --read-only --run-arg --read-only-tmpfs=false --run-arg --tmpfs=/tmp .
CID=$(cat "$OCI_WORK/logs/last-container-id")
trap 'podman rm -f "$CID" >/dev/null 2>&1 || true' EXIT

user=$(podman exec "$CID" id -u </dev/null)
say "runs as uid $user ($(podman inspect -f '{{.Config.User}}' "$CID"))"
[ "$user" != 0 ] || { say "FAIL: runs as root"; exit 1; }
say "root filesystem read-only: $(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$CID")"

say "GET /health -> $(curl -s --max-time 10 "http://127.0.0.1:$PORT/health")"  # engine, precision
# No telemetry: OpenVINO's (openvino-telemetry) would write ~/intel (HOME=/tmp in the image).
if podman exec "$CID" test -e /tmp/intel </dev/null; then say "FAIL: /tmp/intel written"; exit 1; fi

WORK=$(mktemp -d)
python3 - "$WORK/in.png" <<'PY'
import struct, sys, zlib
w = h = 96  # a grayscale gradient
rows = b"".join(b"\0" + bytes((x + y) % 256 for x in range(w)) for y in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
open(sys.argv[1], "wb").write(png + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
PY
code=$(curl -s -o "$WORK/out.png" -D "$WORK/headers" -w '%{http_code}' --max-time 120 \
  -H 'Content-Type: image/png' --data-binary @"$WORK/in.png" "http://127.0.0.1:$PORT/segment")
size=$(python3 -c 'import struct,sys; d=open(sys.argv[1],"rb").read(24); print("%dx%d" % struct.unpack(">II", d[16:24]) if d[:8]==b"\x89PNG\r\n\x1a\n" else "not a PNG")' "$WORK/out.png")
say "POST /segment (96x96 PNG) -> $code, $(grep -i '^content-type' "$WORK/headers" | tr -d '\r'), mask $size"
[ "$code" = 200 ] && [ "$size" = 96x96 ] || { say "FAIL: /segment"; podman logs --tail 20 "$CID"; exit 1; }

# The same image as a job: the /jobs volume (SQLite + files) writable by the service's user.
job=$(curl -s --max-time 60 -H 'Content-Type: image/png' --data-binary @"$WORK/in.png" \
  "http://127.0.0.1:$PORT/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 100); do
  state=$(curl -s "http://127.0.0.1:$PORT/jobs/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$state" = queued ] || [ "$state" = running ] || break
  sleep 0.2
done
curl -s -o "$WORK/job.png" --max-time 60 "http://127.0.0.1:$PORT/jobs/$job/result"
say "POST /jobs (the same PNG) -> $state; result equals /segment's: $(cmp -s "$WORK/out.png" "$WORK/job.png" && echo yes || echo no)"
[ "$state" = succeeded ] && cmp -s "$WORK/out.png" "$WORK/job.png" || { say "FAIL: /jobs"; podman logs --tail 20 "$CID"; exit 1; }

t0=$(date +%s)
podman stop -t 30 "$CID" >/dev/null 2>&1
status=$(podman inspect -f '{{.State.ExitCode}}' "$CID")
say "SIGTERM (podman stop) -> exit status $status after $(( $(date +%s) - t0 )) s"
[ "$status" = 0 ] || { say "FAIL: not a clean stop"; exit 1; }

bytes=$(podman image inspect -f '{{.Size}}' "$TAG")
say "image $TAG: $(( bytes / 1000000 )) MB ($bytes bytes)"
say "PASS"
