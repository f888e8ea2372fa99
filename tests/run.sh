#!/usr/bin/env bash
# The whole test suite: installs what the tests need (idempotent), then runs every crate's unit
# tests and the black-box suite against the real coreplex binary, then a short fuzz smoke of every
# parser (fuzz/smoke.sh, FUZZ_SECONDS each).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo test --workspace --all-targets
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash fuzz/smoke.sh
