#!/usr/bin/env bash
# Makes the test certificates shipped in examples/certs (for localhost only: never use them for
# anything else). A CA, then leaf certificates signed by it with SAN localhost and 127.0.0.1:
# ECDSA P-256, RSA-2048, and a client certificate. Valid 10 years. Run from anywhere:
#   examples/certs/make.sh
set -euo pipefail
cd "$(dirname "$0")"
days=3650
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days $days \
    -subj "/CN=coreplex test CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
leaf() { # name, key options..., then extra extensions
    local name=$1; shift
    openssl req -new -nodes -subj "/CN=localhost" -keyout "$name.key" -out "$name.csr" "$@" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days $days \
        -out "$name.pem" -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\n' "${EKU:-serverAuth}") 2>/dev/null
    rm -f "$name.csr"
}
leaf ecdsa -newkey ec -pkeyopt ec_paramgen_curve:prime256v1
leaf rsa -newkey rsa:2048
EKU=clientAuth leaf client -newkey ec -pkeyopt ec_paramgen_curve:prime256v1
rm -f ca.srl
# Keys as PKCS#8 (what rustls and nginx both read).
for k in ca ecdsa rsa client; do
    openssl pkcs8 -topk8 -nocrypt -in "$k.key" -out "$k.key.tmp" && mv "$k.key.tmp" "$k.key"
done
echo "made: ca.pem ecdsa.pem rsa.pem client.pem (+ .key)"
