#!/bin/sh
# A private CA and one server certificate (mosquitto's TLS listener and the HTTPS API) for
# docker compose on a trial or lab machine. In production use the operator's own PKI: put
# ca.crt, server.crt and server.key in the same directory.
#
#   scripts/dev-certs.sh [DIR] [HOST_NAME ...]     (default: secrets/certs localhost mosquitto offsite)
set -eu
dir=${1:-secrets/certs}
[ $# -gt 0 ] && shift
names=${*:-localhost mosquitto offsite}
mkdir -p "$dir"
san="IP:127.0.0.1"
for name in $names; do san="$san,DNS:$name"; done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=offsite private CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=offsite" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" \
    >"$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
rm -f "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"
# The CA key signs nothing else here: keep it away from the containers.
chmod 600 "$dir/ca.key"
# mosquitto (uid 1883) and offsite (uid 10001) read the server key from a bind mount.
chmod 644 "$dir/server.key" "$dir/server.crt" "$dir/ca.crt"
echo "CA and server certificate for: $san in $dir"
