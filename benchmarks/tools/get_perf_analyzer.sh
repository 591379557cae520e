#!/bin/sh
# Triton's perf_analyzer for this machine (Debian 12, glibc 2.36): the newest wheels need
# glibc 2.38, so take the binary bundled in the tritonclient 2.47.0 wheel, in its own venv
# (it would downgrade the project's tritonclient). See ../../shared/protocol.md §10.
# Result: .perf_analyzer/run (a wrapper that sets the library path), used by bench_server.py.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
dest="$here/.perf_analyzer"
if [ -x "$dest/run" ] && "$dest/run" --version >/dev/null 2>&1; then
    echo "perf_analyzer already in $dest"; exit 0
fi
python3 -m venv "$dest"
"$dest/bin/pip" install -q --no-deps tritonclient==2.47.0 nvidia-cuda-runtime-cu12==12.9.79
if ! ldconfig -p | grep -q libb64.so.0d; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q libb64-0d >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null; }
    else echo "perf_analyzer needs libb64-0d: sudo apt-get install libb64-0d" >&2; exit 1; fi
fi
cat > "$dest/run" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$dest/lib/python3.11/site-packages/nvidia/cuda_runtime/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/bin/perf_analyzer" "\$@"
WRAP
chmod +x "$dest/run"
"$dest/run" --version
