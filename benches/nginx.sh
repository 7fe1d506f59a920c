# shellcheck shell=bash
# Sourced by the benchmarks that measure nginx beside the gateway (load.sh, download.sh): nginx as the
# reverse proxy an operations team would put in front of an EHR if no translation were needed.

# Finds nginx, else installs Debian's nginx-light.
nginx_ensure() {
    export PATH="$PATH:/usr/sbin"
    if ! command -v nginx >/dev/null; then
        echo "nginx not found: installing Debian's nginx-light"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null
    fi
}

# nginx_start DIR PORT UPSTREAM_PORT [DIRECTIVES]: starts nginx in the background (one worker,
# keep-alive connections to the upstream, no access log), its files under DIR, with DIRECTIVES added
# to its proxy location; its pid in $nginx_pid.
nginx_start() {
    mkdir -p "$1"
    cat > "$1/nginx.conf" <<NGINX
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    upstream ehr { server 127.0.0.1:$3; keepalive 64; }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://ehr;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            ${4:-}
        }
    }
}
NGINX
    nginx -p "$1" -c "$1/nginx.conf" -g 'daemon off;' &
    # shellcheck disable=SC2034 # read by the script that sourced this one
    nginx_pid=$!
}
