#!/usr/bin/env bash
# A short fuzz smoke: builds every cargo-fuzz target with libFuzzer (under AddressSanitizer where a
# nightly toolchain is installed; on stable without a sanitizer, Rust's own checks and the targets'
# assertions still apply) and runs each for FUZZ_SECONDS (default 10) from its kept corpus (fuzz/corpus/<target>; new inputs
# go to a scratch copy, so the kept corpus changes only when someone merges on purpose).
# A crash fails the run and leaves the input under fuzz/artifacts/<target>/.
# FUZZ_SANITIZER=none takes the stable path even where nightly is installed.
# Longer runs: FUZZ_SECONDS=600 fuzz/smoke.sh, or `cargo +nightly fuzz run <target>` in fuzz/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-10}"
targets=(h1_request h1_response chunked config tls_server tls_client tls_parts hpack h2_frames h2_conn ws_decoder ws_deflate_offer proxy_header)
if [ "${FUZZ_SANITIZER:-}" != none ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
    sanitizer=address
else
    fuzz=(cargo +stable fuzz)
    sanitizer=none
fi
echo "fuzz smoke: ${fuzz[*]} with sanitizer $sanitizer"
"${fuzz[@]}" build -O --sanitizer "$sanitizer" 2>&1 | tail -n 3
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    cp corpus/"$t"/* "$scratch/$t/"
    echo "fuzz smoke: $t for ${seconds}s"
    status=0
    # The binaries built above, run directly (`cargo fuzz run` would rebuild on a changed tree).
    mkdir -p "artifacts/$t"
    "target/$(rustc -vV | sed -n 's/^host: //p')/release/$t" "$scratch/$t" \
        -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len=8192 -print_final_stats=1 >"$scratch/$t.log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done)" "$scratch/$t.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$scratch/$t.log"
        echo "fuzz smoke: $t FAILED (exit $status); the input is under fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzz smoke: every target ran ${seconds}s without a crash"
