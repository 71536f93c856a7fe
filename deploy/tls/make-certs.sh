#!/bin/sh
# Make a private CA (once) and a server certificate signed by it, for NATS and the gateway's
# TLS proxy when GPU hosts join from outside (deploy/README.md, "GPU hosts outside").
#
#   deploy/tls/make-certs.sh OUT_DIR NAME SAN...
#   deploy/tls/make-certs.sh ./tls dante.example.com DNS:dante.example.com IP:203.0.113.10
#
# Writes OUT_DIR/ca.pem (give it to every GPU host: SSL_CERT_FILE), OUT_DIR/ca.key (keep it
# offline), OUT_DIR/NAME.pem and OUT_DIR/NAME.key (the server's). A CA already in OUT_DIR is
# reused, so running it again for another name or a renewal keeps hosts' trust. With a public
# CA (Let's Encrypt) for these names, skip this: hosts trust it already.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 OUT_DIR NAME SAN..." >&2; exit 2; }
out=$1 name=$2
shift 2
san=$(printf '%s,' "$@")
san=${san%,}
mkdir -p "$out"
umask 077
if [ ! -f "$out/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=Dante private CA" -keyout "$out/ca.key" -out "$out/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
fi
ext="$out/$name.ext"
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' \
  "$san" > "$ext"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
  -keyout "$out/$name.key" -out "$out/$name.csr" 2>/dev/null
openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
  -days 825 -extfile "$ext" -out "$out/$name.pem" 2>/dev/null
rm -f "$out/$name.csr" "$ext"
chmod 644 "$out/ca.pem" "$out/$name.pem"
echo "$out/$name.pem (key $out/$name.key), signed by $out/ca.pem"
