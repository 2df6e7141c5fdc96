#!/usr/bin/env bash
# Runs a demo apop server on 127.0.0.1:$PORT (default 1110) over ./demo-data.
# The first run creates the user `demo` with a generated secret (saved in
# demo-data/demo.secret, mode 0600) and delivers the sample messages in
# scripts/samples/; later runs reuse both. `make demo` builds and runs this.
#
# It also creates a self-signed certificate for localhost (demo-data/tls/) so
# STLS on $PORT and implicit TLS on $TLS_PORT work out of the box.
#
# Environment: PORT (1110), TLS_PORT (1995), APOP (build/release/apop), DATA (demo-data).
set -euo pipefail

cd "$(dirname "$0")/.."
PORT="${PORT:-1110}"
TLS_PORT="${TLS_PORT:-1995}"
APOP="${APOP:-build/release/apop}"
DATA="${DATA:-demo-data}"
SECRET_FILE="$DATA/demo.secret"

if [ ! -x "$APOP" ]; then
  echo "demo.sh: $APOP is not built; run \`make demo\` (or \`make release\`) first" >&2
  exit 1
fi
case "$PORT" in
  ''|*[!0-9]*) echo "demo.sh: PORT must be a number, got '$PORT'" >&2; exit 64 ;;
esac

mkdir -p "$DATA"
chmod 700 "$DATA"

# The last whitespace-separated word of the last non-empty line of `--generate`'s output.
extract_secret() { awk 'NF { s = $NF } END { print s }'; }

save_secret() {
  (umask 077 && printf '%s\n' "$1" >"$SECRET_FILE")
  chmod 600 "$SECRET_FILE"
}

if ! "$APOP" user list --data "$DATA" | grep -qx demo; then
  echo "Creating user 'demo' in $DATA ..."
  secret="$("$APOP" user add --data "$DATA" demo --generate | extract_secret)"
  [ -n "$secret" ] || { echo "demo.sh: user add --generate printed no secret" >&2; exit 1; }
  save_secret "$secret"
  for msg in scripts/samples/*.eml; do
    "$APOP" deliver --data "$DATA" demo <"$msg"
    echo "Delivered $msg"
  done
elif [ ! -s "$SECRET_FILE" ]; then
  echo "User 'demo' exists but $SECRET_FILE is missing; generating a new secret ..."
  secret="$("$APOP" user passwd --data "$DATA" demo --generate | extract_secret)"
  save_secret "$secret"
fi
secret="$(head -n 1 "$SECRET_FILE")"

# A self-signed certificate for localhost, made once (see docs/configuration.md
# for a real one).
TLS_DIR="$DATA/tls"
if [ ! -s "$TLS_DIR/cert.pem" ] || [ ! -s "$TLS_DIR/key.pem" ]; then
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" -days 365 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null)
  echo "Created a self-signed certificate in $TLS_DIR/"
fi

cat <<INFO

apop demo
=========
  user:    demo
  secret:  $secret        (saved in $SECRET_FILE)
  server:  pop3://127.0.0.1:$PORT   (data in $DATA/)

Read the mail with curl (APOP):
  curl pop3://127.0.0.1:$PORT/ --user 'demo:$secret' --login-options AUTH=+APOP     # list
  curl pop3://127.0.0.1:$PORT/1 --user 'demo:$secret' --login-options AUTH=+APOP    # message 1

Over TLS (STLS on $PORT, implicit TLS on $TLS_PORT; the demo certificate is self-signed):
  curl pop3s://localhost:$TLS_PORT/1 --cacert $TLS_DIR/cert.pem --user 'demo:$secret' --login-options AUTH=+APOP
  curl pop3://localhost:$PORT/1 --ssl-reqd --cacert $TLS_DIR/cert.pem --user 'demo:$secret'

Read the mail with Python (APOP):
  python3 -c 'import poplib; p = poplib.POP3("127.0.0.1", $PORT); p.apop("demo", "$secret"); print(p.stat()); print(b"\n".join(p.retr(1)[1]).decode()); p.quit()'

Deliver more mail:
  $APOP deliver --data $DATA demo < scripts/samples/01-welcome.eml

Stop the server with Ctrl-C.

INFO

exec "$APOP" serve --data "$DATA" --listen "127.0.0.1:$PORT" --tls-listen "127.0.0.1:$TLS_PORT" \
  --tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem"
