#!/usr/bin/env bash
# Collect a profile for a profile-guided (PGO) release build: the binary is built instrumented (`-Cprofile-generate`
# and `--cfg wafer_pgo`), the benches' workloads are run through it — the SCF runtime bench (Function URL events:
# cached tokens, health checks, then logins, auths, tokens and pass-through calls, small and large), the hot-path
# bench over HTTP (logins, auths, cached tokens; on MySQL too when WAFER_TEST_MYSQL_URL is set) — and the counts they
# leave are merged into one profile. `WAFER_PGO=1 scripts/package.sh` runs this and builds the package with it.
# Needs rustup's llvm-tools (added here when missing) and wrk (scripts/bench.sh installs it).
# Output: target/pgo/wafer.profdata
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/pgo"
raw="$out/raw"
rm -rf "$raw"
mkdir -p "$raw"

host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "== adding rustup's llvm-tools (llvm-profdata)"
  rustup component add llvm-tools >/dev/null
fi
if [ ! -x "$profdata" ]; then
  echo "llvm-profdata not found at $profdata: run 'rustup component add llvm-tools'" >&2
  exit 1
fi
if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk is needed for the hot-path workload: run scripts/bench.sh once, or install wrk" >&2
  exit 1
fi

echo "== instrumented build (target/pgo/gen)"
RUSTFLAGS="-Cprofile-generate=$raw --cfg wafer_pgo" \
  cargo build --release --locked --target-dir "$out/gen" --bin wafer-scf
bin="$out/gen/release/wafer-scf"

# Each process writes its own file (%p); an SCF instance rewrites its file every hundred invocations, as it is
# killed, never exits; an HTTP server writes its file when it stops.
export LLVM_PROFILE_FILE="$raw/wafer-%p.profraw"
echo "== workload: the SCF runtime bench"
BENCH_BIN="$bin" BENCH_PLACEMENT=one BENCH_WARM=3000 BENCH_MIXED=10000 cargo bench --locked --bench runtime
echo "== workload: the hot-path bench"
BENCH_BIN="$bin" BENCH_SECS=2 BENCH_LOGIN_RUNS=1 cargo bench --locked --bench hotpaths
unset LLVM_PROFILE_FILE

# Instances killed before their first hundred invocations leave empty files.
mapfile -t files < <(find "$raw" -name '*.profraw' -size +0)
if [ "${#files[@]}" -eq 0 ]; then
  echo "the workloads left no profile" >&2
  exit 1
fi
"$profdata" merge -o "$out/wafer.profdata" "${files[@]}"
echo "== profile: target/pgo/wafer.profdata, from ${#files[@]} processes"
