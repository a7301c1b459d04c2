#!/bin/sh
# Install the forwarder into Debian's Orthanc (packages orthanc, orthanc-python).
#
#   sudo deploy/orthanc/install-debian.sh http://unet-host:8000 [API_KEY]
#   sudo systemctl restart orthanc
#
# Debian's Orthanc reads every .json file of /etc/orthanc (ORTHANC_CONFIG_DIR here),
# and a setting defined in two of them stops it. So this script edits the files that
# already hold its settings instead of adding them elsewhere:
#   python.json          "PythonScript" -> the forwarder (Debian points it at sample.py)
#   orthanc.json         "UserMetadata" gains "UnetSegmentation": 4201 (the per-instance outcome)
#   unet-forwarder.json  new: the "UnetForwarder" section (service URL, API key), readable
#                        by root and the orthanc group only, as it may hold the API key
# Running it again only rewrites unet-forwarder.json.
set -eu

url=${1:?usage: $0 SERVICE_URL [API_KEY]}
key=${2:-}
config=${ORTHANC_CONFIG_DIR:-/etc/orthanc}
here=$(cd "$(dirname "$0")" && pwd)

for file in python.json orthanc.json; do
  [ -f "$config/$file" ] || { echo "error: $config/$file not found (apt-get install orthanc orthanc-python)" >&2; exit 1; }
done

cp "$here/unet_forwarder.py" "$config/unet_forwarder.py"
sed -i "s|\"PythonScript\" *:.*|\"PythonScript\" : \"$config/unet_forwarder.py\",|" "$config/python.json"

if ! grep -q '"UnetSegmentation"' "$config/orthanc.json"; then
  if grep -q '^ *// *"Sample" *: *1024' "$config/orthanc.json"; then
    sed -i 's|^\( *\)// *"Sample" *: *1024|\1"UnetSegmentation" : 4201|' "$config/orthanc.json"
  else
    echo "error: add \"UnetSegmentation\" : 4201 to \"UserMetadata\" in $config/orthanc.json by hand" >&2
    echo "       (it is not the Debian default any more; any free index from 1024 to 65535 will do)" >&2
    exit 1
  fi
fi

umask 027
if [ -n "$key" ]; then
  printf '{\n  "UnetForwarder" : {\n    "ServiceUrl" : "%s",\n    "ApiKey" : "%s"\n  }\n}\n' "$url" "$key" >"$config/unet-forwarder.json"
else
  printf '{\n  "UnetForwarder" : {\n    "ServiceUrl" : "%s"\n  }\n}\n' "$url" >"$config/unet-forwarder.json"
fi
if getent group orthanc >/dev/null 2>&1; then
  chgrp orthanc "$config/unet-forwarder.json"
fi
echo "installed into $config: restart Orthanc (systemctl restart orthanc)"
